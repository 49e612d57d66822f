"""Extraction cost against plan size, in one JVM: best-of-N time, py4j round trips, bytes.

    python tests/perf/extraction_profile.py [--repeat 5] [--sizes 1,5,10,20,40,70,100]

On a busy machine the worker's wall time is mostly waiting for a core; the minimum over
repetitions and the deterministic counts (py4j calls made by the extraction worker and
the characters of their replies) show the cost itself. With the plugin only; each CTAS
is followed by a flush so that its two executions are measured alone. The queries are
read in this process (``helper_process=False``), where the calls are counted. Writes
tests/perf/results/extraction_profile.json (read by report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import child  # noqa: E402
import common  # noqa: E402
import workloads  # noqa: E402

OUT = os.path.join(HERE, "results", "extraction_profile.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="1,5,10,20,40,70,100")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from py4j import java_gateway

    counting = threading.local()
    counts = {"calls": 0, "chars": 0}
    original_call = java_gateway.JavaMember.__call__

    def counted(self: Any, *a: Any) -> Any:
        result = original_call(self, *a)
        if getattr(counting, "on", False):
            counts["calls"] += 1
            if isinstance(result, str):
                counts["chars"] += len(result)
        return result

    java_gateway.JavaMember.__call__ = counted  # type: ignore[method-assign]
    from definity_spark.spark import worker as worker_mod

    original_handle = worker_mod.ExtractionWorker._handle

    def handle(self: Any, cb: Any) -> Any:
        counting.on = True
        try:
            return original_handle(self, cb)
        finally:
            counting.on = False

    worker_mod.ExtractionWorker._handle = handle  # type: ignore[method-assign]

    archive = child.cds_archive()  # as the suite's runs
    if archive:
        os.environ[child.CDS_ENV] = archive
    workdir = tempfile.mkdtemp(prefix="perf-extraction-")
    workloads.use_catalog_template(workloads.catalog_template(), workdir)
    spark = child.build_session(workdir, True)
    import definity_spark

    # read in this process (not the helper), where its py4j calls are counted; the
    # helper makes the same calls for the same plan (helper/extraction.py)
    h = definity_spark.activate(spark, events_file=os.path.join(workdir, "events.jsonl"),
                                helper_process=False)
    observer = list(h._runtime.observers.values())[0]
    workloads.create_join_tables(spark, min(max(sizes), workloads.JOIN_TABLES))
    spark.sql("CREATE DATABASE IF NOT EXISTS out")
    for i in range(3):  # warm-up: first-use costs are reported by the suite, not here
        spark.sql(workloads.join_ctas(3, f"out.warm{i}"))
    h.flush(120)
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "load_start": common.loadavg(), "repeat": args.repeat,
                           "sizes": {}}
    # round robin (every size once per repetition): the JIT warms up during the run, and
    # each size gets samples from early and late in it, so best-of-N compares like with like
    rows: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
    for rep in range(args.repeat):
        for size in sizes:
            mark = len(observer.extraction_ms)
            counts.update(calls=0, chars=0)
            spark.sql(workloads.join_ctas(size, f"out.p{size}_{rep}"))
            h.flush(120)
            samples = list(observer.extraction_ms)[mark:]
            rows[size].append({"extraction_ms": sum(samples), "executions": len(samples),
                               "py4j_calls": counts["calls"], "reply_chars": counts["chars"]})
    for size in sizes:
        out["sizes"][str(size)] = rows[size]
        best = min(r["extraction_ms"] for r in rows[size])
        print(f"[extraction] {size} relations: best {best:.1f} ms, "
              f"{rows[size][0]['py4j_calls']} py4j calls, {rows[size][0]['reply_chars']} chars",
              flush=True)
    out["load_end"] = common.loadavg()
    definity_spark.deactivate(spark, timeout=30)
    spark.stop()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as handle_out:
        json.dump(out, handle_out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
