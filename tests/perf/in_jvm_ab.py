"""With / without the plugin in one warm JVM: alternating batches, CPU per thread.

    python tests/perf/in_jvm_ab.py small [--rounds 6 --batch 20]
    python tests/perf/in_jvm_ab.py ctas  [--rounds 8]

The suite's method (``run.py``) is a fresh JVM per run; this diagnostic removes the
JVM-to-JVM noise: the plugin is activated and deactivated in turn in one warm session.
``small``: batches of small parquet overwrites against a collector in its own process;
prints the median per-write time and batch sums a side, their ratio, and the CPU per
write of the JVM, of this Python process by thread, and of the collector (psutil).
``ctas``: 40- and 70-way join CTAS statements, the statement's wall time a side.
Prints only, writes nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # tests/: collector_util

import child  # noqa: E402
import common  # noqa: E402
import workloads  # noqa: E402
from collector_util import CollectorProcess  # noqa: E402


def _cpu(proc: Any) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def small(args: argparse.Namespace) -> None:
    import psutil

    import definity_spark

    workdir = tempfile.mkdtemp(prefix="perf-ab-")
    collector = CollectorProcess(os.path.join(workdir, "c.db"))  # in its own process
    try:
        url = collector.url
        spark = child.build_session(workdir, False)
        me = psutil.Process()
        jvm = next(c for c in me.children(recursive=True) if "java" in c.name())
        col = psutil.Process(collector.proc.pid)
        path = os.path.join(workdir, "out")

        def batch(plugin: bool) -> tuple[float, float, dict[str, float]]:
            n = args.batch
            helpers = [c for c in me.children() if plugin and c.pid != jvm.pid
                       and common.HELPER_MARK in " ".join(c.cmdline())]
            helper0 = sum(_cpu(h) for h in helpers)
            before = (_cpu(jvm), _cpu(col))
            threads0 = {t.id: t.user_time + t.system_time for t in me.threads()}
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                spark.range(1000).write.mode("overwrite").parquet(path)
                times.append(time.perf_counter() - t0)
            names = {t.native_id: t.name for t in threading.enumerate()}
            cpu = {"jvm": (_cpu(jvm) - before[0]) * 1000 / n,
                   "collector": (_cpu(col) - before[1]) * 1000 / n}
            if helpers:  # the delivery helper process
                cpu["helper"] = (sum(_cpu(h) for h in helpers) - helper0) * 1000 / n
            for t in me.threads():
                spent = (t.user_time + t.system_time - threads0.get(t.id, 0.0)) * 1000 / n
                if spent >= 0.05:
                    name = names.get(t.id, "other")
                    cpu[f"py:{name}"] = cpu.get(f"py:{name}", 0.0) + spent
            return statistics.median(times) * 1000, sum(times), cpu

        for _ in range(10):
            spark.range(1000).write.mode("overwrite").parquet(path)
        sides: dict[str, list[Any]] = {"without": [], "with": []}
        for rnd in range(args.rounds):
            sides["without"].append(batch(False))
            handle = definity_spark.activate(spark, server_url=url,
                                             pipeline_name="ab", task_name=f"round{rnd}")
            handle.flush(60)  # the delivery helper is ready
            sides["with"].append(batch(True))
            handle.flush(60)
            definity_spark.deactivate(spark, timeout=60)
        for side, rows in sides.items():
            rows = rows[1:]  # the first round warms up
            cpu: dict[str, list[float]] = {}
            for _, _, c in rows:
                for k, v in c.items():
                    cpu.setdefault(k, []).append(v)
            print(f"{side:8s} median per write {statistics.median(r[0] for r in rows):.1f} ms;"
                  f" batch sums {[round(r[1], 2) for r in rows]}")
            print("         CPU ms per write (median of batches): " + ", ".join(
                f"{k} {statistics.median(v):.1f}" for k, v in sorted(cpu.items())))
        ratio = (statistics.median(r[1] for r in sides["with"][1:])
                 / statistics.median(r[1] for r in sides["without"][1:]))
        print(f"ratio of median batch sums (with / without): {ratio:.3f}")
        spark.stop()
    finally:
        collector.kill()


def ctas(args: argparse.Namespace) -> None:
    import definity_spark

    workdir = tempfile.mkdtemp(prefix="perf-ab-")
    spark = child.build_session(workdir, True)
    workloads.create_join_tables(spark, 70)
    spark.sql("CREATE DATABASE IF NOT EXISTS out")
    for i in range(3):
        spark.sql(workloads.join_ctas(3, f"out.warm{i}"))
    walls: dict[str, list[tuple[int, float]]] = {"without": [], "with": []}
    for rnd in range(args.rounds):
        plugin = rnd % 2 == 1
        handle = None
        if plugin:
            handle = definity_spark.activate(
                spark, events_file=os.path.join(workdir, f"events{rnd}.jsonl"))
        for size in (40, 70):
            t0 = time.perf_counter()
            spark.sql(workloads.join_ctas(size, f"out.c{size}_{rnd}"))
            walls["with" if plugin else "without"].append(
                (size, (time.perf_counter() - t0) * 1000))
            if handle is not None:
                handle.flush(60)
        if handle is not None:
            definity_spark.deactivate(spark, timeout=60)
    for side, rows in walls.items():
        for size in (40, 70):
            print(f"{side:8s} {size}-way CTAS wall ms: "
                  + " / ".join(f"{ms:.0f}" for s, ms in rows if s == size))
    spark.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["small", "ctas"])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    if args.what == "small":
        args.rounds = args.rounds or 6
        small(args)
    else:
        args.rounds = args.rounds or 8
        ctas(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
