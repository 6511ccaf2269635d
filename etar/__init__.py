"""etar."""
