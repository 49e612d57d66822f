"""Structured Streaming: a query run's facts in, its transformation and metrics out (pure).

A streaming query run is one transformation: its sources are the inputs, its sink the
output (``stream_lineage``), sent when its first micro-batch that wrote data completes.
The writes a ``foreachBatch`` function makes are transformations of their own, linked to
the run (``link_batch_write``); a sink that is no dataset (memory, console, foreach,
foreachBatch) gives no transformation of the run itself. The run's metrics come from the
JVM already aggregated per interval (``StreamWatch.java``); ``interval_metrics`` names
them (docs/metrics.md, "Streaming").
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from definity_spark.lineage import columns, naming
from definity_spark.lineage.facts import METADATA_COLUMNS, LeafFacts, QueryFacts
from definity_spark.lineage.model import InputLineage, OutputLineage, StreamLink, WriteLineage
from definity_spark.lineage.rules import Options, _fields, _inputs, _partition_last, redact

logger = logging.getLogger("definity_spark.lineage")

STREAM_ASSET_TYPE = "stream"  # the asset_type of a streaming query's metrics
FOREACH_BATCH_SINK = "ForeachBatchSink"

# the JVM's interval summary (StreamWatch.Run.interval) -> metric types, in this order
INTERVAL_METRICS = (
    "batches", "input_rows", "input_rows_per_second", "processed_rows_per_second",
    "batch_duration_p50_ms", "batch_duration_max_ms", "state_rows", "state_memory_bytes",
    "watermark_delay_ms", "source_offsets_behind_latest",
)
# ... and at the run's end, of the whole run
RUN_METRICS = ("run_batches", "run_input_rows", "run_seconds", "run_batch_duration_max_ms")


@dataclass
class StreamSink:
    """Where a streaming query writes (``StreamWatch.sink``)."""

    cls: str
    path: str | None = None  # qualified (file sink, Delta by path)
    table: tuple[str | None, tuple[str, ...], str] | None = None  # toTable
    table_schema: dict[str, Any] | None = None
    partition_columns: list[str] = field(default_factory=list)
    kafka_servers: str | None = None
    kafka_topic: str | None = None  # None: a topic per row (its ``topic`` column)

    @property
    def foreach_batch(self) -> bool:
        return self.cls.rsplit(".", 1)[-1] == FOREACH_BATCH_SINK


@dataclass
class StreamFacts:
    """One streaming query run, as read when it started: ids, sink, what it writes, and
    its plan with its leaves (``query``: sources as ``LeafFacts``)."""

    id: str
    run_id: str
    name: str | None
    sink: StreamSink
    schema: dict[str, Any] | None  # StructType JSON of the rows it writes
    query: QueryFacts

    @property
    def link(self) -> StreamLink:
        return StreamLink(self.id, self.run_id, self.name or None)

    def to_json(self) -> dict[str, Any]:
        body = dataclasses.asdict(self)
        body["query"] = self.query.to_json()
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StreamFacts:
        sink = dict(body["sink"])
        if sink.get("table") is not None:
            catalog, namespace, name = sink["table"]
            sink["table"] = (catalog, tuple(namespace), name)
        return cls(id=body["id"], run_id=body["run_id"], name=body.get("name"),
                   sink=StreamSink(**sink), schema=body.get("schema"),
                   query=QueryFacts.from_json(body["query"]))


def sink_output(facts: StreamFacts, options: Options) -> OutputLineage | None:
    """The sink as a dataset (``docs/naming.md``), with the schema it reads back with;
    None for a sink that is no dataset."""
    sink = facts.sink
    written = _partition_last(_fields(facts.schema), sink.partition_columns)
    if sink.table is not None:
        schema = _partition_last(_fields(sink.table_schema), sink.partition_columns) \
            or written
        schema = [f for f in schema if f[0] not in METADATA_COLUMNS]
        return OutputLineage(naming.table_name(*sink.table), "table", tuple(schema))
    if sink.kafka_servers and sink.kafka_topic:
        return OutputLineage(naming.kafka_name(sink.kafka_servers, sink.kafka_topic), "kafka",
                             tuple(written))
    if sink.path:
        return OutputLineage(naming.path_name(sink.path, options.normalize_s3,
                                              options.trim_partition_dirs), "path",
                             tuple(written))
    return None


def stream_inputs(facts: StreamFacts, options: Options) -> tuple[InputLineage, ...]:
    """The datasets the query reads: its sources and any static table it joins, each
    with the columns it reads (as for a batch query)."""
    return _inputs(facts.query, options)[0]


def stream_lineage(facts: StreamFacts, options: Options) -> WriteLineage | None:
    """The run's own transformation; None when its sink is no dataset."""
    out = sink_output(facts, options)
    if out is None:
        return None
    column_lineage = None
    if options.column_lineage and facts.query.plan:
        try:
            column_lineage = columns.column_lineage(
                facts.query, [c for c, _ in out.schema],
                leaf_names=lambda leaf: _leaf_names(leaf, options))
        except Exception as exc:  # a plan shape the walk does not know: no columns
            logger.debug("stream column lineage unknown: %s", exc)
    what = "toTable" if facts.sink.table is not None else "start"
    query = f"DataStreamWriter.{what}({out.name})"
    if facts.name:
        query += f" queryName={facts.name}"
    return WriteLineage(output=out, inputs=stream_inputs(facts, options),
                        query_str=redact(query, options.redaction_regex) or query,
                        partial=facts.query.partial, column_lineage=column_lineage,
                        stream=facts.link)


def _leaf_names(leaf: LeafFacts, options: Options) -> list[str]:
    return naming.leaf_names(leaf, options.normalize_s3, options.trim_partition_dirs)


def asset_name(facts: StreamFacts, options: Options) -> str:
    """What a run's metrics are named by: its sink's dataset name, else the query's name,
    else its id (the id stays the same across restarts from the checkpoint)."""
    out = sink_output(facts, options)
    if out is not None:
        return out.name
    return facts.name or facts.id


def link_batch_write(lineage: WriteLineage, facts: StreamFacts,
                     inputs: tuple[InputLineage, ...]) -> WriteLineage:
    """A write of a ``foreachBatch`` function: the micro-batch it writes comes from the
    query's sources (``inputs``), which join its own inputs; linked to the run."""
    known = {i.name for i in lineage.inputs}
    extra = tuple(i for i in inputs if i.name not in known)
    return dataclasses.replace(lineage, inputs=lineage.inputs + extra, stream=facts.link)


def interval_metrics(body: dict[str, Any], end: bool) -> dict[str, float]:
    """The metrics of one interval summary (and, at the end, of the run), in a fixed
    order; a value Spark did not report is left out."""
    out: dict[str, float] = {}
    if "interval_ms" in body:
        out["interval_seconds"] = round(float(body["interval_ms"]) / 1000.0, 3)
    for name in INTERVAL_METRICS + (RUN_METRICS if end else ()):
        if body.get(name) is not None:
            out[name] = float(body[name])
    if end:
        out["run_failed"] = 1.0 if body.get("error") else 0.0
    return out
