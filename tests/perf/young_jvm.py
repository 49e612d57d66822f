"""Where the CPU goes in a young JVM: 200 small writes right after a fresh JVM's start.

    python tests/perf/young_jvm.py [--pairs 3] [--writes 200]

Each run is a fresh interpreter and JVM (this script again, ``--run 0|1``), alternating
without / with the plugin (reporting to a collector in its own process). After 6 warm-up
writes it times ``--writes`` small parquet overwrites and reads, over them: the JIT's
compile time (``CompilationMXBean``), the JVM's CPU split into its Java threads
(``ThreadMXBean``, by name) and the rest (JIT compiler and GC threads), the driver's
Python and the plugin's helper. Prints one JSON line per run and the paired wall ratios.
A diagnostic: prints only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # tests/: collector_util


def one_run(plugin: bool, writes: int) -> dict:
    import child
    import common

    workdir = tempfile.mkdtemp(prefix="perf-young-")
    spark = child.build_session(workdir, False)
    handle = collector = None
    if plugin:
        from collector_util import CollectorProcess

        import definity_spark

        collector = CollectorProcess(os.path.join(workdir, "c.db"))
        handle = definity_spark.activate(spark, server_url=collector.url)
    try:
        path = os.path.join(workdir, "small")
        for _ in range(6):
            spark.range(1000).write.mode("overwrite").parquet(path)
        if handle is not None:
            handle.flush(30)
        compiler = spark._jvm.java.lang.management.ManagementFactory.getCompilationMXBean()
        c0, t0 = compiler.getTotalCompilationTime(), common.jvm_thread_cpu_ms(spark)
        p0, h0 = common.cpu_seconds(spark), common.helper_cpu_s()
        started = time.perf_counter()
        for _ in range(writes):
            spark.range(1000).write.mode("overwrite").parquet(path)
        wall = time.perf_counter() - started
        if handle is not None:
            handle.flush(30)
        c1, t1 = compiler.getTotalCompilationTime(), common.jvm_thread_cpu_ms(spark)
        p1, h1 = common.cpu_seconds(spark), common.helper_cpu_s()
    finally:
        if collector is not None:
            collector.kill()
    java_s = sum(v - t0.get(k, 0.0) for k, v in t1.items()) / 1000
    helper_s = h1 - h0
    return {"plugin": plugin, "wall_s": round(wall, 3), "jit_compile_s": (c1 - c0) / 1000,
            "jvm_cpu_s": round(p1[0] - p0[0], 2), "java_threads_s": round(java_s, 2),
            "jit_gc_threads_s": round(p1[0] - p0[0] - java_s, 2),
            "driver_py_s": round(p1[1] - p0[1] - helper_s, 2),
            "helper_s": round(helper_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--run", type=int, choices=(0, 1), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run is not None:
        print(json.dumps(one_run(bool(args.run), args.writes)), flush=True)
        return 0
    ratios = []
    for _ in range(args.pairs):
        pair = {}
        for plugin in (0, 1):
            out = subprocess.run([sys.executable, __file__, "--run", str(plugin),
                                  "--writes", str(args.writes)],
                                 capture_output=True, text=True, timeout=900).stdout
            line = next((x for x in out.splitlines() if x.startswith("{")), None)
            if line is None:
                print(f"run failed (plugin={plugin})")
                continue
            print(line, flush=True)
            pair[plugin] = json.loads(line)["wall_s"]
        if len(pair) == 2:
            ratios.append(pair[1] / pair[0])
    if ratios:
        print(f"paired wall ratios: {', '.join(f'{r:.3f}' for r in ratios)}; mean "
              f"{statistics.fmean(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
