"""The workloads of the benchmark suite, each run in a fresh interpreter + JVM by child.py.

A workload is a ``setup(ctx)`` (untimed: tables, warm-up) and a ``run(ctx)`` that times its
own actions and writes figures into ``ctx.result``. The same code runs with and without
the plugin; ``ctx.plugin`` says which, and plugin-only figures (extraction time, flush)
are read through ``ctx.probe`` (extraction timings) and ``ctx.handle``.

Times: ``time.perf_counter`` for durations, ``time.time`` for the query-end stamps that are
compared with the collector's receipt time (same machine, same clock).
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from typing import Any, Callable

import common

TPCH_DIR = os.environ.get("DEFINITY_TPCH_DIR", "/work/shared/benchmarks/tpch")


class Ctx:
    """What a workload gets: the session, the plugin handle (or None), params, result."""

    def __init__(self, spark: Any, handle: Any, probe: Any, workdir: str,
                 params: dict[str, Any]) -> None:
        self.spark = spark
        self.handle = handle
        self.probe = probe
        self.workdir = workdir
        self.params = params
        self.result: dict[str, Any] = {}
        # with the plugin: activates it again, same settings (returns the new handle)
        self.activate: Callable[[], Any] | None = None

    @property
    def plugin(self) -> bool:
        return self.handle is not None

    def flush(self, timeout: float = 60.0) -> bool | None:
        """With the plugin: wait until every query so far was extracted and delivered."""
        if self.handle is None:
            return None
        return bool(self.handle.flush(timeout))


class Workload:
    name = "?"
    hive = False  # needs enableHiveSupport (TPC-H Hive tables)

    def setup(self, ctx: Ctx) -> None:
        pass

    def run(self, ctx: Ctx) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- small writes
class SmallWrites(Workload):
    """``n`` small parquet overwrites of ``spark.range(1000)`` to one path.

    Figures: ``wall_s`` (sum of the writes' times), per-write ``ends`` (epoch s, for the
    delivery latency), and the ExecutionListenerBus timer snapshot taken, bus drained, after
    the first ``k_listener`` writes (untimed) so that the reservoir still holds every event.
    """

    name = "small_writes"

    def setup(self, ctx: Ctx) -> None:
        warm = os.path.join(ctx.workdir, "warm")
        for _ in range(int(ctx.params.get("warmup", 10))):
            ctx.spark.range(1000).write.mode("overwrite").parquet(warm)
        ctx.flush()

    def run(self, ctx: Ctx) -> None:
        spark = ctx.spark
        n = int(ctx.params.get("n", 200))
        k = int(ctx.params.get("k_listener", 50))
        path = os.path.join(ctx.workdir, "small")
        durations: list[float] = []
        ends: list[float] = []
        # The bus's counts when the timed writes start, to count the events of k writes.
        before = common.bus_metrics(spark)
        cpu0 = common.cpu_seconds(spark)
        for i in range(n):
            t0 = time.perf_counter()
            spark.range(1000).write.mode("overwrite").parquet(path)
            durations.append(time.perf_counter() - t0)
            ends.append(time.time())
            if i + 1 == k:
                # Untimed: drain the bus and snapshot the timers (k writes' events in the
                # reservoir, exactly, as long as fewer than 1028 events were timed).
                common.wait_bus_empty(spark)
                ctx.result["bus_after_k"] = common.bus_metrics(spark)
                ctx.result["bus_before"] = before
                # every execution so far (warm-up included) carried one query callback
                ctx.result["executions_at_k"] = common.execution_count(spark)
        cpu1 = common.cpu_seconds(spark)
        ctx.result.update({
            "wall_s": sum(durations),
            # CPU of the timed loop (the untimed bus drain at k included): driver JVM and
            # driver Python process; the collector's is the runner's (cpu_runner_s)
            "cpu_jvm_s": cpu1[0] - cpu0[0],
            "cpu_py_s": cpu1[1] - cpu0[1],
            "query_ms": [d * 1000 for d in durations],
            "ends": ends,
            "k_listener": k,
        })
        if ctx.plugin:  # untimed: the JVM's end time of each timed write
            ctx.result["jvm_ends"] = common.execution_end_times(spark)[-n:]


# ----------------------------------------------------------------- small writes, A B in one JVM
def octet_ratios(blocks: list[tuple[str, float]]) -> list[float]:
    """Per octet of ``SmallWritesAB.ORDER`` blocks (side, time): sum of B / sum of A."""
    size = len(SmallWritesAB.ORDER)
    ratios = []
    for o in range(len(blocks) // size):
        octet = blocks[size * o: size * (o + 1)]
        ratios.append(sum(t for s, t in octet if s == "B")
                      / sum(t for s, t in octet if s == "A"))
    return ratios


class SmallWritesAB(SmallWrites):
    """The small writes again, both sides in one fresh JVM: blocks of ``batch`` writes in
    the order A B B A B A A B, ``octets`` times (A without the plugin, B with it:
    activated before the block, flushed and deactivated after). The JVM keeps getting
    faster for hundreds of writes, on a curve: the order cancels its straight part and
    its bend out of each octet (A B B A alone would favour the middle blocks). Run as a
    with-run (it needs the collector); the child's activation is the warm-up's.

    ``control``: an A/A run: the B blocks run without the plugin too (the method's own
    noise and bias).

    ``toggle``: how a block is with or without the plugin.

    - ``"activation"`` (default): as above; each B block starts a task and a helper process.
    - ``"session"``: the plugin stays activated on the session for the whole run, as in
      production, and the A blocks write through a second session of the same
      application (``spark.newSession()``), which the plugin does not observe (it is
      activated per session). Nothing starts or stops between blocks, so the blocks can be
      short, which cancels the JVM's drift better. A B block's time ends with its last
      write; the flush after it is untimed (``flush_ms``), so the plugin's work for that
      one write, done after it returns, falls outside: the blocks measure (batch - 1) /
      batch of the work the plugin does after its writes return.

    Figures: ``blocks`` ([side, seconds] in order; a B block's time includes the wait for
    its last write's delivery), ``octet_ratios`` (sum of B / sum of A per octet), and the
    CPU of the driver's Python process per write a side (``cpu_py_ms``). With the
    session toggle also ``block_cpu_ms``: each block's CPU by the JVM's thread groups
    (``common.JVM_THREAD_GROUPS``: JIT, GC, py4j, listener bus, ...), the driver's Python
    and the helper, from which the report takes the plugin's CPU a write (B - A).
    """

    name = "small_writes_ab"
    ORDER = "ABBABAAB"
    # ``mirror``: the octets' complement. A young JVM has events at about the same write
    # counts in every run (JIT compilations, their deoptimisations): with the order
    # mirrored in every other JVM, each block position is A in half of the JVMs and B in
    # the other half, so such events fall on both sides alike.
    MIRROR = "BAABABBA"

    def order(self, ctx: Ctx) -> str:
        return self.MIRROR if ctx.params.get("mirror") else self.ORDER

    # setup(): SmallWrites's warm-up

    def run(self, ctx: Ctx) -> None:
        import definity_spark

        spark = ctx.spark
        batch = int(ctx.params.get("batch", 20))
        octets = int(ctx.params.get("octets", 5))
        plugin_on_b = not ctx.params.get("control")
        by_session = ctx.params.get("toggle", "activation") == "session"
        settle = float(ctx.params.get("settle_s", 0.3))
        path = os.path.join(ctx.workdir, "small")
        per_write: list[list[float]] = []
        # toggle "session": the plugin's session (observed) and one it does not observe
        plain = spark.newSession() if by_session else spark

        def writes(session: Any = spark) -> float:
            times = []
            t0 = time.perf_counter()
            for _ in range(batch):
                t1 = time.perf_counter()
                session.range(1000).write.mode("overwrite").parquet(path)
                times.append(round((time.perf_counter() - t1) * 1000, 2))
            per_write.append(times)
            return time.perf_counter() - t0

        if by_session:
            self._by_session(ctx, spark, plain, writes, per_write, octets, batch,
                             plugin_on_b, settle)
            return
        definity_spark.deactivate(spark, timeout=60.0)
        writes()  # the without side's warm-up
        per_write.clear()
        blocks: list[tuple[str, float]] = []
        cpu: dict[str, float] = {"A": 0.0, "B": 0.0}
        for side in self.order(ctx) * octets:
            plugin = side == "B" and plugin_on_b
            if plugin:
                ctx.handle = ctx.activate()
                # Activation is untimed, and so is the start of the delivery helper process
                # that comes with it: once per application in real life, once per B block
                # here. The flush waits for the helper to be ready (the task's first report
                # delivered).
                ctx.handle.flush(60.0)
            # Every block, either side, starts after the same quiet pause, so that the
            # JVM's background work (JIT, GC) left by the previous block, or by the
            # untimed activation / deactivation around a B block, is not timed in it.
            time.sleep(settle)
            c0 = common.cpu_seconds(spark)[1]
            t0 = time.perf_counter()
            seconds = writes()
            if plugin:
                ctx.handle.flush(60.0)
                seconds = time.perf_counter() - t0
            cpu[side] += common.cpu_seconds(spark)[1] - c0
            if plugin:
                definity_spark.deactivate(spark, timeout=60.0)
            blocks.append((side, seconds))
        ctx.handle = ctx.activate()  # the child flushes and reads the plugin after run()
        self._result(ctx, blocks, per_write, cpu, octets, batch, plugin_on_b)

    def _by_session(self, ctx: Ctx, observed: Any, plain: Any, writes: Callable[..., float],
                    per_write: list[list[float]], octets: int, batch: int,
                    plugin_on_b: bool, settle: float) -> None:
        """toggle "session": the plugin activated throughout, on ``observed`` only."""
        writes(plain)  # the unobserved session's warm-up (the observed one had setup's)
        ctx.flush()
        per_write.clear()
        blocks: list[tuple[str, float]] = []
        cpu: dict[str, float] = {"A": 0.0, "B": 0.0}
        flush_ms: list[float] = []
        block_cpu: list[dict[str, float]] = []
        jvm_pid = observed.sparkContext._gateway.proc.pid
        for side in self.order(ctx) * octets:
            plugin = side == "B" and plugin_on_b and ctx.handle is not None
            time.sleep(settle)
            c0 = common.cpu_seconds(observed)[1]
            g0 = self._cpu_groups(jvm_pid)
            # without the plugin (the young run's control) B goes through the same session
            blocks.append((side, writes(observed if side == "B" and plugin_on_b
                                        else plain)))
            g1 = self._cpu_groups(jvm_pid)
            block_cpu.append({k: round(v - g0.get(k, 0.0), 2) for k, v in g1.items()})
            cpu[side] += common.cpu_seconds(observed)[1] - c0
            if plugin:  # untimed: the plugin's work for the block's last write
                t0 = time.perf_counter()
                ctx.flush()
                flush_ms.append((time.perf_counter() - t0) * 1000)
        self._result(ctx, blocks, per_write, cpu, octets, batch, plugin_on_b)
        ctx.result.update({"toggle": "session", "flush_ms": flush_ms,
                           "block_cpu_ms": block_cpu})

    @staticmethod
    def _cpu_groups(jvm_pid: int) -> dict[str, float]:
        """CPU ms so far, for one block's figures: the JVM's thread groups (JIT, GC,
        py4j, listener bus, ...), the driver's Python (this process) and the helper."""
        out = {f"jvm_{k}": v for k, v in common.jvm_cpu_by_group_ms(jvm_pid).items()}
        out["driver_py"] = common.threads_cpu_ms(os.getpid())
        helper = common.helper_process()
        out["helper"] = common.threads_cpu_ms(helper.pid) if helper is not None else 0.0
        return out

    def _result(self, ctx: Ctx, blocks: list[tuple[str, float]],
                per_write: list[list[float]], cpu: dict[str, float], octets: int,
                batch: int, plugin_on_b: bool) -> None:
        ratios = octet_ratios(blocks)
        n_side = len(self.ORDER) // 2 * octets * batch
        ctx.result.update({
            "blocks": blocks,
            "write_ms": per_write,
            "octet_ratios": ratios,
            "control": not plugin_on_b,
            "wall_s": sum(t for _, t in blocks),
            "sum_ratio": (sum(t for s, t in blocks if s == "B")
                          / sum(t for s, t in blocks if s == "A")),
            "cpu_py_ms": {"without": cpu["A"] * 1000 / n_side,
                          "with": cpu["B"] * 1000 / n_side},
        })


# --------------------------------------------------------------------------- big job
class BigJob(Workload):
    """One job of ``partitions`` map tasks: ``spark.range(0, N, 1, 2000)`` grouped and written.

    ``spark.sql.shuffle.partitions`` is 2 so the job is the 2,000 map tasks plus 2 reduce
    tasks (a grouped aggregate without 2000x200 shuffle blocks). Figure: ``wall_s``.
    """

    name = "big_job"

    def setup(self, ctx: Ctx) -> None:
        ctx.spark.conf.set("spark.sql.shuffle.partitions", "2")
        warm = os.path.join(ctx.workdir, "warm")
        for _ in range(int(ctx.params.get("warmup", 2))):
            self._job(ctx, 200_000, 20, warm)
        ctx.flush()

    @staticmethod
    def _job(ctx: Ctx, n: int, partitions: int, path: str) -> None:
        from pyspark.sql import functions as F

        (ctx.spark.range(0, n, 1, partitions)
         .groupBy((F.col("id") % 100).alias("k"))
         .agg(F.sum("id").alias("s"), F.count("*").alias("c"))
         .write.mode("overwrite").parquet(path))

    def run(self, ctx: Ctx) -> None:
        import psutil

        n = int(ctx.params.get("rows", 10_000_000))
        partitions = int(ctx.params.get("partitions", 2000))
        threads0 = common.jvm_thread_cpu_ms(ctx.spark)
        helper0 = common.helper_cpu_s()
        own = psutil.Process()
        own0 = sum(own.cpu_times()[:2])
        cpu0 = common.cpu_seconds(ctx.spark)
        t0 = time.perf_counter()
        self._job(ctx, n, partitions, os.path.join(ctx.workdir, "big"))
        ctx.result["wall_s"] = time.perf_counter() - t0
        ctx.result["ends"] = [time.time()]
        cpu1 = common.cpu_seconds(ctx.spark)
        ctx.result["cpu_jvm_s"] = cpu1[0] - cpu0[0]
        ctx.result["cpu_py_s"] = cpu1[1] - cpu0[1]
        # The CPU of the job and of the plugin's work for it, by where it ran: after the
        # plugin's flush (its reading and delivery of the job's query end), untimed. Every
        # JVM thread by name (the plugin's query listener runs on the listener bus's
        # "shared" queue thread, which Spark starts for it), the driver's Python process,
        # the helper process.
        ctx.flush()
        threads1 = common.jvm_thread_cpu_ms(ctx.spark)
        ctx.result["accounting"] = {
            "jvm_threads_ms": {k: v - threads0.get(k, 0.0) for k, v in threads1.items()
                               if v - threads0.get(k, 0.0) > 0},
            "driver_py_ms": (sum(own.cpu_times()[:2]) - own0) * 1000,
            "helper_ms": (common.helper_cpu_s() - helper0) * 1000,
        }


# --------------------------------------------------------------------------- plan size
# Distinct catalog tables for the join plans. Creating a table in the Hive metastore costs
# 0.1-0.7 s here, so plans over more relations than this reuse tables under new aliases
# (relation i reads bench.t{i % JOIN_TABLES}): the plan still has ``size`` relation leaves.
JOIN_TABLES = 25


def create_join_tables(spark: Any, count: int) -> None:
    spark.sql("CREATE DATABASE IF NOT EXISTS bench")
    for i in range(count):
        spark.sql(f"CREATE TABLE IF NOT EXISTS bench.t{i} (id INT, v STRING) USING parquet")


def join_ctas(size: int, target: str, tables: int = JOIN_TABLES) -> str:
    """CTAS of ``size`` catalog relations joined on id (``size`` relation leaves)."""
    cols = ", ".join(f"a{i}.v AS v{i}" for i in range(size))
    joins = " ".join(f"JOIN bench.t{i % tables} a{i} ON a0.id = a{i}.id" for i in range(1, size))
    return f"CREATE TABLE {target} USING parquet AS SELECT a0.id, {cols} FROM bench.t0 a0 {joins}"


def create_tpch_tables(spark: Any) -> None:
    spark.sql("CREATE DATABASE IF NOT EXISTS tpch")
    for stmt in _tpch_schema():
        spark.sql(stmt.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))


def _tpch_schema() -> list[str]:
    with open(os.path.join(TPCH_DIR, "schema.sql")) as handle:
        text = handle.read()
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    return [stmt for stmt in "\n".join(lines).split(";") if stmt.strip()]


def catalog_template() -> str:
    """A Hive metastore (Derby) that holds the benchmark's catalog tables (``bench.t*``,
    ``tpch.*``, all empty), made once by a fresh interpreter and JVM (``child.py
    --prepare-catalog``) and copied into each plan_sweep run's work dir: creating the 33
    tables costs each run ~8 s and is not what it measures. Keyed by the pyspark version
    and the table definitions; kept in the temp dir for later suites."""
    import pyspark

    path = common.prepared_once("--prepare-catalog", "definity-perf-catalog-{}",
                                (pyspark.__version__, JOIN_TABLES, _tpch_schema()), "ready")
    if path is None:
        raise RuntimeError("child.py --prepare-catalog failed")
    return path


def prepare_catalog(spark: Any, path: str) -> None:
    """``catalog_template``'s content, made in ``spark`` (a session whose work dir is
    ``path``)."""
    create_join_tables(spark, JOIN_TABLES)
    create_tpch_tables(spark)
    with open(os.path.join(path, "ready"), "w") as handle:
        handle.write("ok\n")


def use_catalog_template(template: str, workdir: str) -> None:
    """Before the session starts: the run's metastore is a copy of the template's (the
    tables' data stay in the template's warehouse, read only; the run's own databases
    and CTAS outputs go to its own warehouse)."""
    shutil.copytree(os.path.join(template, "metastore_db"), os.path.join(workdir, "metastore_db"))


def tpch_query(number: int) -> str:
    with open(os.path.join(TPCH_DIR, f"q{number}.sql")) as handle:
        lines = [ln for ln in handle.read().splitlines() if not ln.strip().startswith("--")]
    return "\n".join(lines).strip().rstrip(";")


class PlanSweep(Workload):
    """CTAS over catalog tables: ``sizes`` joined relations, then the 22 TPC-H queries.

    Each statement is timed alone; with the plugin, ``flush()`` after it (untimed) and the
    extraction time the probe saw for it (both executions of the CTAS summed).
    Figures: ``sweep`` {size: {wall_ms, extraction_ms}}, ``tpch`` {qN: {...}}.
    """

    name = "plan_sweep"
    hive = True

    def setup(self, ctx: Ctx) -> None:
        sizes = [int(s) for s in ctx.params.get("sizes", [1, 2, 5, 10, 20, 40, 60, 80, 100])]
        create_join_tables(ctx.spark, min(max(sizes + [2]), JOIN_TABLES))
        if ctx.params.get("tpch", True):
            create_tpch_tables(ctx.spark)
        ctx.spark.sql("CREATE DATABASE IF NOT EXISTS out")
        for i in range(int(ctx.params.get("warmup", 3))):
            ctx.spark.sql(join_ctas(3, f"out.warm{i}"))
        ctx.flush()

    def _one(self, ctx: Ctx, sql: str) -> dict[str, Any]:
        if ctx.probe is not None:
            ctx.probe.mark()
        t0 = time.perf_counter()
        ctx.spark.sql(sql)
        wall = time.perf_counter() - t0
        out: dict[str, Any] = {"wall_ms": wall * 1000}
        if ctx.plugin:
            t1 = time.perf_counter()
            out["flush_ok"] = ctx.flush()
            out["flush_ms"] = (time.perf_counter() - t1) * 1000
            if ctx.probe is not None:
                out.update(ctx.probe.since_mark())
        return out

    def run(self, ctx: Ctx) -> None:
        sizes = [int(s) for s in ctx.params.get("sizes", [1, 2, 5, 10, 20, 40, 60, 80, 100])]
        sweep: dict[str, Any] = {}
        for size in sizes:
            sweep[str(size)] = self._one(ctx, join_ctas(size, f"out.j{size}"))
        ctx.result["sweep"] = sweep
        # The TPC-H corpus is for extraction time (plugin only); its without-plugin runs
        # are optional (tpch_without) to keep the suite under 15 minutes.
        if ctx.params.get("tpch", True) and (ctx.plugin or ctx.params.get("tpch_without", True)):
            ctx.spark.sql("USE tpch")
            tpch: dict[str, Any] = {}
            for q in range(1, 23):
                tpch[f"q{q}"] = self._one(
                    ctx, f"CREATE TABLE out.tpch_q{q} USING parquet AS {tpch_query(q)}")
            ctx.result["tpch"] = tpch


# --------------------------------------------------------------------------- RSS
def _jvm_heap_used_mb(spark: Any) -> float:
    jvm = spark.sparkContext._jvm
    runtime = jvm.java.lang.Runtime.getRuntime()
    jvm.java.lang.System.gc()
    return (runtime.totalMemory() - runtime.freeMemory()) / 1024 / 1024


class ManyQueries(Workload):
    """``n`` cheap writes (``spark.range(1).write.format("noop").mode("overwrite")``).

    The noop data source is a real DataSourceV2 write (one job, one task, nothing stored),
    so every query goes through the plugin's whole path. Samples the driver's Python RSS
    (psutil) every ``every`` queries after ``warmup``; the JVM heap after a GC at the ends.
    """

    name = "many_queries"

    def setup(self, ctx: Ctx) -> None:
        for _ in range(int(ctx.params.get("warmup", 200))):
            self._query(ctx)
        ctx.flush()

    @staticmethod
    def _query(ctx: Ctx) -> None:
        ctx.spark.range(0, 1, 1, 1).write.format("noop").mode("overwrite").save()

    def run(self, ctx: Ctx) -> None:
        import psutil

        proc = psutil.Process()
        helper = common.helper_process()  # the plugin's delivery helper, if it has one
        helper0 = common.rss_mb(helper)
        n = int(ctx.params.get("n", 10_000))
        if not ctx.plugin:
            n = int(ctx.params.get("n_without", n))
        every = int(ctx.params.get("every", 500))
        gc.collect()
        heap0 = _jvm_heap_used_mb(ctx.spark)
        samples: list[list[float]] = [[0, proc.memory_info().rss / 1024 / 1024]]
        # A time budget (max_s) so that a busy machine shortens the run instead of failing
        # it; ``queries`` says how many ran.
        max_s = float(ctx.params.get("max_s", 0) or 0)
        t0 = time.perf_counter()
        done = 0
        for i in range(1, n + 1):
            self._query(ctx)
            done = i
            if i % every == 0:
                samples.append([i, proc.memory_info().rss / 1024 / 1024])
                if max_s and time.perf_counter() - t0 > max_s:
                    break
        wall = time.perf_counter() - t0
        rss_end = proc.memory_info().rss / 1024 / 1024
        flushed = ctx.flush(120.0)
        gc.collect()
        rss_flushed = proc.memory_info().rss / 1024 / 1024
        ctx.result.update({
            "wall_s": wall,
            "queries": done,
            "rss_samples_mb": samples,
            "rss_start_mb": samples[0][1],
            "rss_end_mb": rss_end,
            "rss_after_flush_mb": rss_flushed,
            "rss_growth_mb": rss_flushed - samples[0][1],
            "helper_rss_start_mb": helper0,
            "helper_rss_after_flush_mb": common.rss_mb(helper),
            "flush_ok": flushed,
            "jvm_heap_start_mb": heap0,
            "jvm_heap_end_mb": _jvm_heap_used_mb(ctx.spark),
        })


WORKLOADS: dict[str, Callable[[], Workload]] = {
    cls.name: cls for cls in (SmallWrites, SmallWritesAB, BigJob, PlanSweep, ManyQueries)
}
