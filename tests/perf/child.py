"""One benchmark run: a fresh interpreter and JVM, one workload, with or without the plugin.

    python tests/perf/child.py --workload small_writes --plugin 1 \
        --collector http://127.0.0.1:PORT --params '{"n": 200}' --out run.json

Writes one JSON object: the workload's figures, the listener-bus metrics after the run
(bus drained), the plugin's flush time and task id, process timings. Started by run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
import workloads  # noqa: E402

# Class data sharing: the suite's JVMs map the classes a first run loaded from an archive
# instead of loading them from the jars (session start 3.1 -> 1.8 s, the first writes
# ~1.4 s faster). The same for both sides; see cds_archive.
CDS_ENV = "DEFINITY_PERF_CDS"


def build_session(workdir: str, hive: bool, java_options: str = "") -> Any:
    from pyspark.sql import SparkSession

    options = f"-Dderby.system.home={workdir} {java_options}"
    if not java_options and os.environ.get(CDS_ENV):
        options += f" -XX:SharedArchiveFile={os.environ[CDS_ENV]} -Xshare:auto"
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("definity-perf")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.warehouse.dir", os.path.join(workdir, "warehouse"))
        .config("spark.driver.extraJavaOptions", options.strip())
    )
    if hive:
        builder = builder.config(
            "spark.hadoop.javax.jdo.option.ConnectionURL",
            f"jdbc:derby:;databaseName={os.path.join(workdir, 'metastore_db')};create=true",
        ).enableHiveSupport()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def prepare_catalog(path: str) -> int:
    """``--prepare-catalog PATH``: make workloads.catalog_template's metastore in PATH."""
    os.makedirs(path, exist_ok=True)
    spark = build_session(path, True)
    try:
        workloads.prepare_catalog(spark, path)
    finally:
        spark.stop()
    return 0


def cds_archive() -> str | None:
    """A dynamic class-data-sharing archive (JDK 13+) of the classes a run without the
    plugin loads (Hive session, small writes, a 2,000-task job, a join CTAS, noop writes),
    made once by ``--prepare-cds`` and kept in the temp dir, keyed by the pyspark and Java
    versions. None when it cannot be made (the runs then load classes as usual)."""
    import pyspark

    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    return common.prepared_once("--prepare-cds", "definity-perf-{}.jsa",
                                (pyspark.__version__, java, sys.executable))


def prepare_cds(path: str) -> int:
    """``--prepare-cds PATH``: the archive's run (no plugin); the JVM writes it at exit."""
    from pyspark.sql import functions as F

    workdir = tempfile.mkdtemp(prefix="perf-cds-")
    workloads.use_catalog_template(workloads.catalog_template(), workdir)
    partial = path + ".part"
    spark = build_session(workdir, True, f"-XX:ArchiveClassesAtExit={partial}")
    jvm = spark.sparkContext._gateway.proc  # pyspark's JVM process
    for _ in range(5):
        spark.range(1000).write.mode("overwrite").parquet(os.path.join(workdir, "small"))
    spark.conf.set("spark.sql.shuffle.partitions", "2")
    (spark.range(0, 200_000, 1, 2000).groupBy((F.col("id") % 100).alias("k"))
     .agg(F.sum("id")).write.mode("overwrite").parquet(os.path.join(workdir, "big")))
    spark.sql("CREATE DATABASE IF NOT EXISTS out")
    spark.sql(workloads.join_ctas(5, "out.cds"))
    for _ in range(20):
        spark.range(0, 1, 1, 1).write.format("noop").mode("overwrite").save()
    spark.stop()
    jvm.stdin.close()  # the gateway exits; the archive is written as the JVM ends
    jvm.wait(timeout=300)
    shutil.rmtree(workdir, ignore_errors=True)
    if os.path.exists(partial) and os.path.getsize(partial) > 0:
        os.replace(partial, path)
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--prepare-catalog"]:
        return prepare_catalog(sys.argv[2])
    if sys.argv[1:2] == ["--prepare-cds"]:
        return prepare_cds(sys.argv[2])
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", required=True, choices=sorted(workloads.WORKLOADS))
    parser.add_argument("--plugin", type=int, choices=(0, 1), required=True)
    parser.add_argument("--collector", default=None, help="collector URL (plugin runs)")
    parser.add_argument("--params", default="{}")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    t_process = time.perf_counter()
    params: dict[str, Any] = json.loads(args.params)
    workload = workloads.WORKLOADS[args.workload]()
    result: dict[str, Any] = {"workload": args.workload, "plugin": bool(args.plugin),
                              "params": params, "load_start": common.loadavg()}
    workdir = tempfile.mkdtemp(prefix=f"perf-{args.workload}-")
    spark = None
    try:
        if params.get("catalog_template"):
            workloads.use_catalog_template(params["catalog_template"], workdir)
        spark = build_session(workdir, workload.hive)
        result["session_s"] = time.perf_counter() - t_process
        handle = None
        probe = None
        if args.plugin:
            from probe import Probe

            import definity_spark

            try:  # import the observer first so the probe can wrap its entry points
                import definity_spark.spark.observer  # noqa: F401
            except ImportError:
                pass
            probe = Probe().install()
            t0 = time.perf_counter()
            overrides: dict[str, Any] = {"pipeline_name": "definity-perf",
                                         "task_name": f"{args.workload}"}
            if args.collector:
                overrides["server_url"] = args.collector
            else:
                overrides["events_file"] = os.path.join(workdir, "events.jsonl")
            handle = definity_spark.activate(spark, **overrides)
            result["activate_s"] = time.perf_counter() - t0
            if handle is None:
                raise RuntimeError("definity_spark.activate() returned None")
            result["task_id"] = handle.task_id
            probe.attach(handle)
            result["probe_source"] = probe.source
        ctx = workloads.Ctx(spark, handle, probe, workdir, params)
        if handle is not None:
            ctx.activate = lambda: definity_spark.activate(spark, **overrides)
        t0 = time.perf_counter()
        workload.setup(ctx)
        result["setup_s"] = time.perf_counter() - t0
        workload.run(ctx)
        result.update(ctx.result)
        handle = ctx.handle  # a workload may have activated the plugin again
        if handle is not None:
            t0 = time.perf_counter()
            result["flush_ok"] = bool(handle.flush(120.0))
            result["flush_s"] = time.perf_counter() - t0
            samples = probe.all_samples() if probe else {}
            result["extraction_all_ms"] = samples.get("extraction_ms", [])
            result["handle_all_ms"] = samples.get("handle_ms", [])
            from probe import observer_stats

            result["observer_stats"] = observer_stats(handle)
            # the listener-bus queue the plugin's listener joined (None: a
            # QueryExecutionListener, on the shared queue)
            result["bus_queues"] = [getattr(o, "bus_queue", None)
                                    for o in handle._runtime.observers.values()]
            try:  # the Python part of the listener-bus time, as the listener measures it
                result["listener_busy_ms"] = [
                    ns / 1e6 for o in handle._runtime.observers.values()
                    if o.py_listener is not None for ns in list(o.py_listener.busy_ns_samples)]
            except Exception:
                result["listener_busy_ms"] = None
            try:
                result["delivery_stats"] = dict(handle._runtime.delivery.stats())
            except Exception:
                result["delivery_stats"] = None
        result["bus_empty"] = common.wait_bus_empty(spark)
        result["bus"] = common.bus_metrics(spark)
        if handle is not None:
            import definity_spark

            definity_spark.deactivate(spark, timeout=30.0)
        result["ok"] = True
    except Exception as exc:  # report, do not hide: the runner marks the run failed
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    finally:
        result["load_end"] = common.loadavg()
        result["process_s"] = time.perf_counter() - t_process
        with open(args.out, "w") as handle_out:
            json.dump(result, handle_out)
        if spark is not None:
            try:
                spark.stop()
            except Exception:
                pass
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
