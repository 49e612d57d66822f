"""Issue 5, "bad input": odd plans never break the job, never hang, and are reported.

One SparkSession (local[1]) with the plugin active against a real loopback HTTP server
(tests/faulty_server.py, healthy), strict mode OFF so that containment itself is what is
exercised. For each odd plan: the user's code sees exactly what Spark gives it (results,
or Spark's own exception for a failing / cancelled query), no internal error of the plugin
is logged, ``Handle.flush`` returns True within its timeout, and each write reached the
server as a transformation (or, for a write the plugin cannot see, e.g. RDD
``saveAsTextFile``, the plugin at least keeps working afterwards).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyspark")
pytestmark = [pytest.mark.spark, pytest.mark.slow]

from faulty_server import FaultyServer  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

import definity_spark  # noqa: E402
from definity_spark import _internal  # noqa: E402

TOKEN = "tok-odd-plans-123456"
FLUSH_TIMEOUT = 20.0  # generous: a 300-way union is slow to plan on a loaded 2-core box
FLUSH_SLACK = 1.0


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def internal_errors(self) -> list[str]:
        return [r.getMessage() for r in self.records if "internal error" in r.getMessage()]


class Env:
    def __init__(self, spark: SparkSession, handle: Any, server: FaultyServer,
                 tmp: Path, capture: _Capture, errors_before: dict) -> None:
        self.spark, self.handle, self.server, self.tmp, self.capture = (
            spark, handle, server, tmp, capture)
        # internal errors contained before this module (other tests in the process)
        self.errors_before = errors_before

    def mark(self) -> int:
        with self.server.lock:
            return len(self.server.records)

    def flush(self) -> None:
        start = time.monotonic()
        ok = self.handle.flush(FLUSH_TIMEOUT)
        took = time.monotonic() - start
        assert took <= FLUSH_TIMEOUT + FLUSH_SLACK, f"flush took {took:.1f}s"
        assert ok is True, "flush did not complete within its timeout"

    def since(self, mark: int) -> list[tuple[str, Any]]:
        with self.server.lock:
            return [(r.path, r.json) for r in self.server.records[mark:]]

    def tfs_since(self, mark: int) -> list[dict]:
        return [b for p, b in self.since(mark) if p == "/log/tf"]

    def assert_written(self, mark: int, path: Path) -> dict:
        self.flush()
        tfs = [tf for tf in self.tfs_since(mark)
               if tf["output"]["name"].rstrip("/").endswith(str(path))]
        assert len(tfs) == 1, self.tfs_since(mark)
        return tfs[0]

    def assert_no_internal_error(self) -> None:
        assert self.capture.internal_errors() == []
        assert _internal.internal_error_counts() == self.errors_before


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("odd")
    was_strict = _internal.is_strict()
    _internal.set_strict(False)
    errors_before = _internal.internal_error_counts()
    capture = _Capture()
    logger = logging.getLogger("definity_spark")
    logger.addHandler(capture)
    server = FaultyServer(token=TOKEN)
    # Python workers (UDFs, mapInPandas) run this interpreter, which has pandas/pyarrow
    old_python = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (SparkSession.builder.master("local[1]").appName("odd-plans")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "1")
             .config("spark.sql.warehouse.dir", str(tmp / "warehouse"))
             .getOrCreate())
    handle = definity_spark.activate(
        spark, server_url=server.url, token=TOKEN, spool_dir=str(tmp / "spool"),
        flush_timeout=FLUSH_TIMEOUT, server_timeout=5.0, log_level="DEBUG")
    assert handle is not None
    try:
        yield Env(spark, handle, server, tmp, capture, errors_before)
    finally:
        definity_spark.deactivate(spark, timeout=FLUSH_TIMEOUT)
        spark.stop()
        server.close()
        logger.removeHandler(capture)
        _internal.set_strict(was_strict)
        if old_python is None:
            os.environ.pop("PYSPARK_PYTHON", None)
        else:
            os.environ["PYSPARK_PYTHON"] = old_python


# ----------------------------------------------------------------------------- wide / deep
def test_1000_column_schema(env: Env) -> None:
    out = env.tmp / "wide"
    mark = env.mark()
    df = env.spark.range(3).select(*[(F.col("id") + i).alias(f"c{i}") for i in range(1000)])
    df.write.mode("overwrite").parquet(str(out))
    tf = env.assert_written(mark, out)
    datasets = [b for p, b in env.since(mark) if p == "/log/dataset"
                and b.get("tf_id") == tf["tf_id"]]
    assert len(datasets) == 1
    fields = datasets[0]["metadata"]
    assert len(fields) == 1000
    assert fields[0]["info_value"] == "c0-LONG" and fields[999]["info_num"] == 999
    env.assert_no_internal_error()


def test_300_way_union(env: Env) -> None:
    src = env.tmp / "union_src"
    env.spark.range(5).write.mode("overwrite").parquet(str(src))
    base = env.spark.read.parquet(str(src))
    parts = [base.selectExpr(f"id + {i} AS v") for i in range(300)]
    df: DataFrame = functools.reduce(DataFrame.unionAll, parts)
    out = env.tmp / "union_out"
    mark = env.mark()
    df.write.mode("overwrite").parquet(str(out))
    tf = env.assert_written(mark, out)
    # 300 scans of the same dataset are one input
    assert [k for k in tf["input_datasets"] if k.rstrip("/").endswith("union_src")], tf
    assert env.spark.read.parquet(str(out)).count() == 1500
    env.assert_no_internal_error()


def test_views_nested_20_deep(env: Env) -> None:
    src = env.tmp / "views_src"
    env.spark.range(10).selectExpr("id", "id * 2 AS twice").write.mode("overwrite") \
        .parquet(str(src))
    env.spark.read.parquet(str(src)).createOrReplaceTempView("v0")
    for i in range(1, 21):
        env.spark.sql(f"CREATE OR REPLACE TEMP VIEW v{i} AS SELECT id, twice FROM v{i - 1} "
                      f"WHERE id >= 0")
    out = env.tmp / "views_out"
    mark = env.mark()
    env.spark.table("v20").write.mode("overwrite").parquet(str(out))
    tf = env.assert_written(mark, out)
    assert [k for k in tf["input_datasets"] if k.rstrip("/").endswith("views_src")], tf
    env.assert_no_internal_error()


# ----------------------------------------------------------------------------- Python code
def test_python_udf(env: Env) -> None:
    plus_one = F.udf(lambda x: x + 1, "long")
    out = env.tmp / "udf_out"
    mark = env.mark()
    env.spark.range(5).select(plus_one("id").alias("v")).write.mode("overwrite") \
        .parquet(str(out))
    env.assert_written(mark, out)
    assert sorted(r.v for r in env.spark.read.parquet(str(out)).collect()) == [1, 2, 3, 4, 5]
    env.assert_no_internal_error()


def test_python_udtf(env: Env) -> None:
    udtf = getattr(F, "udtf", None)
    if udtf is None:
        pytest.skip("Python UDTFs need Spark >= 3.5")

    @udtf(returnType="n: int, sq: int")
    class Squares:
        def eval(self, start: int, end: int) -> Iterator[tuple[int, int]]:
            for n in range(start, end + 1):
                yield n, n * n

    env.spark.udtf.register("odd_squares", Squares)
    out = env.tmp / "udtf_out"
    mark = env.mark()
    env.spark.sql("SELECT * FROM odd_squares(1, 4)").write.mode("overwrite").parquet(str(out))
    env.assert_written(mark, out)
    assert env.spark.read.parquet(str(out)).count() == 4
    env.assert_no_internal_error()


def test_map_in_pandas(env: Env) -> None:
    pytest.importorskip("pandas", reason="mapInPandas needs pandas")
    pytest.importorskip("pyarrow", reason="mapInPandas needs pyarrow")

    def double(batches: Iterator[Any]) -> Iterator[Any]:
        for pdf in batches:
            yield pdf.assign(id=pdf.id * 2)

    out = env.tmp / "pandas_out"
    mark = env.mark()
    env.spark.range(6).mapInPandas(double, "id long").write.mode("overwrite").parquet(str(out))
    env.assert_written(mark, out)
    assert sorted(r.id for r in env.spark.read.parquet(str(out)).collect()) == [
        0, 2, 4, 6, 8, 10]
    env.assert_no_internal_error()


def test_rdd_actions(env: Env) -> None:
    sc = env.spark.sparkContext
    rdd = sc.parallelize(range(10), 1).map(lambda x: x * 3)
    assert rdd.sum() == 135
    assert rdd.filter(lambda x: x % 2 == 0).collect() == [0, 6, 12, 18, 24]
    rdd.map(str).saveAsTextFile(str(env.tmp / "rdd_text"))
    # a DataFrame from an RDD, written: a transformation
    out = env.tmp / "rdd_df_out"
    mark = env.mark()
    env.spark.createDataFrame(rdd.map(lambda x: (x,)), "v long").write.mode("overwrite") \
        .parquet(str(out))
    env.assert_written(mark, out)
    env.assert_no_internal_error()


# ----------------------------------------------------------------------------- streaming
def test_structured_streaming_next_to_batch_work(env: Env) -> None:
    stream = (env.spark.readStream.format("rate").option("rowsPerSecond", 20).load()
              .writeStream.format("memory").queryName("odd_rate")
              .option("checkpointLocation", str(env.tmp / "rate_ckpt"))
              .trigger(processingTime="200 milliseconds").start())
    try:
        marks, outs = [], []
        for i in range(3):  # batch writes while the stream runs
            out = env.tmp / f"next_to_stream_{i}"
            marks.append(env.mark())
            outs.append(out)
            env.spark.range(10).write.mode("overwrite").parquet(str(out))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            progress = stream.lastProgress
            if progress and stream.recentProgress and sum(
                    p["numInputRows"] for p in stream.recentProgress) > 0 \
                    and len(stream.recentProgress) >= 3:
                break
            time.sleep(0.2)
        assert stream.exception() is None
        assert len(stream.recentProgress) >= 3, "the stream did not run a few batches"
    finally:
        stream.stop()
    assert env.spark.table("odd_rate").count() > 0
    for mark, out in zip(marks, outs):
        env.assert_written(mark, out)
    env.assert_no_internal_error()


# ----------------------------------------------------------------------------- failures
def test_failing_queries_reach_the_user_unchanged(env: Env) -> None:
    from pyspark.errors import AnalysisException

    with pytest.raises(AnalysisException):
        env.spark.sql("SELECT * FROM odd_no_such_table").write.parquet(
            str(env.tmp / "never"))

    def boom(x: int) -> int:
        raise ValueError("boom in the user's UDF")

    failing = F.udf(boom, "long")
    with pytest.raises(Exception) as info:
        env.spark.range(3).select(failing("id")).write.mode("overwrite").parquet(
            str(env.tmp / "never2"))
    assert "boom in the user's UDF" in str(info.value)
    assert "definity" not in type(info.value).__module__
    env.flush()
    # the session keeps working and reporting
    out = env.tmp / "after_failures"
    mark = env.mark()
    env.spark.range(2).write.mode("overwrite").parquet(str(out))
    env.assert_written(mark, out)
    env.assert_no_internal_error()


def test_query_cancelled_by_the_user(env: Env) -> None:
    sc = env.spark.sparkContext

    def slow(x: int) -> int:
        time.sleep(0.5)
        return x

    slow_udf = F.udf(slow, "long")
    errors: list[BaseException] = []

    def run() -> None:
        sc.setJobGroup("odd-cancel", "cancelled by the test", interruptOnCancel=True)
        try:
            env.spark.range(0, 400, 1, 4).select(slow_udf("id").alias("v")).write \
                .mode("overwrite").parquet(str(env.tmp / "cancelled"))
        except BaseException as exc:  # noqa: BLE001 - the user's code sees Spark's error
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not sc.statusTracker().getActiveJobsIds():
        time.sleep(0.1)
    time.sleep(0.5)
    sc.cancelAllJobs()
    worker.join(60)
    assert not worker.is_alive(), "the cancelled query did not return"
    assert errors, "the query was not cancelled"
    assert "cancel" in str(errors[0]).lower(), errors[0]
    env.flush()
    out = env.tmp / "after_cancel"
    mark = env.mark()
    env.spark.range(2).write.mode("overwrite").parquet(str(out))
    env.assert_written(mark, out)
    env.assert_no_internal_error()


def test_task_end_counts_every_transformation(env: Env) -> None:
    """Last in the module: deactivate ends the task within its bound, with the counts."""
    before = env.mark()
    start = time.monotonic()
    definity_spark.deactivate(env.spark, timeout=FLUSH_TIMEOUT)
    assert time.monotonic() - start <= FLUSH_TIMEOUT + FLUSH_SLACK
    records = env.since(0)
    tfs = [b for p, b in records if p == "/log/tf"]
    assert records[-1] == ("/log/task", {"task_id": env.handle.task_id, "status": "end"})
    task_metrics = {m["metric_type"]: m["value"] for p, b in env.since(before)
                    if p == "/log/metrics" for m in b["metrics"]}
    assert task_metrics.get("transformations") == len(tfs)
    assert task_metrics.get("failed_queries", 0) >= 2  # the UDF failure and the cancel
    assert [tf["tf_id"] for tf in tfs] == list(range(1, len(tfs) + 1))
    env.assert_no_internal_error()
