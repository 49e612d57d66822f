"""The write commands: everything the plugin knows about each, one entry per Spark command.

``COMMANDS`` maps a Spark node class (simple name) to a ``Command``: which values the
fact reader reads from the command node (``reads``: accessor paths, evaluated inside the
JVM by ``FactGatherer.java`` or through py4j by ``spark/facts.py``, both from this table),
how those values and the node's JSON become its target (``build``), how the target is
named (``target``), where its row counts come from (``metrics``), and how its nested
executions fold into one transformation (``wrapper``, ``light``, ``named_by_nested``).
Adding a Spark command is one entry here plus one recorded fixture.

Pure: no py4j. Simple names, because the same class moved packages between Spark versions
(the Hive commands), the simple name did not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from definity_spark.lineage import naming
from definity_spark.lineage.facts import Attr, CommandFacts, LeafFacts

# How a read's final value is rendered (the same on both sides of the reader):
STR = "str"  # String.valueOf / str()
OPTION = "option"  # a scala.Option: its value's string, or None
CLASS = "class"  # the value's class name
SCHEMA = "schema"  # a StructType: its JSON (parsed)
STRINGS = "strings"  # a String[] or Seq: a list of strings
QUALIFIED = "qualified"  # an Option of a path, qualified as Spark does (the local fs when
# the command's ``isLocal``), for a path written without a scheme


@dataclass(frozen=True)
class Read:
    """One value read from the command node: ``path`` is a chain of public methods without
    arguments or with one string argument (``options.get(url)``); a method missing on this
    Spark version, or one that throws, gives None."""

    key: str
    path: str
    kind: str = STR


# every command's written query schema, where the command has a query
QUERY_SCHEMA = Read("query_schema", "query.schema", SCHEMA)
MODE = Read("mode", "mode")
_V2_RELATION = (  # a DataSourceV2Relation in the command's `table`
    Read("relation", "table", CLASS),
    Read("catalog", "table.catalog.get.name"),
    Read("namespace", "table.identifier.get.namespace", STRINGS),
    Read("name", "table.identifier.get.name"),
    Read("table_name", "table.table.name"),
    Read("table_schema", "table.schema", SCHEMA),
)
_V2_WRITE = _V2_RELATION + (
    Read("table_cls", "table.table", CLASS),
    Read("data_path", "table.table.deltaLog.dataPath"),  # Delta: the table's location
    QUERY_SCHEMA,
)
# a CTAS that does nothing when the table exists: mode Ignore (saveAsTable's "ignore")
MODE_IF_EXISTS = Read("ignore_if_exists", "ignoreIfExists")
_V2_IDENTIFIER = (  # a ResolvedIdentifier in the command's `name`
    Read("ident", "name", CLASS),
    Read("catalog", "name.catalog.name"),
    Read("namespace", "name.identifier.namespace", STRINGS),
    Read("name", "name.identifier.name"),
)

Table = tuple[Any, tuple[str, ...], str]
Values = Mapping[str, Any]


# -- builders: the command's read values and JSON -> CommandFacts -------------------------

def _simple(cls: Any) -> str:
    text = str(cls or "")
    name = text.rsplit(".", 1)[-1]
    return name[:-1] if name.endswith("$") else name


def table_from_json(ct: Any) -> Table | None:
    """(catalog, (database,), table) from a JSON ``CatalogTable`` / ``TableIdentifier``."""
    if not isinstance(ct, dict):
        return None
    ident = ct.get("identifier", ct)
    if not isinstance(ident, dict) or "table" not in ident:
        return None
    db = ident.get("database")
    return (ident.get("catalog"), (db,) if db else (), str(ident["table"]))


def string_seq(value: Any) -> list[str]:
    """A ``Seq[String]`` as ``toJSON`` writes it: a list, or one string ``"[a, b]"``."""
    if value is None:
        return []
    if isinstance(value, str):
        inner = value.strip()
        if inner.startswith("[") and inner.endswith("]"):
            inner = inner[1:-1]
        return [p.strip() for p in inner.split(",") if p.strip()]
    return [str(x) for x in value]


def attr_names(value: Any) -> list[str]:
    """Names of the attributes of a JSON list of expression trees (``partitionColumns``)."""
    out = []
    for tree in value or ():
        if isinstance(tree, list) and tree and isinstance(tree[0], dict) \
                and "id" in (tree[0].get("exprId") or {}):
            out.append(str(tree[0].get("name")))
    return out


def _file_write(c: CommandFacts, head: dict[str, Any], v: Values) -> None:
    c.output_path = v.get("output_path")
    c.mode = v.get("mode")
    ct = head.get("catalogTable")
    c.table = table_from_json(ct)
    if isinstance(ct, dict):
        c.table_schema = ct.get("schema")
    c.partition_columns = attr_names(head.get("partitionColumns"))
    if v.get("provider") is not None:
        c.provider = str(v["provider"]).lower()


def _catalog_table(field: str, with_mode: bool) -> Callable[..., None]:
    def build(c: CommandFacts, head: dict[str, Any], v: Values) -> None:
        ct = head.get(field)
        c.table = table_from_json(ct)
        if isinstance(ct, dict):
            c.table_schema = ct.get("schema")
            c.partition_columns = string_seq(ct.get("partitionColumnNames"))
        if with_mode:
            c.mode = v.get("mode")
    return build


def _datasource(c: CommandFacts, head: dict[str, Any], v: Values) -> None:
    c.mode = v.get("mode")
    provider_cls = str(v.get("provider_cls") or "")
    c.provider = v.get("provider") or provider_cls
    if "jdbc" in provider_cls.lower():
        c.jdbc_url, c.jdbc_table = v.get("url"), v.get("dbtable")
    elif "kafka010" in provider_cls:  # a topic per row (no "topic" option): no target
        c.kafka_servers, c.kafka_topic = v.get("kafka_servers"), v.get("kafka_topic")
    else:
        c.output_path = v.get("path")


def _relation(c: CommandFacts, head: dict[str, Any], v: Values) -> None:
    if _simple(v.get("relation")) == "JDBCRelation":
        c.jdbc_url, c.jdbc_table = v.get("url"), v.get("dbtable")
    rel = head.get("logicalRelation")
    c.table = table_from_json((rel or [{}])[0].get("catalogTable")
                              if isinstance(rel, list) else None)


def _directory(c: CommandFacts, head: dict[str, Any], v: Values) -> None:
    c.output_path = v.get("output_path")


def _v2_relation(c: CommandFacts, head: dict[str, Any], v: Values) -> None:
    if _simple(v.get("relation")) == "DataSourceV2Relation":
        name = v.get("name") if v.get("name") is not None else v.get("table_name")
        c.table = (v.get("catalog"), tuple(v.get("namespace") or ()), str(name))
        c.table_schema = v.get("table_schema")


def _v2_identifier(c: CommandFacts, head: dict[str, Any], v: Values) -> None:
    if _simple(v.get("ident")) == "ResolvedIdentifier":
        c.table = (v.get("catalog"), tuple(v.get("namespace") or ()), str(v.get("name")))
    if str(v.get("ignore_if_exists")).lower() == "true":
        c.mode = "Ignore"


def _v2_write(c: CommandFacts, head: dict[str, Any], v: Values) -> None:
    """A V2 write: its table; a ``format.`path``` table (``INSERT INTO delta.`/p```) is
    its path, as Delta resolves it."""
    _v2_relation(c, head, v)
    if c.table is not None and v.get("data_path") and naming.path_table(*c.table):
        c.table, c.output_path = None, v["data_path"]
    # a staged table exists only inside an atomic CTAS/RTAS: this write is its data
    c.staged = _simple(v.get("table_cls")).startswith("Staged")


def _row_level(c: CommandFacts, head: dict[str, Any], v: Values) -> None:
    """Delta's MERGE/UPDATE/DELETE: the target by its catalog table, else its path; the
    schema after the command (MERGE's migrated schema: with schema evolution)."""
    c.table = table_from_json(head.get("catalogTable"))
    if c.table is None:
        c.output_path = v.get("output_path")
    c.table_schema = v.get("migrated_schema") or v.get("table_schema")


def _clone(c: CommandFacts, head: dict[str, Any], v: Values) -> None:
    """Delta's CREATE TABLE ... CLONE (a ``CreateDeltaTableCommand`` whose query is a
    ``CloneTableCommand``; without one it is DDL: no target). Its source is no plan
    leaf: the read source table is the input."""
    if _simple(v.get("query_cls")) != "CloneTableCommand":
        return
    _catalog_table("table", with_mode=False)(c, head, v)
    c.table_schema = v.get("table_schema") or c.table_schema
    source = LeafFacts(cls=str(v.get("source_cls")), output=[
        Attr(str(f.get("name")), -1, f.get("type"))
        for f in (v.get("source_schema") or {}).get("fields", ())])
    ident = parse_identifier(v.get("source_table"))
    if ident is not None:
        source.table = ident
    elif v.get("source_path"):
        source.paths = [str(v["source_path"])]
    c.sources = [source]


def parse_identifier(text: Any) -> Table | None:
    """A ``TableIdentifier``'s ``toString`` (```spark_catalog`.`db`.`t```) as a table."""
    if not text:
        return None
    parts = [p.replace("``", "`") for p in re.findall(r"`((?:[^`]|``)*)`", str(text))]
    if not parts:
        parts = str(text).split(".")
    if len(parts) == 1:
        return (None, (), parts[0])
    catalog = parts[0] if len(parts) == 3 else None
    return (catalog, tuple(parts[-2:-1]), parts[-1])


def _generic(c: CommandFacts, head: dict[str, Any], v: Values) -> None:
    """A write the table does not know (a format's own ``DataWritingCommand`` or V2 write):
    whatever names its target (a V2 table, a catalog table, an output path)."""
    c.generic = True
    _v2_relation(c, head, v)
    if c.table is None:
        c.table = parse_identifier(v.get("table_ident") or v.get("catalog_table"))
    if c.table is None:
        c.output_path = v.get("output_path")


def _nothing(c: CommandFacts, head: dict[str, Any], v: Values) -> None:
    """Rewritten by the analyzer where the table supports it (ReplaceData, WriteDelta)."""


@dataclass(frozen=True)
class Command:
    """Everything about one write command; see the module docstring.

    target: ``auto`` (catalog table, else JDBC, else path), ``path`` or ``table``.
    wrapper: an outer command that may run the data write as a nested execution (CTAS,
    saveAsTable; V1-fallback V2 writes, JDBC writes through ``foreachPartition``): its tf
    takes its name from here and its metrics from the nested execution.
    light: the field of its CatalogTable: once its nested write was read in full (with
    the query), the command itself is read without its query ("light").
    named_by_nested: its own name may be less qualified than its nested write's (Spark 4's
    saveAsTable names the table as the user wrote it; INSERT OVERWRITE DIRECTORY has the
    path as written): the nested write's qualified name wins.
    metrics: ``plan`` (the executed write node's, else the rows of its query), or
    ``committed`` (also what the table format committed, where the plan counted no rows:
    Iceberg's snapshot summary, Delta's commit operation metrics).
    metric_names: metric type -> the node's metrics summed into it (default
    ``PLAN_METRICS``; Delta's row-level commands name their own).
    rows_from_nested: the function names of the nested callbacks whose query's rows are
    this write's rows (a JDBC write sends its rows through ``foreachPartition``, Delta
    writes its files in ``deltaTransactionalWrite``).
    query_fields: the command's fields that hold the plans it reads, where its query is
    not a child (CTAS: ``query``; Delta's MERGE: ``source`` and ``target``).
    quality_names: accessor paths (as ``Read.path``) of its target's table name or path,
    for the data quality rule (``spark/QualityRule.java``), which measures the columns of
    its ``query`` before it runs; empty: its writes are not measured.
    """

    build: Callable[[CommandFacts, dict[str, Any], Values], None]
    reads: tuple[Read, ...] = ()
    target: str = "auto"
    wrapper: bool = False
    light: str | None = None
    named_by_nested: bool = False
    metrics: str = "plan"
    metric_names: Mapping[str, tuple[str, ...]] | None = None
    rows_from_nested: tuple[str, ...] = ()
    query_fields: tuple[str, ...] = ("query",)
    quality_names: tuple[str, ...] = ()


# Spark's write metrics -> metric types (docs/metrics.md), for every command that names
# none of its own
PLAN_METRICS: Mapping[str, tuple[str, ...]] = {
    "cnt": ("numOutputRows",),
    "write_bytes": ("numOutputBytes",),
    "write_files": ("numFiles",),
    "write_partitions": ("numParts",),
    "files_removed": ("numRemovedFiles",),
}
# Delta's row-level commands count what they wrote in their own metrics; cnt is every row
# physically written (copied rows too, as Delta's committed numOutputRows)
_DELTA_FILES = {"write_files": ("numAddedFiles",), "files_removed": ("numRemovedFiles",),
                "write_bytes": ("numAddedBytes",)}
_MERGE_METRICS = {
    "cnt": ("numTargetRowsInserted", "numTargetRowsUpdated", "numTargetRowsCopied"),
    "rows_inserted": ("numTargetRowsInserted",), "rows_updated": ("numTargetRowsUpdated",),
    "rows_deleted": ("numTargetRowsDeleted",), "write_files": ("numTargetFilesAdded",),
    "files_removed": ("numTargetFilesRemoved",), "write_bytes": ("numTargetBytesAdded",)}
_UPDATE_METRICS = {"cnt": ("numUpdatedRows", "numCopiedRows"),
                   "rows_updated": ("numUpdatedRows",), **_DELTA_FILES}
_DELETE_METRICS = {"cnt": ("numCopiedRows",), "rows_deleted": ("numDeletedRows",),
                   **_DELTA_FILES}
_TARGET_SCHEMA = Read("table_schema", "target.schema", SCHEMA)

_DELTA_WRITE = "deltaTransactionalWrite"  # Delta's nested execution that writes the files
_V2_WRITES = dict(wrapper=True, metrics="committed", rows_from_nested=(_DELTA_WRITE,))
_CTAS_V1 = dict(reads=(MODE, QUERY_SCHEMA), target="table", wrapper=True)
# the data quality rule's accessors of a target's name (Command.quality_names)
_TABLE_DESC = ("tableDesc.identifier.table",)
_V2_NAMES = ("table.identifier.get.name", "table.table.name")

COMMANDS: dict[str, Command] = {
    # v1 file writes: df.write.<fmt>(path), INSERT into a datasource table, and the inner
    # data write of every datasource / converted-Hive CTAS and saveAsTable
    "InsertIntoHadoopFsRelationCommand": Command(
        _file_write, reads=(Read("output_path", "outputPath"), MODE,
                            Read("provider", "fileFormat"), QUERY_SCHEMA),
        quality_names=("catalogTable.get.identifier.table", "outputPath")),
    "InsertIntoHiveTable": Command(_catalog_table("table", with_mode=False),
                                   reads=(QUERY_SCHEMA,), target="table",
                                   quality_names=("table.identifier.table",)),
    "CreateDataSourceTableAsSelectCommand": Command(
        _catalog_table("table", with_mode=True), light="table",
        quality_names=("table.identifier.table",), **_CTAS_V1),
    "CreateHiveTableAsSelectCommand": Command(
        _catalog_table("tableDesc", with_mode=True), light="tableDesc",
        quality_names=_TABLE_DESC, **_CTAS_V1),
    "OptimizedCreateHiveTableAsSelectCommand": Command(
        _catalog_table("tableDesc", with_mode=True), light="tableDesc",
        quality_names=_TABLE_DESC, **_CTAS_V1),
    # Spark 4 saveAsTable: names the table as written; the nested CTAS qualifies it
    "SaveAsV1TableCommand": Command(
        _catalog_table("tableDesc", with_mode=True), light="tableDesc", named_by_nested=True,
        quality_names=_TABLE_DESC, **_CTAS_V1),
    # df.write.format("jdbc"/"delta"/other).save(): the datasource writes itself
    "SaveIntoDataSourceCommand": Command(
        _datasource, wrapper=True, rows_from_nested=("foreachPartition", _DELTA_WRITE),
        metrics="committed",
        reads=(MODE, Read("provider_cls", "dataSource", CLASS),
               Read("provider", "dataSource.shortName"),
               Read("url", "options.get(url)", OPTION),
               Read("dbtable", "options.get(dbtable)", OPTION),
               Read("path", "options.get(path)", QUALIFIED),
               Read("kafka_servers", "options.get(kafka.bootstrap.servers)", OPTION),
               Read("kafka_topic", "options.get(topic)", OPTION), QUERY_SCHEMA),
        quality_names=("options.get(dbtable)", "options.get(path)")),
    # INSERT INTO a table USING jdbc etc.
    "InsertIntoDataSourceCommand": Command(
        _relation, reads=(Read("relation", "logicalRelation.relation", CLASS),
                          Read("url", "logicalRelation.relation.jdbcOptions.url"),
                          Read("dbtable", "logicalRelation.relation.jdbcOptions.tableOrQuery"),
                          QUERY_SCHEMA)),
    # INSERT OVERWRITE [LOCAL] DIRECTORY
    "InsertIntoHiveDirCommand": Command(
        _directory, target="path",
        reads=(Read("output_path", "storage.locationUri", QUALIFIED), QUERY_SCHEMA),
        quality_names=("storage.locationUri.get",)),
    "InsertIntoDataSourceDirCommand": Command(
        _directory, target="path", wrapper=True, named_by_nested=True,
        reads=(Read("output_path", "storage.locationUri", QUALIFIED), QUERY_SCHEMA),
        quality_names=("storage.locationUri.get",)),
    # DataSource V2 (Iceberg, Delta's catalog tables, JDBC v2 catalog)
    "AppendData": Command(_v2_write, reads=_V2_WRITE, quality_names=_V2_NAMES, **_V2_WRITES),
    "OverwriteByExpression": Command(_v2_write, reads=_V2_WRITE, quality_names=_V2_NAMES,
                                     **_V2_WRITES),
    "OverwritePartitionsDynamic": Command(_v2_write, reads=_V2_WRITE, quality_names=_V2_NAMES,
                                          **_V2_WRITES),
    # row-level MERGE/UPDATE/DELETE: copy-on-write, merge-on-read
    "ReplaceData": Command(_v2_relation, reads=_V2_RELATION + (QUERY_SCHEMA,), target="table",
                           metrics="committed"),
    "WriteDelta": Command(_v2_relation, reads=_V2_RELATION + (QUERY_SCHEMA,), target="table",
                          metrics="committed"),
    "CreateTableAsSelect": Command(
        _v2_identifier, reads=_V2_IDENTIFIER + (MODE_IF_EXISTS, QUERY_SCHEMA), target="table",
        quality_names=("name.identifier.name",), **_V2_WRITES),
    "ReplaceTableAsSelect": Command(_v2_identifier, reads=_V2_IDENTIFIER + (QUERY_SCHEMA,),
                                    target="table", quality_names=("name.identifier.name",),
                                    **_V2_WRITES),
    "MergeIntoTable": Command(_nothing, target="table"),
    "UpdateTable": Command(_nothing, target="table"),
    "DeleteFromTable": Command(_nothing, target="table"),
    # Delta Lake's own commands: the plans they read are fields, their metrics their own
    "MergeIntoCommand": Command(
        _row_level, query_fields=("source", "target"), metric_names=_MERGE_METRICS,
        reads=(Read("output_path", "targetDeltaLog.dataPath"), _TARGET_SCHEMA,
               Read("migrated_schema", "migratedSchema.get", SCHEMA))),
    "UpdateCommand": Command(
        _row_level, query_fields=("target",), metric_names=_UPDATE_METRICS,
        reads=(Read("output_path", "tahoeFileIndex.deltaLog.dataPath"), _TARGET_SCHEMA)),
    "DeleteCommand": Command(
        _row_level, query_fields=("target",), metric_names=_DELETE_METRICS,
        reads=(Read("output_path", "deltaLog.dataPath"), _TARGET_SCHEMA)),
    "CreateDeltaTableCommand": Command(
        _clone, target="table", query_fields=(), metric_names={},
        reads=(Read("query_cls", "query.get", CLASS), Read("table_schema", "table.schema", SCHEMA),
               Read("source_cls", "query.get.sourceTable", CLASS),
               Read("source_table", "query.get.sourceTable.catalogTable.get.identifier"),
               Read("source_path", "query.get.sourceTable.dataPath"),
               Read("source_schema", "query.get.sourceTable.schema", SCHEMA))),
}
# a write the table does not know: reported with what these reads find, marked partial
GENERIC = "*"
COMMANDS[GENERIC] = Command(
    _generic, reads=_V2_RELATION + (Read("table_ident", "table.identifier"),
                                    Read("catalog_table", "catalogTable.get.identifier"),
                                    Read("output_path", "outputPath"), QUERY_SCHEMA))

# the function names of nested callbacks that carry a write's rows
ROWS_OF_NESTED_READS = frozenset(f for c in COMMANDS.values() for f in c.rows_from_nested)
# outer commands read without their query once their nested write was read in full
LIGHT_WRAPPERS = frozenset(name for name, c in COMMANDS.items() if c.light)


_STEP = re.compile(r"\.(?![^(]*\))")  # FactGatherer.STEP


def path_steps(path: str) -> list[str]:
    """The steps of a read's accessor path: split at the dots outside parentheses
    (``options.get(kafka.bootstrap.servers)`` is two steps)."""
    return _STEP.split(path)


def command_facts(name: str, head: dict[str, Any], values: Values) -> CommandFacts:
    """The command's facts from its JSON (``head``: the node's own fields) and the values
    its ``reads`` gave."""
    c = CommandFacts(cls=str(head.get("class")))
    command = COMMANDS.get(name)
    if command is not None:
        command.build(c, head, values)
        schema = values.get("query_schema")
        if schema is not None:
            c.query_schema = schema
    return c


def quality_spec() -> str:
    """The commands whose writes the data quality rule measures, as ``QualityRule`` takes
    them: a line per command, its simple name, then its ``quality_names``, tab-separated."""
    return "\n".join("\t".join((name,) + c.quality_names)
                     for name, c in COMMANDS.items() if c.quality_names)


def spec() -> str:
    """The table's reads as ``FactGatherer`` takes them: a line per command, its simple
    name, the field of its CatalogTable for a light read (or ``-``), its query fields
    (comma-separated, or ``-``), then its reads as ``key:kind:path``, tab-separated."""
    lines = []
    for name, c in COMMANDS.items():
        reads = [f"{r.key}:{r.kind}:{r.path}" for r in c.reads]
        lines.append("\t".join([name, c.light or "-", ",".join(c.query_fields) or "-"]
                               + reads))
    return "\n".join(lines)
