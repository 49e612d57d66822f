"""The driver's Python memory that activating the plugin adds, with the delivery helper
process and without it.

    python tests/perf/activation_rss.py [--writes 20]

For each side (``spark.definity.internal.helperProcess`` true, then false), a fresh interpreter
and JVM (``local[1]``): 5 warm-up writes, then the driver's RSS; activation against a
server URL nobody listens on (one attempt per report, then the spool of a temporary
directory), ``--writes`` small parquet writes, a flush, and the RSS again. Prints the
growth a side; writes nothing outside a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = """
import os, sys, tempfile
import psutil
from pyspark.sql import SparkSession
import definity_spark
spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
         .getOrCreate())
work = tempfile.mkdtemp(prefix="perf-act-")
for _ in range(5):
    spark.range(10).write.mode("overwrite").parquet(work + "/x")
me = psutil.Process()
before = me.memory_info().rss
handle = definity_spark.activate(spark, server_url="http://127.0.0.1:9", server_attempts=1,
                                 spool_dir=work + "/spool")
for _ in range(int(sys.argv[1])):
    spark.range(10).write.mode("overwrite").parquet(work + "/x")
handle.flush(10)
print((me.memory_info().rss - before) / 1024 / 1024)
definity_spark.deactivate(spark, timeout=2)
spark.stop()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=20)
    args = parser.parse_args()
    for helper in ("true", "false"):
        env = dict(os.environ, DEFINITY_INTERNAL_HELPER_PROCESS=helper)
        with tempfile.TemporaryDirectory() as cwd:
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.writes)], env=env,
                                 cwd=cwd, capture_output=True, text=True, check=True)
        growth = float(out.stdout.strip().splitlines()[-1])
        print(f"helperProcess={helper}: the driver's RSS grew {growth:.1f} MB from "
              f"activation through {args.writes} writes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
