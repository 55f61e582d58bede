"""``python -m audioclf``: the same command line as ``audioclf``."""

import sys

from .cli import main

sys.exit(main())
