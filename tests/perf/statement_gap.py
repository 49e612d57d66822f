"""Where a small write's extra time goes: the Python between two writes, or the write.

    python tests/perf/statement_gap.py [--octets 2] [--batch 40] [--warmup 300] [--control]
                                       [--events-file]

One JVM; small parquet overwrites (``spark.range(1000)``) in blocks of ``batch``, in
A B B A B A A B order after ``warmup`` writes (A without the plugin; B with it, activated
before the block and flushed and deactivated after it, untimed). Each write is timed in
two parts:

- *gap*: from the end of the previous write to the start of this one's action, that is
  ``spark.range(1000).write.mode("overwrite")``: a few short py4j calls, the application's
  own Python between two statements;
- *call*: the action, ``.parquet(path)``, during which the application's thread waits in
  the JVM.

The plugin's threads start their work the moment a query ends, which is when the
application's next statement runs: the gap shows what they cost the application's
thread (the interpreter lock, the cores), the call what they cost the JVM. ``--control``:
the plugin off in the B blocks too (the method's own noise). The collector runs in its
own process at nice 19, as in the suite. Prints medians a side and the per-octet ratios
of the summed times; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # tests/: collector_util

import child  # noqa: E402
import workloads  # noqa: E402
from collector_util import CollectorProcess  # noqa: E402

ORDER = workloads.SmallWritesAB.ORDER


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--octets", type=int, default=2)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--control", action="store_true")
    parser.add_argument("--events-file", action="store_true",
                        help="report to a local events file instead of the collector (no "
                             "collector process: the cost of the plugin alone)")
    args = parser.parse_args()

    import definity_spark

    workdir = tempfile.mkdtemp(prefix="perf-gap-")
    collector = CollectorProcess(os.path.join(workdir, "c.db"))
    try:
        os.setpriority(os.PRIO_PROCESS, collector.proc.pid, 19)
        spark = child.build_session(workdir, False)
        path = os.path.join(workdir, "out")

        def block(n: int) -> tuple[list[float], list[float]]:
            gaps: list[float] = []
            calls: list[float] = []
            end = time.perf_counter()
            for i in range(n):
                writer = spark.range(1000).write.mode("overwrite")
                t1 = time.perf_counter()
                writer.parquet(path)
                t2 = time.perf_counter()
                if i:  # the first write of a block follows the untimed pause
                    gaps.append((t1 - end) * 1000)
                calls.append((t2 - t1) * 1000)
                end = t2
            return gaps, calls

        block(args.warmup)
        sides: dict[str, tuple[list[float], list[float]]] = {"A": ([], []), "B": ([], [])}
        sums: list[tuple[str, float]] = []
        for n, side in enumerate(ORDER * args.octets):
            time.sleep(0.3)
            handle: Any = None
            if side == "B" and not args.control:
                target = ({"server_url": None,
                           "events_file": os.path.join(workdir, "events.jsonl")}
                          if args.events_file else {"server_url": collector.url})
                handle = definity_spark.activate(spark, pipeline_name="gap",
                                                 task_name=f"b{n}", **target)
                handle.flush(60)  # untimed: the delivery helper is ready
            gaps, calls = block(args.batch)
            if handle is not None:
                handle.flush(60)
                definity_spark.deactivate(spark, timeout=60)
            sides[side][0].extend(gaps)
            sides[side][1].extend(calls)
            sums.append((side, sum(gaps) + sum(calls)))
        med = statistics.median
        for side, (gaps, calls) in sides.items():
            label = "without" if side == "A" else ("without (control)" if args.control
                                                    else "with")
            print(f"{side} {label:18s} gap median {med(gaps):.2f} ms (mean "
                  f"{statistics.mean(gaps):.2f}) | call median {med(calls):.2f} ms (mean "
                  f"{statistics.mean(calls):.2f})")
        (ga, ca), (gb, cb) = sides["A"], sides["B"]
        octets = workloads.octet_ratios(sums)
        print(f"B - A: gap median {med(gb) - med(ga):+.2f} ms, call median "
              f"{med(cb) - med(ca):+.2f} ms; octet ratios of summed times "
              + " ".join(f"{r:.3f}" for r in octets))
        spark.stop()
    finally:
        collector.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
