"""Shared helpers of the benchmark suite: statistics, Spark's listener-bus metrics, machine facts.

Nothing here imports the plugin: the same code runs in the runs without it.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from collections.abc import Sequence
from typing import Any

# Spark's listener-bus timers keep their samples in a Codahale ExponentiallyDecayingReservoir
# of 1028 values: below that many events the snapshot holds every event exactly.
RESERVOIR_SIZE = 1028
EXECUTION_LISTENER_BUS = "org.apache.spark.sql.util.ExecutionListenerBus"
# the plugin's compiled listener, on a queue of its own choosing (listener.BUS_QUEUES)
GATHERER_LISTENER = "definity.FactGatherer"


def summary(values: Sequence[float]) -> dict[str, float | None]:
    """min / median / max / n of a sample (None when empty)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {"n": len(vals), "min": min(vals), "median": statistics.median(vals),
            "max": max(vals)}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear interpolation; None when empty."""
    vals = sorted(float(v) for v in values)
    if not vals:
        return None
    if len(vals) == 1:
        return vals[0]
    pos = (len(vals) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(vals) - 1)
    return vals[lo] + (vals[hi] - vals[lo]) * (pos - lo)


def ratio(with_plugin: float | None, without: float | None) -> float | None:
    if with_plugin is None or not without:
        return None
    return with_plugin / without


# --------------------------------------------------------------------------- listener bus
def listener_bus(spark: Any) -> Any:
    return spark.sparkContext._jsc.sc().listenerBus()


def wait_bus_empty(spark: Any, timeout_ms: int = 120_000) -> bool:
    """Wait until Spark's listener bus delivered every event posted so far."""
    try:
        listener_bus(spark).waitUntilEmpty(timeout_ms)
        return True
    except Exception:  # py4j wraps Spark's TimeoutException
        return False


def _long_array(jarray: Any, jvm: Any) -> list[int]:
    # One round trip for the whole array instead of one per element.
    text = str(jvm.java.util.Arrays.toString(jarray)).strip("[]")
    return [int(x) for x in text.split(",") if x.strip()]


def bus_metrics(spark: Any,
                with_values: Sequence[str] = (EXECUTION_LISTENER_BUS, GATHERER_LISTENER)
                ) -> dict[str, Any]:
    """Read LiveListenerBus.metrics: per-listener and per-queue timers, drop counters.

    Timer values are nanoseconds. ``values`` (the reservoir snapshot) are returned for the
    listener classes named in ``with_values`` and for classes that look like py4j proxies
    (a Python listener registered on the bus).
    """
    jvm = spark.sparkContext._jvm
    registry = listener_bus(spark).metrics().metricRegistry()
    timers: dict[str, Any] = {}
    jtimers = registry.getTimers()
    for name in list(jtimers.keySet().toArray()):
        name = str(name)
        timer = jtimers.get(name)
        snap = timer.getSnapshot()
        entry: dict[str, Any] = {
            "count": int(timer.getCount()),
            "snapshot_size": int(snap.size()),
            "median_ns": float(snap.getMedian()),
            "p99_ns": float(snap.get99thPercentile()),
            "max_ns": float(snap.getMax()),
            "mean_ns": float(snap.getMean()),
        }
        cls = name.split("listenerProcessingTime.", 1)[-1]
        if cls in with_values or "Proxy" in cls or "py4j" in cls.lower():
            entry["values_ns"] = _long_array(snap.getValues(), jvm)
        timers[name] = entry
    counters: dict[str, int] = {}
    jcounters = registry.getCounters()
    for name in list(jcounters.keySet().toArray()):
        counters[str(name)] = int(jcounters.get(name).getCount())
    dropped = sum(v for k, v in counters.items() if k.endswith("numDroppedEvents"))
    return {"timers": timers, "counters": counters, "dropped_events": dropped}


def top_k_ms(values_ns: Sequence[int], k: int) -> list[float]:
    """The k largest samples in ms: the events that carried a query callback.

    The ExecutionListenerBus receives every event of the bus but only does work (calls the
    QueryExecutionListeners) on SparkListenerSQLExecutionEnd; the other events cost a few
    microseconds. With one execution per query and the reservoir holding every event, the k
    largest samples are the k query-end events.
    """
    return [v / 1e6 for v in sorted(values_ns, reverse=True)[:k]]


def execution_end_times(spark: Any) -> list[float | None]:
    """Completion times (epoch s, JVM clock = this machine's clock) of the SQL executions.

    From Spark's own SQL status store (what the SQL tab of the UI shows), in execution id
    order: the moment the JVM finished each query, before py4j returned to Python. Read
    after the listener bus is drained (the store learns an execution's end from it); an
    execution still without one is None, so that the list stays aligned with the queries.
    """
    wait_bus_empty(spark)
    store = spark._jsparkSession.sharedState().statusStore()
    seq = store.executionsList()
    rows = []
    for i in range(int(seq.size())):
        data = seq.apply(i)
        completion = data.completionTime()
        end = int(completion.get().getTime()) / 1000.0 if completion.isDefined() else None
        rows.append((int(data.executionId()), end))
    return [t for _, t in sorted(rows)]


def prepared_once(flag: str, name: str, key: object, marker: str = "") -> str | None:
    """A file or directory made once per machine by ``child.py FLAG PATH`` (a fresh
    interpreter and JVM) and kept in the temp dir under ``name`` plus a hash of ``key``
    (what it depends on): its path, or None when it could not be made. ``marker``: the
    file inside PATH whose presence says it is complete (default: PATH itself)."""
    import hashlib
    import shutil
    import sys
    import tempfile

    digest = hashlib.sha1(repr(key).encode()).hexdigest()[:10]
    path = os.path.join(tempfile.gettempdir(), name.format(digest))
    done = os.path.join(path, marker) if marker else path
    if not os.path.exists(done):
        shutil.rmtree(path, ignore_errors=True)
        child = os.path.join(os.path.dirname(os.path.abspath(__file__)), "child.py")
        subprocess.run([sys.executable, child, flag, path],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path if os.path.exists(done) else None


def cpu_seconds(spark: Any) -> tuple[float, float]:
    """CPU seconds (user + system) so far of the driver's JVM (every thread) and of the
    driver's Python: this process (every thread: the caller's and the plugin's) plus the
    plugin's delivery helper processes that are running."""
    import psutil

    jvm = psutil.Process(spark.sparkContext._gateway.proc.pid).cpu_times()
    me = psutil.Process()
    own = me.cpu_times()
    python = float(own.user + own.system)
    for child in me.children():
        try:
            if HELPER_MARK in " ".join(child.cmdline()):
                times = child.cpu_times()
                python += float(times.user + times.system)
        except psutil.Error:  # exited in between
            pass
    return float(jvm.user + jvm.system), python


def jvm_thread_cpu_ms(spark: Any) -> dict[str, float]:
    """CPU milliseconds so far of the driver JVM's Java threads, summed by thread name with
    digits folded (``Executor task launch worker for task N``, ``Thread-N``), read from the
    JVM's ``ThreadMXBean``. GC and JIT threads are not Java threads and are not in it."""
    import re

    mx = spark._jvm.java.lang.management.ManagementFactory.getThreadMXBean()
    out: dict[str, float] = {}
    ids = mx.getAllThreadIds()
    for tid, info in zip(ids, mx.getThreadInfo(ids)):
        cpu_ns = mx.getThreadCpuTime(tid)
        if info is not None and cpu_ns > 0:
            name = re.sub(r"\d+", "N", str(info.getThreadName()))
            out[name] = out.get(name, 0.0) + cpu_ns / 1e6
    return out


# Groups of the driver JVM's threads, by the start of their OS name (``comm``, 15
# characters): what each kind of work costs, JIT and GC threads included.
JVM_THREAD_GROUPS = (
    ("jit", ("C1 CompilerThre", "C2 CompilerThre")),
    ("gc", ("GC Thread", "G1 ", "VM Thread", "VM Periodic")),
    ("py4j", ("Thread-",)),  # py4j's connection threads (and other unnamed threads)
    ("listener_bus", ("spark-listener-",)),
    ("tasks", ("Executor task l",)),
    ("scheduler", ("dag-scheduler-e",)),
)


def _thread_cpu_ns(pid: int, names: bool = False) -> list[tuple[str, int]]:
    """(OS thread name or "", nanoseconds on a CPU so far) of each running thread of a
    process, from ``/proc/PID/task/TID/schedstat`` (psutil counts 10 ms clock ticks).
    Linux only; empty for a process that is gone; a thread that ended is not in it."""
    root = f"/proc/{pid}/task"
    try:
        tids = os.listdir(root)
    except OSError:
        return []
    out = []
    for tid in tids:
        try:
            name = ""
            if names:
                with open(f"{root}/{tid}/comm") as f:
                    name = f.read().strip()
            with open(f"{root}/{tid}/schedstat") as f:
                out.append((name, int(f.read().split()[0])))
        except (OSError, ValueError, IndexError):  # ended meanwhile
            continue
    return out


def jvm_cpu_by_group_ms(pid: int) -> dict[str, float]:
    """CPU milliseconds so far of a JVM's threads (every thread of the process: JIT and
    GC too), summed by ``JVM_THREAD_GROUPS`` ("other": the rest)."""
    out = {name: 0.0 for name, _ in JVM_THREAD_GROUPS}
    out["other"] = 0.0
    for name, ns in _thread_cpu_ns(pid, names=True):
        group = next((g for g, starts in JVM_THREAD_GROUPS
                      if name.startswith(starts)), "other")
        out[group] += ns / 1e6
    return out


def threads_cpu_ms(pid: int) -> float:
    """CPU milliseconds so far of a process's running threads, to the nanosecond."""
    return sum(ns for _, ns in _thread_cpu_ns(pid)) / 1e6


def helper_cpu_s() -> float:
    """CPU seconds so far of the plugin's delivery helper process (0 without one)."""
    helper = helper_process()
    if helper is None:
        return 0.0
    try:
        times = helper.cpu_times()
    except Exception:  # noqa: BLE001 - exited
        return 0.0
    return float(times.user + times.system)


# How the plugin's delivery helper process shows in its command line.
HELPER_MARK = "definity_spark.helper.child"


def helper_process() -> Any:
    """The plugin's delivery helper process (a psutil.Process), or None."""
    import psutil

    for child in psutil.Process().children():
        try:
            if HELPER_MARK in " ".join(child.cmdline()):
                return child
        except psutil.Error:
            pass
    return None


def rss_mb(proc: Any) -> float | None:
    """A process's resident memory in MB (None without one)."""
    if proc is None:
        return None
    try:
        return float(proc.memory_info().rss) / 1024 / 1024
    except Exception:  # noqa: BLE001 - exited
        return None


def execution_count(spark: Any) -> int:
    return int(spark._jsparkSession.sharedState().statusStore().executionsCount())


# --------------------------------------------------------------------------- machine
def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal"):
                    info["mem_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        info["java"] = (out.stderr or out.stdout).splitlines()[0].strip()
    except Exception:
        info["java"] = "?"
    try:
        import pyspark

        info["pyspark"] = pyspark.__version__
    except Exception:
        info["pyspark"] = "?"
    return info


def loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None
