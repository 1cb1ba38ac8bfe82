"""The demo site of liveprogress (named after the original example's project).

Run from a checkout, the app's code sits in ``src/``; putting it on the path
here lets the example's commands (``pip install -r requirements.txt``, then
``daphne proyecto.asgi:application``) work without installing the package.
"""

import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parent.parent / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))
