"""Structured Streaming without a JVM: Kafka names, a run's items as the JVM's StreamWatch
answers them, through the extraction worker and the task reporter, into payloads."""

from __future__ import annotations

import json
from typing import Any

from definity_spark import wire
from definity_spark.lineage import naming, streams
from definity_spark.lineage.facts import Attr, LeafFacts
from definity_spark.lineage.rules import Options
from definity_spark.spark.worker import ExtractionWorker, StreamItem
from definity_spark.task import TaskReporter

RUN = {"id": "q-1", "run_id": "r-1", "name": "buys"}
SR = "org.apache.spark.sql.execution.streaming.StreamingRelation"


def _attr(name: str, i: int, t: str = "integer") -> list[dict[str, Any]]:
    return [{"class": "org.apache.spark.sql.catalyst.expressions.AttributeReference",
             "num-children": 0, "name": name, "dataType": t, "nullable": True,
             "metadata": {}, "exprId": {"id": i, "jvmId": "j"}, "qualifier": []}]


# Project [id] <- Filter (kind = 'buy') <- StreamingRelation [id, kind, amount]
PLAN = [
    {"class": "org.apache.spark.sql.catalyst.plans.logical.Project", "num-children": 1,
     "projectList": [_attr("id", 1)]},
    {"class": "org.apache.spark.sql.catalyst.plans.logical.Filter", "num-children": 1,
     "condition": [{"class": "org.apache.spark.sql.catalyst.expressions.EqualTo",
                    "num-children": 2, "left": 0, "right": 1},
                   _attr("kind", 2, "string")[0],
                   {"class": "org.apache.spark.sql.catalyst.expressions.Literal",
                    "num-children": 0, "value": "buy", "dataType": "string"}]},
    {"class": SR, "num-children": 0, "dataSource": None, "sourceName": "FileSource[/in]",
     "output": [_attr("id", 1), _attr("kind", 2, "string"), _attr("amount", 3, "double")]},
]
SCHEMA = {"type": "struct", "fields": [
    {"name": "id", "type": "integer", "nullable": True, "metadata": {}}]}


def _start(sink: dict[str, Any], stream_leaf: dict[str, Any]) -> str:
    # as StreamWatch writes it: "stream" first
    head = {"stream": "start", **RUN, "sink": sink, "schema": SCHEMA,
            "stream_leaves": [stream_leaf], "facts": {"leaves": [[{"cls": SR}]]}}
    return json.dumps(head) + "\n" + json.dumps(PLAN)


def _item(kind: str, body: dict[str, Any] | None = None) -> str:
    head = {"stream": kind, **RUN}
    if body is not None:
        head["body"] = body
    return json.dumps(head)


class Recorder:
    def __init__(self) -> None:
        self.payloads: list[Any] = []

    def submit(self, payload: Any) -> bool:
        self.payloads.append(payload)
        return True

    def submit_many(self, payloads: Any) -> int:
        self.payloads.extend(payloads)
        return len(payloads)

    def bodies(self, endpoint: str) -> list[dict[str, Any]]:
        return [p.to_json() for p in self.payloads if p.endpoint == endpoint]


def _worker() -> tuple[ExtractionWorker, TaskReporter, Recorder]:
    delivery = Recorder()
    reporter = TaskReporter(delivery, "t-1", "app", "task")
    reporter.start()
    worker = ExtractionWorker(reader=None, sink=reporter,  # type: ignore[arg-type]
                              options=Options())
    return worker, reporter, delivery


def _feed(worker: ExtractionWorker, *texts: str) -> None:
    for text in texts:
        item = worker._callback_of(text)
        assert isinstance(item, StreamItem)
        worker._stream(item)


INTERVAL = {"interval_ms": 60000, "batches": 40, "input_rows": 400,
            "input_rows_per_second": 6.7, "processed_rows_per_second": 250.0,
            "batch_duration_p50_ms": 35, "batch_duration_max_ms": 90, "state_rows": 12,
            "state_memory_bytes": 4096, "watermark_delay_ms": 10000,
            "source_offsets_behind_latest": 3}


def test_file_stream_one_tf_then_metrics_per_interval_and_end() -> None:
    worker, reporter, delivery = _worker()
    _feed(worker, _start({"cls": "org.apache.spark.sql.execution.streaming.FileStreamSink",
                          "path": "file:/out/", "partition_columns": []},
                         {"format": "json", "paths": ["file:/in"]}))
    assert delivery.bodies(wire.TF) == []  # nothing known is sent at start
    _feed(worker, _item("data", {"batch_id": 0}), _item("metrics", INTERVAL))
    tf, = delivery.bodies(wire.TF)
    assert tf["output"] == {"name": "file:/out"}
    assert tf["input_datasets"] == {"file:/in": {"columns": ["id", "kind"]}}
    assert tf["stream"] == RUN
    assert tf["query_str"] == "DataStreamWriter.start(file:/out) queryName=buys"
    ds, = delivery.bodies(wire.DATASET)
    assert [m["info_value"] for m in ds["metadata"]] == ["id-INTEGER"]
    metrics, = delivery.bodies(wire.METRICS)
    assert metrics["tf_id"] == tf["tf_id"]
    by_type = {m["metric_type"]: m["value"] for m in metrics["metrics"]}
    assert {m["asset_name"] for m in metrics["metrics"]} == {"file:/out"}
    assert {m["asset_type"] for m in metrics["metrics"]} == {"stream"}
    assert by_type == {"interval_seconds": 60, "batches": 40, "input_rows": 400,
                       "input_rows_per_second": 6.7, "processed_rows_per_second": 250,
                       "batch_duration_p50_ms": 35, "batch_duration_max_ms": 90,
                       "state_rows": 12, "state_memory_bytes": 4096,
                       "watermark_delay_ms": 10000, "source_offsets_behind_latest": 3}
    end = dict(INTERVAL, run_batches=41, run_input_rows=401, run_seconds=61.5,
               run_batch_duration_max_ms=90, error=None)
    _feed(worker, _item("end", end))
    last = delivery.bodies(wire.METRICS)[-1]
    values = {m["metric_type"]: m["value"] for m in last["metrics"]}
    assert values["run_batches"] == 41 and values["run_failed"] == 0
    assert worker._streams == {}  # the run is forgotten at its end
    assert reporter.counts()["streams"] == 1 and reporter.counts()["failed_streams"] == 0


def test_failed_run_counted_and_sink_less_run_named_by_query() -> None:
    worker, reporter, delivery = _worker()
    memory = {"cls": "org.apache.spark.sql.execution.streaming.sources.MemorySink"}
    _feed(worker, _start(memory, {"format": "rate"}), _item("data", {"batch_id": 0}),
          _item("end", {"interval_ms": 5, "batches": 1, "input_rows": 3, "run_batches": 1,
                        "run_input_rows": 3, "run_seconds": 1, "error": "boom"}))
    assert delivery.bodies(wire.TF) == []  # memory sink, rate source: no datasets
    metrics, = delivery.bodies(wire.METRICS)
    assert {m["asset_name"] for m in metrics["metrics"]} == {"buys"}
    assert "tf_id" not in metrics
    assert {m["metric_type"]: m["value"] for m in metrics["metrics"]}["run_failed"] == 1
    reporter.end()
    task = delivery.bodies(wire.METRICS)[-1]
    values = {m["metric_type"]: m["value"] for m in task["metrics"]}
    assert values["streaming_queries"] == 1 and values["failed_streams"] == 1


def test_kafka_stream_to_kafka() -> None:
    worker, _, delivery = _worker()
    sink = {"cls": "org.apache.spark.sql.kafka010.KafkaSourceProvider$KafkaTable",
            "kafka_servers": "B2:9092, b1:9092", "kafka_topics": "out"}
    _feed(worker, _start(sink, {"format": "kafka", "kafka_servers": "b1:9092,b2:9092",
                                "kafka_topics": "in1,in2"}),
          _item("data", {"batch_id": 3}))
    tf, = delivery.bodies(wire.TF)
    assert tf["output"] == {"name": "kafka://b1:9092,b2:9092/out"}
    assert list(tf["input_datasets"]) == ["kafka://b1:9092,b2:9092/in1",
                                          "kafka://b1:9092,b2:9092/in2"]
    ds, = delivery.bodies(wire.DATASET)
    assert ds["ds_type"] == "kafka"


def test_stream_error_item_and_unknown_run_are_ignored() -> None:
    worker, _, delivery = _worker()
    item = worker._callback_of('{"stream_error":"java.lang.IllegalStateException: x"}')
    assert isinstance(item, StreamItem)
    worker._stream(item)
    _feed(worker, _item("metrics", INTERVAL))  # a run whose start was never read
    assert [p.endpoint for p in delivery.payloads] == [wire.TASK]  # the task's start only


def test_kafka_names() -> None:
    assert naming.kafka_name(" Broker-2:9092,broker-1:9092 ,broker-1:9092", "orders") == \
        "kafka://broker-1:9092,broker-2:9092/orders"
    assert naming.kafka_name("user:secret@h:9092", "t") == "kafka://h:9092/t"
    assert naming.kafka_topics("a, b,,c", None) == ["a", "b", "c"]
    assert naming.kafka_topics(None, '{"x": [0, 1], "y": [2]}') == ["x", "y"]
    assert naming.kafka_topics(None, "not json") == []
    leaf = LeafFacts(cls="org.apache.spark.sql.execution.datasources.LogicalRelation",
                     output=[Attr("value", 1)], kafka_servers="h:1",
                     kafka_topics=["a", "b"])
    assert naming.leaf_names(leaf) == ["kafka://h:1/a", "kafka://h:1/b"]
    pattern = LeafFacts(cls=SR, kafka_servers="h:1", kafka_pattern="a.*")
    assert naming.leaf_names(pattern) == []  # a pattern names no topic


def test_batch_write_linked_and_reported_once_per_output() -> None:
    worker, _, delivery = _worker()
    foreach = {"cls": "org.apache.spark.sql.execution.streaming.sources.ForeachBatchSink"}
    _feed(worker, _start(foreach, {"format": "json", "paths": ["file:/in"]}))
    from definity_spark.lineage.model import InputLineage, OutputLineage, WriteLineage
    from definity_spark.lineage.rules import WRITE, Outcome

    write = WriteLineage(output=OutputLineage("file:/all", "path", (("id", "INTEGER"),)),
                         inputs=(), query_str="DataFrameWriter.parquet(file:/all)")
    for _ in range(3):  # three micro-batches' writes of one output
        worker._batch_write("r-1", Outcome(WRITE, lineage=write, func_name="command"))
    tf, = delivery.bodies(wire.TF)
    assert tf["stream"] == RUN
    assert tf["input_datasets"] == {"file:/in": {"columns": ["id", "kind"]}}
    assert worker.stats["stream_batch_writes"] == 3
    assert worker.stats["stream_batch_repeats"] == 2
    assert isinstance(write.inputs, tuple) and InputLineage  # unchanged original


def test_interval_metrics_order_and_absent_values() -> None:
    assert streams.interval_metrics({"interval_ms": 1500, "batches": 0, "input_rows": 0},
                                    end=False) == {"interval_seconds": 1.5, "batches": 0.0,
                                                   "input_rows": 0.0}
    end = streams.interval_metrics({"batches": 1, "run_batches": 9}, end=True)
    assert end == {"batches": 1.0, "run_batches": 9.0, "run_failed": 0.0}


def test_a_table_source_without_identifier_is_named_by_the_tables_own_name() -> None:
    """readStream.format("iceberg").load("ice.db.events") gives Spark no identifier: the
    source is named by its table's name, as the batch read of the same table is; a table
    that is no table format's (rate, socket) or a path stays unnamed."""
    from definity_spark.spark.facts import _stream_leaf

    def named(extra: dict[str, Any]) -> list[str]:
        leaf = LeafFacts(cls="org.apache.spark.sql.catalyst.streaming.StreamingRelationV2")
        _stream_leaf(leaf, extra)
        return naming.leaf_names(leaf)

    iceberg = "org.apache.iceberg.spark.source.SparkTable"
    assert named({"v2_name": "ice.db.events", "table_cls": iceberg}) == ["ice.db.events"]
    assert named({"v2_name": "spark_catalog.Db.T", "table_cls": iceberg}) == ["db.t"]
    assert named({"v2_name": "db.t", "table_cls": iceberg}) == ["db.t"]
    assert named({"v2_name": "/data/ice/events", "table_cls": iceberg}) == []
    assert named({"v2_name": "RateStreamTable", "table_cls":
                  "org.apache.spark.sql.execution.streaming.sources.RateStreamTable"}) == []
