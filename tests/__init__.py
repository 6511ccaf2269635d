"""etar's tests; they run from the checkout, whose root is ``REPO_ROOT``."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
