"""`python -m memlint` runs the command line."""

import sys

from memlint.cli import main

sys.exit(main())
