"""Plan facts: what the fact reader learnt about one finished query, as plain data.

``spark/facts.py`` fills these from a live ``QueryExecution`` (``from_jobject``); tests
build them from recorded JSON (``QueryFacts.from_json``, fixtures in
``tests/fixtures/plans``). The extraction rules (``rules.py``) only ever see these objects,
so a rule can be unit-tested in milliseconds without a JVM.

The analyzed plan is kept as Spark's own ``TreeNode.toJSON()`` output (a flat pre-order
list of node dicts) because it carries every expression id the columns rule needs; what
that JSON drops (file paths, JDBC urls, V2 identifiers, save modes) is read with accessors
into ``LeafFacts`` / ``CommandFacts``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FACTS_VERSION = 1

# Iceberg / Spark metadata columns: never user columns (also marked ``Attr.metadata_col``
# where Spark's attribute metadata says so)
METADATA_COLUMNS = frozenset({
    "_file", "_pos", "_spec_id", "_partition", "_deleted", "_change_type",
    "_change_ordinal", "_commit_snapshot_id", "_row_id", "_last_updated_sequence_number",
    "_metadata", "_commit_version", "_commit_timestamp",
})


@dataclass
class Attr:
    """One output attribute of a relation: name, expression id, Spark JSON type."""

    name: str
    expr_id: int
    data_type: Any = None
    metadata_col: bool = False  # Spark / Iceberg metadata column (_file, _pos, ...)


@dataclass
class LeafFacts:
    """A leaf of the analyzed plan (or of one of its subqueries): a possible input."""

    cls: str  # Spark node class name, e.g. org.apache.spark...LogicalRelation
    output: list[Attr] = field(default_factory=list)
    relation_cls: str | None = None  # BaseRelation class of a LogicalRelation
    paths: list[str] = field(default_factory=list)  # HadoopFsRelation root paths
    # catalog table: (catalog, namespace..., table); catalog None for v1 identifiers
    table: tuple[str | None, tuple[str, ...], str] | None = None
    jdbc_url: str | None = None
    jdbc_table: str | None = None
    # a scan of the executed plan (QueryFacts.scans): what it read (read_rows, ...) and,
    # for a DataSource V2 scan, its table's name as the table gives it
    scan_metrics: dict[str, float] = field(default_factory=dict)
    v2_name: str | None = None
    # Kafka (a streaming source, a batch read or write): bootstrap servers as given, and
    # the topics (subscribe, assign); ``kafka_pattern`` a subscribePattern
    kafka_servers: str | None = None
    kafka_topics: list[str] = field(default_factory=list)
    kafka_pattern: str | None = None


@dataclass
class CommandFacts:
    """What a write command's JSON drops: target location, mode, written schema."""

    cls: str
    output_path: str | None = None
    mode: str | None = None
    table: tuple[str | None, tuple[str, ...], str] | None = None
    jdbc_url: str | None = None
    jdbc_table: str | None = None
    kafka_servers: str | None = None  # a Kafka write: bootstrap servers, topic option
    kafka_topic: str | None = None
    provider: str | None = None  # datasource short name / class (SaveIntoDataSource)
    query_schema: dict[str, Any] | None = None  # StructType JSON of the written query
    table_schema: dict[str, Any] | None = None  # StructType JSON of the target table
    partition_columns: list[str] = field(default_factory=list)
    staged: bool = False  # a V2 write to a staged table: the data of an atomic CTAS/RTAS
    generic: bool = False  # a write command the rules table does not know (partial)
    # what the command reads that is no plan leaf (Delta's CLONE: its source table)
    sources: list[LeafFacts] = field(default_factory=list)


@dataclass
class QueryFacts:
    """Everything the rules need about one QueryExecutionListener callback."""

    func_name: str
    succeeded: bool
    error: str | None = None
    duration_ns: int | None = None
    spark_version: str | None = None
    qe_id: int | None = None
    execution_id: int | None = None
    root_execution_id: int | None = None
    description: str | None = None  # SQL execution description (call site or job desc)
    root_description: str | None = None  # description of the root execution (nested)
    sql_text: str | None = None  # text given to spark.sql(...), when known
    plan: list[dict[str, Any]] | None = None  # analyzed plan, TreeNode.toJSON() form
    leaves: list[LeafFacts] = field(default_factory=list)
    command: CommandFacts | None = None
    write_metrics: dict[str, float] = field(default_factory=dict)
    partial: bool = False  # the reader stopped early (time budget / plan size)
    read_error: str | None = None  # why the reader could not read the plan
    # the scans of the executed plan, with what each read (per-input metrics)
    scans: list[LeafFacts] = field(default_factory=list)
    # how the SQL execution ran (jobs, stages, tasks, task metrics summed, skew), from
    # Spark's status stores: metric_type -> value (docs/metrics.md)
    run: dict[str, float] = field(default_factory=dict)
    # the data quality measures Spark observed in the write's own pass (QualityRule.java;
    # lineage/quality.py): the rule's alias -> value (None: no value, e.g. a NaN)
    observed: dict[str, float | None] = field(default_factory=dict)

    @property
    def root_class(self) -> str | None:
        if self.command is not None:
            return self.command.cls
        if self.plan:
            return str(self.plan[0].get("class"))
        return None

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["facts_version"] = FACTS_VERSION
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> QueryFacts:
        data = dict(body)
        data.pop("facts_version", None)
        data["leaves"] = [_leaf_from_json(x) for x in data.get("leaves") or ()]
        data["scans"] = [_leaf_from_json(x) for x in data.get("scans") or ()]
        if data.get("command") is not None:
            cmd = dict(data["command"])
            cmd["table"] = _table_tuple(cmd.get("table"))
            cmd["sources"] = [_leaf_from_json(x) for x in cmd.get("sources") or ()]
            data["command"] = CommandFacts(**cmd)
        return cls(**data)


def _table_tuple(value: Any) -> tuple[str | None, tuple[str, ...], str] | None:
    if value is None:
        return None
    catalog, namespace, name = value
    return (catalog, tuple(namespace), name)


def _leaf_from_json(body: dict[str, Any]) -> LeafFacts:
    data = dict(body)
    data["output"] = [Attr(**a) for a in data.get("output") or ()]
    data["table"] = _table_tuple(data.get("table"))
    return LeafFacts(**data)
