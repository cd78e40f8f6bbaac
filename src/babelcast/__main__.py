"""`python -m babelcast`: the same entry point as the `babelcast` command."""
import sys

from babelcast.cli import main

if __name__ == "__main__":
    sys.exit(main())
