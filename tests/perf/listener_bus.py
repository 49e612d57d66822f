"""Measure listener-bus time per query callback and the extraction time of a 20-way join.

    /opt/venvs/spark35/bin/python tests/perf/listener_bus.py [n_queries]

Listener-bus time: Spark's own timer of our listener on the bus records every event it
sees; the ``n`` largest samples are the ``n`` query-end events (the rest are no-op
filters). Ours is the compiled ``FactGatherer`` on a queue Spark runs anyway; ``--python``
takes the fallback, the py4j Python listener (``spark.definity.internal.jvmListener``
off), timed through Spark's ``ExecutionListenerBus``, whose own Python-side time is also
printed. The queries are read in this process (no helper).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sparkutil import RecordingSink, hive_session  # noqa: E402

from definity_spark.settings import defaults  # noqa: E402
from definity_spark.spark.observer import SessionObserver  # noqa: E402


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    python_listener = "--python" in sys.argv
    n = int(args[0]) if args else 100
    tmp = tempfile.mkdtemp(prefix="definity-perf-")
    spark = hive_session(tmp)
    sink = RecordingSink()
    obs = SessionObserver(spark, replace(defaults(), jvm_listener=not python_listener), sink)
    obs.start()
    for _ in range(n):
        spark.range(3).write.mode("overwrite").parquet(f"{tmp}/many")
    obs.drain(120)
    timers = spark.sparkContext._jsc.sc().listenerBus().metrics().metricRegistry().getTimers()
    for name in list(timers.keySet().toArray()):
        if "ExecutionListenerBus" in str(name) or str(name).endswith(".FactGatherer"):
            values = sorted(int(v) for v in timers.get(name).getSnapshot().getValues())
            top = values[-n:]
            print(f"listener-bus time per query callback ({obs.listener} listener"
                  f"{' on ' + obs.bus_queue if obs.bus_queue else ''}, "
                  f"{len(top)} largest samples): median {statistics.median(top) / 1e6:.3f} "
                  f"ms, p90 {top[int(len(top) * 0.9) - 1] / 1e6:.3f} ms")
    py = obs.py_listener.busy_ns_samples if obs.py_listener is not None else []
    if py:
        print(f"python side of the callback: median {statistics.median(py) / 1e6:.3f} ms")
    # 20-way join: extraction time on the worker (facts read + rules)
    base = spark.range(10).selectExpr("id", "cast(id as string) name")
    base.write.parquet(f"{tmp}/base")
    df = spark.read.parquet(f"{tmp}/base")
    for i in range(20):
        spark.range(5).selectExpr("id", f"id * {i} as v{i}").write.parquet(f"{tmp}/j{i}")
        df = df.join(spark.read.parquet(f"{tmp}/j{i}"), "id")
    obs.drain(120)
    before = len(obs.extraction_ms)
    df.write.mode("overwrite").parquet(f"{tmp}/join20")
    obs.drain(120)
    t = obs.extraction_ms[before:]
    w = sink.writes[-1]
    print(f"20-way join: {len(w.inputs)} inputs, extraction {t[-1]:.1f} ms "
          f"(facts read + rules, on the worker)")
    started = time.perf_counter()
    obs.stop(30)
    spark.stop()
    del started


if __name__ == "__main__":
    main()
