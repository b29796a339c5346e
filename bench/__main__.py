"""``python -m bench``: see ``bench.cli``."""

import sys

from tvr_convbench.bench.cli import main

sys.exit(main())
