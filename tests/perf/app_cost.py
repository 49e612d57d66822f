"""What a whole application pays for the plugin once: a one-write ``spark-submit``.

The suite's other figures toggle the plugin inside one running JVM, so what every
application pays once (activation, compiling or loading the gatherer, starting the
helper, the task's end and the last flush) is in none of them. Here each run is a whole
``spark-submit`` of a one-write application (``spark.range(10)`` written as parquet),
without the plugin and with it turned on by configuration only, reporting to a stand-in
server on loopback (``sink.py``), in alternating pairs (A B, B A, ...).

Wall: the ``spark-submit`` process from start to exit. CPU: every process of the run
(launcher JVM, driver JVM, driver Python, the plugin's helper), from a cgroup-v1
``cpuacct`` group made for the run (root), else the children's rusage (which misses a
helper that outlives its parent).

    python tests/perf/app_cost.py --pairs 8 [--results results/app_cost.json]
    python tests/perf/app_cost.py --pairs 8 --conf spark.definity.internal.helperProcess=false
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CGROUP = "/sys/fs/cgroup/cpuacct"

APP = """
import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
spark.range(10).write.mode("overwrite").parquet(sys.argv[1])
spark.stop()
"""


def _spark_submit() -> str:
    import pyspark

    return os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")


class _CpuGroup:
    """A cpuacct cgroup for one run (None where it cannot be made)."""

    def __init__(self, name: str) -> None:
        self.path: str | None = os.path.join(CGROUP, name)
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError:
            self.path = None

    def enter_in_child(self) -> None:
        if self.path is not None:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def seconds(self) -> float | None:
        if self.path is None:
            return None
        with open(os.path.join(self.path, "cpuacct.usage")) as f:
            return int(f.read()) / 1e9

    def remove(self) -> None:
        if self.path is not None:
            try:
                os.rmdir(self.path)
            except OSError:
                pass


def _run(plugin: bool, app: str, out: str, url: str, extra_conf: list[str],
         index: int) -> dict[str, Any]:
    cmd = [_spark_submit(), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
           "--conf", "spark.ui.showConsoleProgress=false"]
    if plugin:
        cmd += ["--conf", "spark.definity.enabled=true",
                "--conf", f"spark.definity.server={url}",
                "--conf", "spark.definity.token=app-cost-token"]
        for kv in extra_conf:
            cmd += ["--conf", kv]
    cmd += [app, out]
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    env.pop("DEFINITY_ENABLED", None)
    group = _CpuGroup(f"definity-app-cost-{os.getpid()}-{index}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          preexec_fn=group.enter_in_child, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(0.3)  # a helper still ending after its driver: its CPU is counted too
    cpu = group.seconds()
    group.remove()
    if cpu is None:
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"spark-submit failed ({proc.returncode}):\n"
                         + proc.stderr.decode(errors="replace")[-3000:])
    return {"plugin": plugin, "wall_s": wall, "cpu_s": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--conf", action="append", default=[],
                        help="extra spark.definity.* KEY=VALUE for the plugin's runs")
    parser.add_argument("--results", default=None, help="write the runs and summary here")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs a side first")
    args = parser.parse_args()

    sink = subprocess.Popen([sys.executable, os.path.join(HERE, "sink.py")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(sink.stdout.readline().strip())  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="definity-app-cost-") as tmp:
        app = os.path.join(tmp, "one_write.py")
        with open(app, "w") as f:
            f.write(APP)
        out = os.path.join(tmp, "out")
        for i in range(args.warmup):
            _run(False, app, out, url, args.conf, 1000 + i)
            _run(True, app, out, url, args.conf, 2000 + i)
        for i in range(args.pairs):
            order = (False, True) if i % 2 == 0 else (True, False)
            for plugin in order:
                r = _run(plugin, app, out, url, args.conf, i * 2 + int(plugin))
                r["pair"] = i
                runs.append(r)
                print(f"pair {i} {'B' if plugin else 'A'}: wall {r['wall_s']:.2f} s, "
                      f"cpu {r['cpu_s']:.2f} s", flush=True)
    sink.stdin.close()  # type: ignore[union-attr]
    sink.wait(5)

    def side(plugin: bool, key: str) -> list[float]:
        return [r[key] for r in runs if r["plugin"] is plugin]

    summary: dict[str, Any] = {"pairs": args.pairs, "conf": args.conf}
    for key in ("wall_s", "cpu_s"):
        a, b = side(False, key), side(True, key)
        diffs = [y - x for x, y in zip(a, b)]
        summary[key] = {
            "without_median": statistics.median(a), "with_median": statistics.median(b),
            "diff_median": statistics.median(diffs), "diff_mean": statistics.mean(diffs),
            "ratio_of_medians": statistics.median(b) / statistics.median(a),
        }
        print(f"{key}: without {statistics.median(a):.3f}, with {statistics.median(b):.3f}; "
              f"paired difference median {statistics.median(diffs):+.3f} "
              f"(mean {statistics.mean(diffs):+.3f}); ratio {summary[key]['ratio_of_medians']:.3f}")
    if args.results:
        with open(args.results, "w") as f:
            json.dump({"summary": summary, "runs": runs,
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
