"""What Spark's ``TreeNode.toJSON`` costs in a fresh JVM, against the gatherer's PlanJson.

    python tests/perf/cold_json.py [--size 20 --repeat 3]

Builds the analyzed plan of an n-way join over catalog tables (the plan_sweep workload's
query, not run) after three small warm-up CTAS without the plugin, then times, through
py4j (TCP_NODELAY set, as the plugin does), the gatherer's ``json`` (PlanJson: the same
JSON value), Spark's ``toJSON`` of the whole plan, and ``toJSON`` of its leaves alone (one
call per leaf). The first ``toJSON`` of the JVM pays Scala reflection's one-time start,
which PlanJson never needs. A diagnostic for the cold-extraction figure: prints only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import child  # noqa: E402
import workloads  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spark = child.build_session(tempfile.mkdtemp(prefix="perf-cold-json-"), True)
    workloads.create_join_tables(spark, args.size)
    spark.sql("CREATE DATABASE IF NOT EXISTS out")
    for i in range(3):
        spark.sql(workloads.join_ctas(3, f"out.warm{i}"))
    from definity_spark.spark.facts import make_gatherer
    from definity_spark.spark.listener import Py4jTuning

    Py4jTuning(spark.sparkContext._gateway).server_connections()
    gatherer = make_gatherer(spark.sparkContext._gateway, spark._jsparkSession, 100)[0]
    for rep in range(args.repeat):
        query = workloads.join_ctas(args.size, f"out.x{rep}").split(" AS ", 1)[1]
        plan = spark.sql(query)._jdf.queryExecution().analyzed()
        leaves = plan.collectLeaves()
        if gatherer is not None:
            t0 = time.perf_counter()
            fast = len(gatherer.json(plan))
            print(f"#{rep + 1}: PlanJson {(time.perf_counter() - t0) * 1000:.1f} ms "
                  f"({fast} chars)", flush=True)
        t0 = time.perf_counter()
        whole = len(plan.toJSON())
        whole_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        leaf_chars = sum(len(leaves.apply(i).toJSON()) for i in range(leaves.size()))
        leaves_ms = (time.perf_counter() - t0) * 1000
        print(f"#{rep + 1}: whole plan {whole_ms:.1f} ms ({whole} chars); its "
              f"{leaves.size()} leaves alone {leaves_ms:.1f} ms ({leaf_chars} chars, one "
              f"py4j call each)", flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
