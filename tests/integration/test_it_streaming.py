"""Issue 24, Structured Streaming: one transformation per query run (sources -> sink),
sent when its first micro-batch that wrote data completed; its metrics per interval and
at its end (``asset_type: "stream"``); ``foreachBatch`` writes reported once per run and
output, linked to the run; a failing query counted, the task going on. Kafka is a real
broker (KRaft, tests/kafka_broker.py) with Spark's ``spark-sql-kafka-0-10``.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import kafka_broker
import pytest
from it_helpers import (
    DELTA_LINES,
    Batch,
    Task,
    delta_jars,
    expect_schema,
    file_name,
    is_spark35,
    require_format,
)

pytestmark = pytest.mark.spark

INTERVAL = 2.0  # seconds: the module's stream_metrics_interval
TASK_SETTINGS = {"stream_metrics_interval": INTERVAL}
EVENTS_DDL = "id INT, kind STRING, amount DOUBLE"
EVENTS_SCHEMA = ["id-INTEGER", "kind-STRING", "amount-DOUBLE"]
STREAM_METRICS = {"batches", "input_rows", "interval_seconds", "run_batches",
                  "run_input_rows", "run_seconds", "run_failed"}


def _events(first: int, n: int) -> list[tuple[int, str, float]]:
    return [(i, "buy" if i % 2 else "view", float(i) * 1.5) for i in range(first, first + n)]


@pytest.fixture(scope="module")
def module_data(spark: Any, module_dir: Path) -> dict[str, Any]:
    """Three JSON files of events (a file source), written before the task starts."""
    src = module_dir / "in" / "events"
    for k in range(3):
        spark.createDataFrame(_events(k * 10, 10), EVENTS_DDL).coalesce(1) \
            .write.mode("append").json(str(src))
    return {"src": src}


@pytest.fixture(scope="module")
def broker() -> Any:
    if not kafka_broker.available() or not kafka_broker.spark_jars():
        pytest.fail("Kafka broker or connector jars missing: run tests/setup.sh "
                    "(.ci/fetch-jars.sh)")
    b = kafka_broker.KafkaBroker().start()
    try:
        yield b
    finally:
        b.stop()


def _stream_tf(batch: Batch, output: str) -> dict[str, Any]:
    tfs = [t for t in batch.tfs if t["output"]["name"] == output]
    assert len(tfs) == 1, batch.summary()
    return tfs[0]


def _stream_metrics(batch: Batch, asset: str) -> list[dict[str, float]]:
    """The /log/metrics payloads of a stream, each as {metric_type: value}."""
    out = []
    for body in batch.of("/log/metrics"):
        entries = [m for m in body["metrics"] if m["asset_type"] == "stream"
                   and m["asset_name"] == asset]
        if entries:
            out.append({m["metric_type"]: m["value"] for m in entries})
    return out


def _run_stream(query: Any) -> Any:
    query.processAllAvailable()
    query.stop()
    return query


def _checkpoint(module_dir: Path) -> str:
    return str(module_dir / "chk" / uuid.uuid4().hex[:8])


def test_file_to_file(task: Task, module_data: dict[str, Any], module_dir: Path) -> None:
    src = module_data["src"]
    out = str(module_dir / "out" / "file_sink")
    spark = task.spark

    def run() -> None:
        df = spark.readStream.schema(EVENTS_DDL).option("maxFilesPerTrigger", 1).json(str(src))
        _run_stream(df.where("kind = 'buy'").select("id", "amount").writeStream
                    .format("parquet").option("checkpointLocation", _checkpoint(module_dir))
                    .queryName("buys").start(out))

    batch = task.run(run)
    tf = _stream_tf(batch, file_name(out))
    assert tf["input_datasets"] == {file_name(src): {"columns": ["id", "kind", "amount"]}}, tf
    assert tf["stream"]["name"] == "buys" and set(tf["stream"]) == {"id", "run_id", "name"}
    assert tf["query_str"] == f"DataStreamWriter.start({file_name(out)}) queryName=buys"
    assert len(batch.tfs) == 1, batch.summary()
    expect_schema(batch, file_name(out), ["id-INTEGER", "amount-DOUBLE"], tf_id=tf["tf_id"],
                  ds_type="path")
    reports = _stream_metrics(batch, file_name(out))
    assert reports, batch.metrics
    end = reports[-1]
    assert STREAM_METRICS <= set(end), end
    # Spark's numInputRows: the rows its scan gave, after the JSON reader's pushed filter
    # (the 15 'buy' events of 30)
    assert end["run_batches"] == 3 and end["run_input_rows"] == 15, end
    assert end["run_failed"] == 0
    assert sum(r["batches"] for r in reports) == 3, reports
    assert sum(r["input_rows"] for r in reports) == 15, reports
    assert len(reports) <= 1 + end["run_seconds"] / INTERVAL + 1, reports

    # read back in batch through the sink's _spark_metadata log: the sink's own name
    back = str(module_dir / "out" / "file_sink_back")
    batch = task.run(lambda: spark.read.parquet(out).where("amount > 10")
                     .select("id").write.parquet(back))
    assert len(batch.tfs) == 1, batch.summary()
    assert batch.tfs[0]["input_datasets"] == {file_name(out): {"columns": ["id", "amount"]}}


def test_restart_from_the_checkpoint_is_a_new_tf_with_the_same_names(
        task: Task, module_data: dict[str, Any], module_dir: Path) -> None:
    """A query started again from its checkpoint is a new run: one more tf, the same
    dataset names, the same query id (a new application starts a new run the same way)."""
    src = module_dir / "in" / "restart"
    out = str(module_dir / "out" / "restart_sink")
    checkpoint = _checkpoint(module_dir)
    spark = task.spark

    def add_file(first: int) -> None:
        spark.createDataFrame(_events(first, 5), EVENTS_DDL).coalesce(1) \
            .write.mode("append").json(str(src))

    def run() -> None:
        df = spark.readStream.schema(EVENTS_DDL).json(str(src))
        _run_stream(df.select("id", "kind").writeStream.format("parquet")
                    .option("checkpointLocation", checkpoint).start(out))

    add_file(0)
    task.run(lambda: None)  # the set-up write
    first = task.run(run)
    add_file(100)
    task.run(lambda: None)
    second = task.run(run)
    tfs = [_stream_tf(first, file_name(out)), _stream_tf(second, file_name(out))]
    assert tfs[1]["tf_id"] > tfs[0]["tf_id"]
    for tf in tfs:
        assert tf["input_datasets"] == {file_name(src): {"columns": ["id", "kind"]}}, tf
    assert tfs[0]["stream"]["id"] == tfs[1]["stream"]["id"]
    assert tfs[0]["stream"]["run_id"] != tfs[1]["stream"]["run_id"]
    # the second run read only the new file: its end metrics count its own rows
    assert _stream_metrics(second, file_name(out))[-1]["run_input_rows"] == 5


def test_foreach_batch_two_writes(task: Task, module_data: dict[str, Any],
                                  module_dir: Path) -> None:
    src = module_data["src"]
    all_out = str(module_dir / "out" / "fb_all")
    big_out = str(module_dir / "out" / "fb_big")
    spark = task.spark
    batches: list[int] = []

    def write_both(df: Any, batch_id: int) -> None:
        batches.append(batch_id)
        df.write.mode("append").parquet(all_out)
        df.where("amount > 20").select("id", "amount").write.mode("append").parquet(big_out)

    def run() -> None:
        df = spark.readStream.schema(EVENTS_DDL).option("maxFilesPerTrigger", 1).json(str(src))
        _run_stream(df.writeStream.foreachBatch(write_both)
                    .option("checkpointLocation", _checkpoint(module_dir)).start())

    batch = task.run(run)
    assert len(batches) == 3, batches  # three micro-batches, each with two writes ...
    assert sorted(t["output"]["name"] for t in batch.tfs) == sorted(
        [file_name(all_out), file_name(big_out)]), batch.summary()  # ... two tfs
    runs = {json.dumps(t["stream"], sort_keys=True) for t in batch.tfs}
    assert len(runs) == 1, runs  # both linked to the one query run
    for tf in batch.tfs:
        # the micro-batch is the source's data: the file source is an input
        assert file_name(src) in tf["input_datasets"], tf
    link = batch.tfs[0]["stream"]
    reports = _stream_metrics(batch, link["id"])  # no sink dataset: named by the query id
    assert reports and reports[-1]["run_batches"] == 3, batch.metrics


def test_failing_stream(task: Task, module_data: dict[str, Any], module_dir: Path) -> None:
    from pyspark.errors import StreamingQueryException

    src = module_data["src"]
    out = str(module_dir / "out" / "never")
    spark = task.spark

    def run() -> None:
        df = spark.readStream.schema(EVENTS_DDL).json(str(src))
        q = (df.selectExpr("CASE WHEN id = 12 THEN raise_error('bad row 12') ELSE id END AS id")
             .writeStream.format("parquet")
             .option("checkpointLocation", _checkpoint(module_dir)).queryName("fails")
             .start(out))
        q.awaitTermination(120)

    batch, exc = task.run_failing(run, StreamingQueryException)
    assert "bad row 12" in str(exc)
    assert batch.tfs == [], batch.summary()  # nothing was written
    reports = _stream_metrics(batch, file_name(out))
    assert reports and reports[-1]["run_failed"] == 1, batch.metrics
    # the task goes on: the next write is reported as usual
    after = str(module_dir / "out" / "after_failure")
    batch = task.run(lambda: spark.range(3).write.parquet(after))
    assert [t["output"]["name"] for t in batch.tfs] == [file_name(after)]


def _produce(spark: Any, broker: Any, topic: str, first: int, n: int) -> None:
    (spark.createDataFrame(_events(first, n), EVENTS_DDL)
     .selectExpr("CAST(id AS STRING) AS key", "to_json(struct(*)) AS value")
     .write.format("kafka").option("kafka.bootstrap.servers", broker.bootstrap)
     .option("topic", topic).save())


def _kafka_source(spark: Any, broker: Any, topic: str) -> Any:
    return (spark.readStream.format("kafka").option("kafka.bootstrap.servers", broker.bootstrap)
            .option("subscribe", topic).option("startingOffsets", "earliest").load()
            .selectExpr("CAST(key AS STRING) AS key",
                        f"from_json(CAST(value AS STRING), '{EVENTS_DDL}') AS e")
            .select("key", "e.id", "e.kind", "e.amount"))


def test_kafka_batch_write_is_named_by_topic(task: Task, broker: Any) -> None:
    batch = task.run(lambda: _produce(task.spark, broker, "names", 0, 4))
    assert [t["output"]["name"] for t in batch.tfs] == [f"kafka://{broker.bootstrap}/names"]
    expect_schema(batch, f"kafka://{broker.bootstrap}/names", ["key-STRING", "value-STRING"],
                  ds_type="kafka")


def test_kafka_to_files(task: Task, broker: Any, module_dir: Path) -> None:
    """Kafka -> Delta table on Spark 3.5 (Delta's release line here), parquet elsewhere."""
    spark = task.spark
    topic = "orders"
    _produce(spark, broker, topic, 0, 20)
    task.run(lambda: None)  # the set-up write
    delta = is_spark35()
    if delta:
        require_format("Delta Lake", DELTA_LINES, bool(delta_jars()))
    out = str(module_dir / "out" / "from_kafka")

    def run() -> None:
        w = (_kafka_source(spark, broker, topic).writeStream
             .option("checkpointLocation", _checkpoint(module_dir)).trigger(availableNow=True))
        q = w.format("delta").toTable("kafka_orders") if delta else \
            w.format("parquet").start(out)
        q.awaitTermination(120)

    batch = task.run(run)
    output = "default.kafka_orders" if delta else file_name(out)
    tf = _stream_tf(batch, output)
    assert tf["input_datasets"] == {
        f"kafka://{broker.bootstrap}/{topic}": {"columns": ["key", "value"]}}, tf
    expect_schema(batch, output, ["key-STRING", "id-INTEGER", "kind-STRING", "amount-DOUBLE"],
                  tf_id=tf["tf_id"], ds_type="table" if delta else "path")
    end = _stream_metrics(batch, output)[-1]
    assert end["run_input_rows"] == 20 and end["run_failed"] == 0, end


def test_kafka_to_kafka(task: Task, broker: Any, module_dir: Path) -> None:
    spark = task.spark
    _produce(spark, broker, "raw", 0, 12)
    task.run(lambda: None)  # the set-up write

    def run() -> None:
        q = (_kafka_source(spark, broker, "raw").where("kind = 'buy'")
             .selectExpr("key", "to_json(struct(id, amount)) AS value").writeStream
             .format("kafka").option("kafka.bootstrap.servers", broker.bootstrap)
             .option("topic", "buys").option("checkpointLocation", _checkpoint(module_dir))
             .trigger(availableNow=True).start())
        q.awaitTermination(120)

    batch = task.run(run)
    out = f"kafka://{broker.bootstrap}/buys"
    tf = _stream_tf(batch, out)
    assert tf["input_datasets"] == {
        f"kafka://{broker.bootstrap}/raw": {"columns": ["key", "value"]}}, tf
    expect_schema(batch, out, ["key-STRING", "value-STRING"], tf_id=tf["tf_id"],
                  ds_type="kafka")
    end = _stream_metrics(batch, out)[-1]
    assert end["run_input_rows"] == 12, end
    # read back in batch: the same name as the stream's output
    back = str(module_dir / "out" / "buys_back")
    batch = task.run(lambda: spark.read.format("kafka")
                     .option("kafka.bootstrap.servers", broker.bootstrap)
                     .option("subscribe", "buys").load().select("value").write.parquet(back))
    assert list(batch.tfs[0]["input_datasets"]) == [out], batch.summary()


def test_interval_metrics_are_bounded(task: Task, module_dir: Path) -> None:
    """A fast trigger for ~3 intervals: one metrics payload per interval, not per batch."""
    spark = task.spark

    def run() -> None:
        q = (spark.readStream.format("rate").option("rowsPerSecond", 50).load()
             .writeStream.format("noop").queryName("rate_noop")
             .trigger(processingTime="0 seconds")
             .option("checkpointLocation", _checkpoint(module_dir)).start())
        time.sleep(3 * INTERVAL + 0.5)
        q.stop()

    batch = task.run(run)
    assert batch.tfs == [], batch.summary()  # rate -> noop: no datasets
    reports = _stream_metrics(batch, "rate_noop")
    ran = sum(r["batches"] for r in reports)
    end = reports[-1]
    assert end["run_batches"] == ran, reports
    assert ran > len(reports), reports  # more micro-batches than payloads ...
    # ... at most one per interval, plus the end's
    assert 2 <= len(reports) <= int(end["run_seconds"] / INTERVAL) + 1, reports
    assert all(r["interval_seconds"] >= INTERVAL for r in reports[:-1]), reports


def test_task_counts_streams(task: Task) -> None:
    """Last: the task's end carries the streaming runs and the failed one."""
    import definity_spark

    definity_spark.deactivate(task.spark, timeout=60)
    bodies = task.reader.bodies(task.task_id)
    metrics = {m["metric_type"]: m["value"] for ep, body in bodies if ep == "/log/metrics"
               for m in body["metrics"] if m["asset_type"] == "task"}
    assert metrics["failed_streams"] == 1, metrics
    assert metrics["streaming_queries"] >= 5, metrics
