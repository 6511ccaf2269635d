"""``python -m etar`` runs the CLI."""

from etar.cli import run

run()
