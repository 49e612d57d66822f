"""What the plugin costs per Spark task (issue 25): the listener-bus queue it shares with
Spark, and Python.

    python tests/perf/task_events.py [--tasks 2000,100000] [--py-tasks 2,2000]
                                     [--repeats 5] [--results results/task_events.json]

Two fresh driver JVMs (``local[2]``, UI off), one after the other: one without the plugin,
one with it (``activate`` on the session, reporting to ``sink.py`` on loopback). In each:

* the task-event jobs (``--tasks``): one stage of N tasks each
  (``spark.range(0, N, 1, N)`` written to Spark's ``noop`` format). For the queue the
  gatherer listens on (``executorManagement``, else ``appStatus``) and for ``appStatus``:
  events processed (the queue timer's count), the queue thread's CPU (``ThreadMXBean``,
  to the nanosecond) per event, Spark's timer (``queue.<name>.listenerProcessingTime``: a
  reservoir of ~1,028 samples biased to the last minutes, mean / p99 in microseconds), the
  gatherer's own timer, and every queue's ``numDroppedEvents``;
* the Python jobs (``--py-tasks``, alternating, ``--repeats`` each): the CPU of the
  driver's interpreter (its main thread, which runs the job's own py4j calls, and its
  other threads: the plugin's) and of the plugin's helper process, from the job's start
  to the end of the plugin's flush after it (the query read, the reports sent).

Prints a table (the numbers in docs/performance.md, "Per task") and writes the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402

QUEUES = ("executorManagement", "appStatus")


def _session(tmp: str) -> Any:
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master("local[2]").appName("perf-task-events")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.memory", "2g")  # the status store keeps 100,000 tasks
            .config("spark.sql.warehouse.dir", os.path.join(tmp, "wh"))
            .getOrCreate())


def _job(spark: Any, tasks: int, rows_per_task: int = 1) -> None:
    spark.range(0, tasks * rows_per_task, 1, tasks).write.format("noop").mode("overwrite").save()


def _thread_cpu_ns(spark: Any) -> dict[str, int]:
    """CPU nanoseconds so far of the listener bus's queue threads, by queue."""
    mx = spark._jvm.java.lang.management.ManagementFactory.getThreadMXBean()
    out: dict[str, int] = {}
    ids = mx.getAllThreadIds()
    for tid, info in zip(ids, mx.getThreadInfo(ids)):
        name = str(info.getThreadName()) if info is not None else ""
        if name.startswith("spark-listener-group-"):
            out[name[len("spark-listener-group-"):]] = int(mx.getThreadCpuTime(tid))
    return out


def _bus(spark: Any, gatherer_queue: str | None) -> dict[str, Any]:
    """Spark's listener-bus metrics: per queue ``queue.<name>.listenerProcessingTime``,
    per listener class ``listenerProcessingTime.<class>`` (the gatherer's is put under its
    queue), dropped events of every queue."""
    metrics = common.bus_metrics(spark, with_values=())
    out: dict[str, Any] = {"dropped": metrics["dropped_events"], "queues": {}}
    for name, timer in metrics["timers"].items():
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "queue" and parts[2] == "listenerProcessingTime":
            out["queues"].setdefault(parts[1], {"listeners": {}}).update(
                count=timer["count"], mean_us=timer["mean_ns"] / 1e3,
                median_us=timer["median_ns"] / 1e3, p99_us=timer["p99_ns"] / 1e3)
        elif parts[0] == "listenerProcessingTime" and parts[-1] == "FactGatherer" \
                and gatherer_queue:
            entry = out["queues"].setdefault(gatherer_queue, {"listeners": {}})
            entry["listeners"]["FactGatherer"] = {
                "count": timer["count"], "mean_us": timer["mean_ns"] / 1e3,
                "p99_us": timer["p99_ns"] / 1e3}
    return out


def _python_cpu_ns() -> tuple[int, int, int]:
    """(driver's main thread, the driver's other threads, the helper process) CPU ns."""
    main = threading.main_thread().native_id
    own = other = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, ValueError):
            continue
        if int(tid) == main:
            own += ns
        else:
            other += ns
    helper = common.helper_process()
    helper_ns = int(common.threads_cpu_ms(helper.pid) * 1e6) if helper is not None else 0
    return own, other, helper_ns


def child(args: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="perf-task-events-")
    spark = _session(tmp)
    spark.sparkContext.setLogLevel("ERROR")
    handle = None
    sink = None
    if args.plugin:
        import definity_spark

        sink = subprocess.Popen([sys.executable, os.path.join(HERE, "sink.py")],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{int(sink.stdout.readline())}"
        handle = definity_spark.activate(spark, server_url=url, token="perf",
                                         pipeline_name="perf", task_name="task_events",
                                         spool_dir=os.path.join(tmp, "spool"))
        assert handle is not None

    def settle() -> None:
        assert common.wait_bus_empty(spark)
        if handle is not None:
            assert handle.flush(timeout=600)

    for _ in range(2):  # warm the JVM and the plugin (the gatherer's first call)
        _job(spark, 200)
    settle()
    result: dict[str, Any] = {"plugin": bool(args.plugin), "jobs": []}
    queue = None
    if handle is not None:
        obs = list(handle._runtime.observers.values())[0]
        queue = obs.bus_queue
        result["listener"] = f"the {obs.listener} listener on the {queue} queue"
    for tasks in args.tasks:
        bus0, cpu0 = _bus(spark, queue), _thread_cpu_ns(spark)
        t0 = time.perf_counter()
        _job(spark, tasks)
        job_s = time.perf_counter() - t0
        assert common.wait_bus_empty(spark, 600_000)
        t1 = time.perf_counter()
        settle()
        flush_s = time.perf_counter() - t1
        bus1, cpu1 = _bus(spark, queue), _thread_cpu_ns(spark)
        job: dict[str, Any] = {"tasks": tasks, "job_s": job_s, "flush_after_s": flush_s,
                               "dropped": bus1["dropped"] - bus0["dropped"], "queues": {}}
        for queue in QUEUES:
            q0, q1 = bus0["queues"].get(queue, {}), bus1["queues"].get(queue, {})
            events = q1.get("count", 0) - q0.get("count", 0)
            cpu_ns = cpu1.get(queue, 0) - cpu0.get(queue, 0)
            job["queues"][queue] = {
                "events": events, "thread_cpu_ms": cpu_ns / 1e6,
                "cpu_per_event_us": cpu_ns / 1e3 / events if events else None,
                "timer_mean_us": q1.get("mean_us"), "timer_median_us": q1.get("median_us"),
                "timer_p99_us": q1.get("p99_us"),
                "listeners": {k: {"events": v["count"] - q0.get("listeners", {}).get(
                    k, {}).get("count", 0), "timer_mean_us": v["mean_us"],
                    "timer_p99_us": v["p99_us"]} for k, v in q1.get("listeners", {}).items()}}
        result["jobs"].append(job)
        print(json.dumps(job), file=sys.stderr, flush=True)
    py: dict[str, list[dict[str, float]]] = {str(n): [] for n in args.py_tasks}
    for _ in range(args.repeats):
        for tasks in args.py_tasks:
            c0 = _python_cpu_ns()
            _job(spark, tasks)
            settle()
            c1 = _python_cpu_ns()
            py[str(tasks)].append({"main_ms": (c1[0] - c0[0]) / 1e6,
                                   "plugin_threads_ms": (c1[1] - c0[1]) / 1e6,
                                   "helper_ms": (c1[2] - c0[2]) / 1e6})
    result["python"] = py
    if handle is not None:
        import definity_spark

        definity_spark.deactivate(spark, timeout=120)
    spark.stop()
    if sink is not None:
        sink.stdin.close()
        sink.wait(10)
    return result


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _side(res: dict[str, Any]) -> str:
    return "with" if res["plugin"] else "without"


def section(doc: dict[str, Any]) -> str:
    """The "Per task" section of docs/performance.md (report.py) from a results file."""
    results = doc["results"]
    software = doc.get("machine", {}).get("pyspark") or doc.get("pyspark") or "?"
    lines = [
        "## Per task: the listener-bus queue and Python (issue 25)",
        "",
        f"`tests/perf/task_events.py`, run {doc['started']} (pyspark {software}, local[2], "
        f"1-min load average {doc.get('loadavg_at_start')} at the start and "
        f"{doc.get('loadavg_at_end')} at the end, on 2 cores: a busy machine). One driver "
        "JVM without the plugin, then one with it; each job is one stage of N tasks "
        "(`spark.range(0, N, 1, N)` written to Spark's `noop` format). The plugin's gatherer "
        f"is {results[-1].get('listener', '?')}.",
        "",
        "Queues: events processed by the queue during the job (its timer's count), the "
        "queue thread's CPU per event (`ThreadMXBean`, the whole job), Spark's own timer of "
        "the queue (`queue.<name>.listenerProcessingTime`, a reservoir of ~1,028 samples "
        "biased to the latest) and of the gatherer on it, events dropped by any queue.",
        "",
        "| job | plugin | queue | events | queue thread CPU per event | Spark's timer "
        "mean / p99 | the gatherer's timer, mean | dropped | job wall | the plugin's flush "
        "after it |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for job in res["jobs"]:
            for queue, q in job["queues"].items():
                gatherer = q["listeners"].get("FactGatherer")
                per = q["cpu_per_event_us"]
                lines.append(
                    f"| {job['tasks']:,} tasks | {_side(res)} | {queue} | {q['events']:,} | "
                    + (f"{per:.1f} us" if per is not None else "-") + " | "
                    + (f"{q['timer_mean_us']:.1f} / {q['timer_p99_us']:.1f} us"
                       if q["timer_mean_us"] is not None else "-") + " | "
                    + (f"{gatherer['timer_mean_us']:.2f} us ({gatherer['events']:,} events)"
                       if gatherer else "-")
                    + f" | {job['dropped']} | {job['job_s']:.1f} s | "
                    f"{job['flush_after_s']:.2f} s |")
    repeats = max((len(rows) for res in results for rows in res["python"].values()), default=0)
    lines += [
        "",
        f"Python: CPU per job from its start to the end of the plugin's flush after it, "
        f"median of {repeats} (2-task and 2,000-task jobs alternating), of the driver's "
        "main thread (the job's own py4j calls; with the plugin also `handle.flush()`, which "
        "waits for the plugin to read and send), the driver's other threads (the plugin's, "
        "and py4j's) and the plugin's helper process (which reads the query and sends the "
        "reports).",
        "",
        "| job | plugin | driver main thread | driver's other threads | helper process |",
        "|---|---|---|---|---|"]
    for res in results:
        for tasks, rows in res["python"].items():
            lines.append(f"| {int(tasks):,} tasks | {_side(res)} "
                         f"| {_median(rows, 'main_ms'):.1f} ms | "
                         f"{_median(rows, 'plugin_threads_ms'):.1f} ms | "
                         f"{_median(rows, 'helper_ms'):.1f} ms |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="2000,100000")
    parser.add_argument("--py-tasks", default="2,2000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", default=os.path.join(HERE, "results", "task_events.json"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plugin", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.tasks = [int(x) for x in str(args.tasks).split(",") if x]
    args.py_tasks = [int(x) for x in str(args.py_tasks).split(",") if x]
    if args.child:
        with open(args.out, "w") as f:
            json.dump(child(args), f)
        return
    results = []
    started = time.time()
    load = common.loadavg()
    for plugin in (0, 1):
        out = tempfile.NamedTemporaryFile(prefix="task-events-", suffix=".json",
                                          delete=False).name
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--plugin", str(plugin),
               "--out", out, "--tasks", ",".join(map(str, args.tasks)),
               "--py-tasks", ",".join(map(str, args.py_tasks)), "--repeats", str(args.repeats)]
        subprocess.run(cmd, check=True, timeout=7200)
        with open(out) as f:
            results.append(json.load(f))
    import pyspark

    doc = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
           "pyspark": pyspark.__version__,
           "loadavg_at_start": load, "loadavg_at_end": common.loadavg(),
           "machine": common.machine(), "results": results}
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump(doc, f, indent=1)
    print(section(doc))
    print(f"\nload average: {load} at start, {doc['loadavg_at_end']} at end; "
          f"results in {args.results}")


if __name__ == "__main__":
    main()
