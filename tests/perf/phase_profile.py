"""Where one CTAS's extraction time goes, phase by phase, in one JVM.

    python tests/perf/phase_profile.py [--sizes 1,2,5,10,20,40,20,20]

Runs a join CTAS per size (in the given order, so a size repeated shows the JIT warming
up) with the plugin, and prints for each the time of every reading phase
(``FactReader.begin`` when the callback arrives, ``FactReader.finish`` when the plan is
read; ``finish-light`` for an outer command read without its query) and the slowest py4j
calls of the statement. A diagnostic: prints only, writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import child  # noqa: E402
import workloads  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,2,5,10,20,40,20,20")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from py4j import java_gateway

    from definity_spark.spark import facts as facts_mod

    local = threading.local()
    calls: list[tuple[str, str, float]] = []
    phases: list[tuple[str, str, float]] = []
    original_call = java_gateway.JavaMember.__call__

    def timed_call(self: Any, *a: Any) -> Any:
        phase = getattr(local, "phase", None)
        if phase is None:
            return original_call(self, *a)
        t0 = time.perf_counter()
        try:
            return original_call(self, *a)
        finally:
            calls.append((phase, self.name, (time.perf_counter() - t0) * 1000))

    java_gateway.JavaMember.__call__ = timed_call  # type: ignore[method-assign]
    begin, finish = facts_mod.FactReader.begin, facts_mod.FactReader.finish

    def timed_begin(self: Any, *a: Any) -> Any:
        local.phase = "begin"
        t0 = time.perf_counter()
        try:
            reading = begin(self, *a)
        finally:
            local.phase = None
        phases.append(("begin", reading.root, (time.perf_counter() - t0) * 1000))
        return reading

    def timed_finish(self: Any, reading: Any, light: bool = False) -> None:
        local.phase = "finish"
        t0 = time.perf_counter()
        try:
            finish(self, reading, light)
        finally:
            local.phase = None
        phases.append(("finish-light" if light else "finish", reading.root,
                       (time.perf_counter() - t0) * 1000))

    facts_mod.FactReader.begin = timed_begin  # type: ignore[method-assign]
    facts_mod.FactReader.finish = timed_finish  # type: ignore[method-assign]

    workdir = tempfile.mkdtemp(prefix="perf-phases-")
    spark = child.build_session(workdir, True)
    import definity_spark

    handle = definity_spark.activate(spark, events_file=os.path.join(workdir, "events.jsonl"))
    workloads.create_join_tables(spark, min(max(sizes), workloads.JOIN_TABLES))
    spark.sql("CREATE DATABASE IF NOT EXISTS out")
    for i in range(3):
        spark.sql(workloads.join_ctas(3, f"out.warm{i}"))
    handle.flush(120)
    for n, size in enumerate(sizes):
        phases.clear()
        calls.clear()
        spark.sql(workloads.join_ctas(size, f"out.p{size}_{n}"))
        handle.flush(120)
        print(f"{size:3d} relations: " + ", ".join(
            f"{p} {root} {ms:.1f} ms" for p, root, ms in phases), flush=True)
        slow = sorted(calls, key=lambda c: -c[2])[:4]
        print("     slowest py4j calls: " + ", ".join(
            f"{p}:{name} {ms:.1f} ms" for p, name, ms in slow), flush=True)
    definity_spark.deactivate(spark, timeout=60)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
