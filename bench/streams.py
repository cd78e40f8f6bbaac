"""Multi-stream real-time benchmark (same as `babelcast bench streams`); see babelcast/bench/streams.py."""
import sys

from babelcast.bench.streams import main

if __name__ == "__main__":
    sys.exit(main())
