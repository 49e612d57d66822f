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
from typing import Any, Dict, List, Optional, Tuple

FACTS_VERSION = 1


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
    output: List[Attr] = field(default_factory=list)
    relation_cls: Optional[str] = None  # BaseRelation class of a LogicalRelation
    paths: List[str] = field(default_factory=list)  # HadoopFsRelation root paths
    # catalog table: (catalog, namespace..., table); catalog None for v1 identifiers
    table: Optional[Tuple[Optional[str], Tuple[str, ...], str]] = None
    jdbc_url: Optional[str] = None
    jdbc_table: Optional[str] = None
    scan_metrics: Dict[str, float] = field(default_factory=dict)


@dataclass
class CommandFacts:
    """What a write command's JSON drops: target location, mode, written schema."""

    cls: str
    output_path: Optional[str] = None
    mode: Optional[str] = None
    table: Optional[Tuple[Optional[str], Tuple[str, ...], str]] = None
    jdbc_url: Optional[str] = None
    jdbc_table: Optional[str] = None
    provider: Optional[str] = None  # datasource short name / class (SaveIntoDataSource)
    query_schema: Optional[Dict[str, Any]] = None  # StructType JSON of the written query
    table_schema: Optional[Dict[str, Any]] = None  # StructType JSON of the target table
    partition_columns: List[str] = field(default_factory=list)


@dataclass
class QueryFacts:
    """Everything the rules need about one QueryExecutionListener callback."""

    func_name: str
    succeeded: bool
    error: Optional[str] = None
    duration_ns: Optional[int] = None
    spark_version: Optional[str] = None
    qe_id: Optional[int] = None
    execution_id: Optional[int] = None
    root_execution_id: Optional[int] = None
    description: Optional[str] = None  # SQL execution description (call site or job desc)
    root_description: Optional[str] = None  # description of the root execution (nested)
    sql_text: Optional[str] = None  # text given to spark.sql(...), when known
    plan: Optional[List[Dict[str, Any]]] = None  # analyzed plan, TreeNode.toJSON() form
    leaves: List[LeafFacts] = field(default_factory=list)
    command: Optional[CommandFacts] = None
    write_metrics: Dict[str, float] = field(default_factory=dict)
    partial: bool = False  # the reader stopped early (time budget / plan size)
    read_error: Optional[str] = None  # why the reader could not read the plan

    @property
    def root_class(self) -> Optional[str]:
        if self.command is not None:
            return self.command.cls
        if self.plan:
            return str(self.plan[0].get("class"))
        return None

    def to_json(self) -> Dict[str, Any]:
        body = asdict(self)
        body["facts_version"] = FACTS_VERSION
        return body

    @classmethod
    def from_json(cls, body: Dict[str, Any]) -> QueryFacts:
        data = dict(body)
        data.pop("facts_version", None)
        data["leaves"] = [_leaf_from_json(x) for x in data.get("leaves") or ()]
        if data.get("command") is not None:
            cmd = dict(data["command"])
            cmd["table"] = _table_tuple(cmd.get("table"))
            data["command"] = CommandFacts(**cmd)
        return cls(**data)


def _table_tuple(value: Any) -> Optional[Tuple[Optional[str], Tuple[str, ...], str]]:
    if value is None:
        return None
    catalog, namespace, name = value
    return (catalog, tuple(namespace), name)


def _leaf_from_json(body: Dict[str, Any]) -> LeafFacts:
    data = dict(body)
    data["output"] = [Attr(**a) for a in data.get("output") or ()]
    data["table"] = _table_tuple(data.get("table"))
    return LeafFacts(**data)
