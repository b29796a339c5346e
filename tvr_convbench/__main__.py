"""``python -m tvr_convbench``: the harness CLI (``tvr_convbench.bench.cli``)."""

import sys

from tvr_convbench.bench.cli import main

sys.exit(main())
