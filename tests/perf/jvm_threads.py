"""CPU per small write of each JVM thread, without and with the plugin, in one JVM.

    python tests/perf/jvm_threads.py [--writes 100 --rounds 2]

What the plugin makes the JVM do (py4j server threads answering its calls, the listener
bus thread running its listener, ...), read from the JVM's own ``ThreadMXBean``
(thread names with digits folded, e.g. ``Thread-N``). GC and JIT threads are not Java
threads and are not in these figures. Rounds alternate without / with after a warm-up;
the plugin reports to a collector in its own process. A diagnostic: prints only.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))  # tests/: collector_util

import child  # noqa: E402
import common  # noqa: E402
from collector_util import CollectorProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import definity_spark

    workdir = tempfile.mkdtemp(prefix="perf-jvm-threads-")
    collector = CollectorProcess(os.path.join(workdir, "c.db"))  # in its own process
    try:
        url = collector.url
        spark = child.build_session(workdir, False)
        path = os.path.join(workdir, "out")

        def write() -> None:
            spark.range(1000).write.mode("overwrite").parquet(path)

        for _ in range(30):
            write()
        totals: dict[bool, collections.Counter] = {False: collections.Counter(),
                                                   True: collections.Counter()}
        for rnd in range(args.rounds):
            for plugin in (False, True):
                handle = None
                if plugin:
                    handle = definity_spark.activate(spark, server_url=url, pipeline_name="perf",
                                                     task_name=f"jvm-threads-{rnd}")
                    for _ in range(5):  # the swap to the JVM listener, first-use costs
                        write()
                    handle.flush(60)
                before = common.jvm_thread_cpu_ms(spark)
                for _ in range(args.writes):
                    write()
                if handle is not None:
                    handle.flush(60)
                after = common.jvm_thread_cpu_ms(spark)
                if handle is not None:
                    definity_spark.deactivate(spark, timeout=60)
                for name, ms in after.items():
                    totals[plugin][name] += ms - before.get(name, 0.0)
        n = args.writes * args.rounds
        for plugin in (False, True):
            per = {k: v / n for k, v in totals[plugin].items()}
            print(f"{'with' if plugin else 'without':8s} JVM thread CPU per write "
                  f"{sum(per.values()):.2f} ms")
            for name, ms in sorted(per.items(), key=lambda kv: -kv[1])[:10]:
                print(f"         {name[:60]:60s} {ms:.2f}")
        spark.stop()
    finally:
        collector.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
