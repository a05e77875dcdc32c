"""``python -m rlm``: see :mod:`rlm.cli`."""

import sys

from rlm.cli import main

sys.exit(main())
