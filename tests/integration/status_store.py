"""Spark's own account of SQL executions, read from its status stores through py4j: what
``test_it_metrics.py`` compares the plugin's metrics with.

Worked out from the finest records the stores keep, not from the per-stage sums the
plugin reads, so that an aggregation mistake in the plugin shows: every task attempt of
the app status store (``AppStatusStore.taskList``: its index, status, duration and task
metrics) and the SQL status store's plan graph with its metric values
(``SQLAppStatusStore.planGraph`` / ``executionMetrics``). The same rules as
docs/metrics.md, written out again here in Python.

Also imported by the failed-task application that ``test_it_metrics.py`` runs in a
child process (its own ``local[2,2]`` JVM): plain functions of a SparkSession.
"""

from __future__ import annotations

import math
import re
from typing import Any

SKEW_MIN_TASKS = 5  # docs/metrics.md: fewer successful tasks, no skew for the stage


def sql_store(spark: Any) -> Any:
    return spark._jsparkSession.sharedState().statusStore()


def app_store(spark: Any) -> Any:
    return spark.sparkContext._jsc.sc().statusStore()


def _seq(seq: Any) -> list[Any]:
    return [seq.apply(i) for i in range(seq.size())]


def _option(opt: Any) -> Any:
    return opt.get() if opt.isDefined() else None


def last_execution_id(spark: Any) -> int:
    """The newest SQL execution id of the SQL status store (-1: none yet)."""
    store = sql_store(spark)
    count = int(store.executionsCount())
    if count == 0:
        return -1
    return int(store.executionsList(count - 1, 1).apply(0).executionId())


def executions_after(spark: Any, last: int) -> list[dict[str, Any]]:
    """The SQL executions newer than ``last``: id, root id, description, in id order."""
    store = sql_store(spark)
    found: list[dict[str, Any]] = []
    misses, eid = 0, last + 1
    while misses < 3:
        x = _option(store.execution(eid))
        if x is None:
            misses += 1
        else:
            misses = 0
            assert x.completionTime().isDefined(), f"execution {eid} not complete"
            found.append({"id": eid, "root": int(x.rootExecutionId()),
                          "description": str(x.description())})
        eid += 1
    return found


# -- how executions ran: the "run" metrics, from every task attempt --------------------------

def _task_record(t: Any) -> dict[str, Any]:
    m = _option(t.taskMetrics())
    rec: dict[str, Any] = {"index": int(t.index()), "status": str(t.status()),
                           "duration": _option(t.duration())}
    if m is not None:
        rd, wr = m.shuffleReadMetrics(), m.shuffleWriteMetrics()
        rec.update(
            run=int(m.executorRunTime()), cpu_ns=int(m.executorCpuTime()),
            gc=int(m.jvmGcTime()), peak=int(m.peakExecutionMemory()),
            mem_spill=int(m.memoryBytesSpilled()), disk_spill=int(m.diskBytesSpilled()),
            sr_bytes=int(rd.localBytesRead()) + int(rd.remoteBytesRead()),
            sr_records=int(rd.recordsRead()),
            sw_bytes=int(wr.bytesWritten()), sw_records=int(wr.recordsWritten()))
    return rec


def stage_records(spark: Any, execution_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Stage id -> its last attempt's status and task attempts, for every stage of every
    job of the executions (by the jobs' own stage lists)."""
    sql, app = sql_store(spark), app_store(spark)
    stage_ids: set[int] = set()
    for eid in execution_ids:
        jobs = sql.execution(eid).get().jobs()
        it = jobs.keysIterator()
        while it.hasNext():
            stage_ids.update(int(s) for s in _seq(app.job(int(it.next())).stageIds()))
    out: dict[int, dict[str, Any]] = {}
    for sid in sorted(stage_ids):
        last = app.lastStageAttempt(sid)
        tasks = [_task_record(t) for t in _seq(app.taskList(sid, int(last.attemptId()),
                                                            2 ** 31 - 1))]
        out[sid] = {"status": str(last.status()), "tasks": tasks}
    return out


def expected_run(spark: Any, execution_ids: list[int]) -> dict[str, float]:
    """The run metrics of docs/metrics.md for these executions together, from their task
    attempts: what the plugin must send for the transformation they belong to."""
    sql = sql_store(spark)
    jobs = sum(int(sql.execution(eid).get().jobs().size()) for eid in execution_ids)
    stages = stage_records(spark, execution_ids)
    sums = dict.fromkeys(("run", "cpu_ns", "gc", "mem_spill", "disk_spill", "sr_bytes",
                          "sr_records", "sw_bytes", "sw_records"), 0)
    ran = tasks = failed = peak = 0
    skew: tuple[float, int, int] | None = None
    for sid, stage in stages.items():
        if stage["status"] == "SKIPPED":
            continue
        ran += 1
        attempts = stage["tasks"]
        tasks += len({t["index"] for t in attempts})
        failed += sum(1 for t in attempts if t["status"] == "FAILED")
        for t in attempts:
            for key in sums:
                sums[key] += t.get(key, 0)
        ok = [t for t in attempts if t["status"] == "SUCCESS" and "run" in t]
        peak = max([peak] + [t["peak"] for t in ok])
        if len(ok) >= SKEW_MIN_TASKS:
            # Spark's task summary: the quantile q is the min(q * n, n - 1)-th value
            durations = sorted(int(t["duration"]) for t in ok)
            median = durations[min(int(0.5 * len(ok)), len(ok) - 1)]
            ratio = durations[-1] / median if median > 0 else 0.0
            if median > 0 and (skew is None or ratio > skew[0]):
                skew = (ratio, sid, len(ok))
    out: dict[str, float] = {
        "jobs": jobs, "stages": ran, "tasks": tasks, "failed_tasks": failed,
        "executor_run_time_ms": sums["run"], "executor_cpu_time_ms": sums["cpu_ns"] // 10**6,
        "jvm_gc_time_ms": sums["gc"], "peak_execution_memory_bytes": peak,
        "memory_spill_bytes": sums["mem_spill"], "disk_spill_bytes": sums["disk_spill"],
        "shuffle_read_bytes": sums["sr_bytes"], "shuffle_read_records": sums["sr_records"],
        "shuffle_write_bytes": sums["sw_bytes"], "shuffle_write_records": sums["sw_records"],
    }
    if skew is not None:
        out["skew_ratio"] = math.floor(skew[0] * 1000 + 0.5) / 1000
        out["skew_stage_id"] = skew[1]
        out["skew_stage_tasks"] = skew[2]
    return out


def stage_ratios(spark: Any, execution_ids: list[int]) -> dict[int, float]:
    """Each stage's longest over median successful task duration (stages with enough
    tasks), rounded as the plugin sends it: to tell ties apart from a wrong stage."""
    out = {}
    for sid, stage in stage_records(spark, execution_ids).items():
        ok = sorted(int(t["duration"]) for t in stage["tasks"]
                    if t["status"] == "SUCCESS" and "run" in t)
        if stage["status"] != "SKIPPED" and len(ok) >= SKEW_MIN_TASKS:
            median = ok[min(len(ok) // 2, len(ok) - 1)]
            if median > 0:
                out[sid] = math.floor(ok[-1] / median * 1000 + 0.5) / 1000
    return out


# -- what the scans read: the SQL status store's plan graph ----------------------------------

_SIZE_UNITS = {"B": 1, "KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30}


def metric_value(text: str, metric_type: str) -> tuple[float, float]:
    """(value, how far off it may be) of a metric as the SQL status store keeps it: a sum
    is an exact integer with grouping commas; a size is ``12.3 KiB`` (rounded to 0.1)."""
    text = text.strip().split("\n")[-1] if metric_type == "size" else text.strip()
    if metric_type == "size":
        m = re.fullmatch(r"([\d.]+) (B|KiB|MiB|GiB)", text)
        assert m, f"a size metric of another shape: {text!r}"
        unit = _SIZE_UNITS[m.group(2)]
        return float(m.group(1)) * unit, 0.0 if unit == 1 else 0.05 * unit
    return float(text.replace(",", "")), 0.0


def scan_nodes(spark: Any, execution_ids: list[int]) -> list[dict[str, Any]]:
    """Every scan node of the executions' plan graphs (as Spark's UI draws the final,
    adaptive plan): its name, description and metrics by name -> (value, tolerance)."""
    store = sql_store(spark)
    nodes = []
    for eid in execution_ids:
        values: dict[int, str] = {}
        it = store.executionMetrics(eid).iterator()
        while it.hasNext():
            pair = it.next()
            values[int(pair._1())] = str(pair._2())
        for node in _seq(store.planGraph(eid).allNodes()):
            name = str(node.name())
            if not name.startswith(("Scan ", "BatchScan ")):  # V1 / V2 scans
                continue
            metrics = {}
            for m in _seq(node.metrics()):
                text = values.get(int(m.accumulatorId()))
                if text is not None and str(m.name()) in _WANTED:
                    metrics[str(m.name())] = metric_value(text, str(m.metricType()))
            nodes.append({"execution": eid, "name": name, "desc": str(node.desc()),
                          "metrics": metrics})
    return nodes


# the display names of the scan metrics the plugin sends (docs/metrics.md): Spark's file
# scans', then Iceberg's custom metrics
SCAN_METRIC_NAMES = {"read_rows": ("number of output rows",),
                     "read_files": ("number of files read", "number of result data files"),
                     "read_bytes": ("size of files read", "total data file size (bytes)"),
                     "read_partitions": ("number of partitions read",)}


_WANTED = {name for names in SCAN_METRIC_NAMES.values() for name in names}


def scans_total(nodes: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """The plugin's per-input metrics summed over these scan nodes: metric_type -> (value,
    tolerance); a metric no node has is absent."""
    out: dict[str, tuple[float, float]] = {}
    for node in nodes:
        for ours, names in SCAN_METRIC_NAMES.items():
            for theirs in names:
                if theirs in node["metrics"]:
                    value, tol = node["metrics"][theirs]
                    have = out.get(ours, (0.0, 0.0))
                    out[ours] = (have[0] + value, have[1] + tol)
    return out


# -- the application: executors ------------------------------------------------------------

def executors(spark: Any) -> list[dict[str, Any]]:
    """Every executor the app status store knows (the driver too, which runs the tasks in
    local mode): id, cores, added/removed (epoch ms), total task time (ms)."""
    out = []
    for e in _seq(app_store(spark).executorList(False)):
        removed = _option(e.removeTime())
        out.append({"id": str(e.id()), "cores": int(e.totalCores()),
                    "added_ms": int(e.addTime().getTime()),
                    "removed_ms": None if removed is None else int(removed.getTime()),
                    "task_ms": int(e.totalDuration())})
    return out

