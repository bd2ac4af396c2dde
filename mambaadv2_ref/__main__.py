"""`python -m mambaadv2_ref ...`: the command line (see mambaadv2_ref.cli)."""

import sys

from mambaadv2_ref.cli import main

if __name__ == "__main__":
    sys.exit(main())
