"""Shared by every test run, including nbval's notebook items (outside tests/).

Notebook kernels (nbval, papermill) run in notebooks/ and inherit this process's environment:
point them at this checkout and its stack, as the stack's own JupyterLab does.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("ETAR_PROJECT_DIR", str(ROOT))
os.environ.setdefault("ETAR_STATE_DIR", str(ROOT / ".etar"))
