"""``python -m definity_spark.collector``: the ``definity-spark collector`` subcommand."""

import sys

from definity_spark.collector.cli import main

if __name__ == "__main__":
    sys.exit(main())
