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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from definity_spark.lineage.facts import CommandFacts

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
    ``iceberg`` (also Iceberg's committed snapshot when the plan counted no rows).
    rows_from_nested: the function name of the nested callback whose query's rows are
    this write's rows (a JDBC write sends its rows through ``foreachPartition``).
    """

    build: Callable[[CommandFacts, dict[str, Any], Values], None]
    reads: tuple[Read, ...] = ()
    target: str = "auto"
    wrapper: bool = False
    light: str | None = None
    named_by_nested: bool = False
    metrics: str = "plan"
    rows_from_nested: str | None = None


_CTAS_V1 = dict(reads=(MODE, QUERY_SCHEMA), target="table", wrapper=True)

COMMANDS: dict[str, Command] = {
    # v1 file writes: df.write.<fmt>(path), INSERT into a datasource table, and the inner
    # data write of every datasource / converted-Hive CTAS and saveAsTable
    "InsertIntoHadoopFsRelationCommand": Command(
        _file_write, reads=(Read("output_path", "outputPath"), MODE,
                            Read("provider", "fileFormat"), QUERY_SCHEMA)),
    "InsertIntoHiveTable": Command(_catalog_table("table", with_mode=False),
                                   reads=(QUERY_SCHEMA,), target="table"),
    "CreateDataSourceTableAsSelectCommand": Command(
        _catalog_table("table", with_mode=True), light="table", **_CTAS_V1),
    "CreateHiveTableAsSelectCommand": Command(
        _catalog_table("tableDesc", with_mode=True), light="tableDesc", **_CTAS_V1),
    "OptimizedCreateHiveTableAsSelectCommand": Command(
        _catalog_table("tableDesc", with_mode=True), light="tableDesc", **_CTAS_V1),
    # Spark 4 saveAsTable: names the table as written; the nested CTAS qualifies it
    "SaveAsV1TableCommand": Command(
        _catalog_table("tableDesc", with_mode=True), light="tableDesc", named_by_nested=True,
        **_CTAS_V1),
    # df.write.format("jdbc"/other).save(): the datasource writes itself
    "SaveIntoDataSourceCommand": Command(
        _datasource, wrapper=True, rows_from_nested="foreachPartition",
        reads=(MODE, Read("provider_cls", "dataSource", CLASS),
               Read("provider", "dataSource.shortName"),
               Read("url", "options.get(url)", OPTION),
               Read("dbtable", "options.get(dbtable)", OPTION),
               Read("path", "options.get(path)", OPTION), QUERY_SCHEMA)),
    # INSERT INTO a table USING jdbc etc.
    "InsertIntoDataSourceCommand": Command(
        _relation, reads=(Read("relation", "logicalRelation.relation", CLASS),
                          Read("url", "logicalRelation.relation.jdbcOptions.url"),
                          Read("dbtable", "logicalRelation.relation.jdbcOptions.tableOrQuery"),
                          QUERY_SCHEMA)),
    # INSERT OVERWRITE [LOCAL] DIRECTORY
    "InsertIntoHiveDirCommand": Command(
        _directory, target="path",
        reads=(Read("output_path", "storage.locationUri", QUALIFIED), QUERY_SCHEMA)),
    "InsertIntoDataSourceDirCommand": Command(
        _directory, target="path", wrapper=True, named_by_nested=True,
        reads=(Read("output_path", "storage.locationUri", QUALIFIED), QUERY_SCHEMA)),
    # DataSource V2 (Iceberg, JDBC v2 catalog)
    "AppendData": Command(_v2_relation, reads=_V2_RELATION + (QUERY_SCHEMA,), target="table",
                          wrapper=True, metrics="iceberg"),
    "OverwriteByExpression": Command(_v2_relation, reads=_V2_RELATION + (QUERY_SCHEMA,),
                                     target="table", wrapper=True, metrics="iceberg"),
    "OverwritePartitionsDynamic": Command(_v2_relation, reads=_V2_RELATION + (QUERY_SCHEMA,),
                                          target="table", wrapper=True, metrics="iceberg"),
    # row-level MERGE/UPDATE/DELETE: copy-on-write, merge-on-read
    "ReplaceData": Command(_v2_relation, reads=_V2_RELATION + (QUERY_SCHEMA,), target="table",
                           metrics="iceberg"),
    "WriteDelta": Command(_v2_relation, reads=_V2_RELATION + (QUERY_SCHEMA,), target="table",
                          metrics="iceberg"),
    "CreateTableAsSelect": Command(_v2_identifier, reads=_V2_IDENTIFIER + (QUERY_SCHEMA,),
                                   target="table", wrapper=True),
    "ReplaceTableAsSelect": Command(_v2_identifier, reads=_V2_IDENTIFIER + (QUERY_SCHEMA,),
                                    target="table", wrapper=True),
    "MergeIntoTable": Command(_nothing, target="table"),
    "UpdateTable": Command(_nothing, target="table"),
    "DeleteFromTable": Command(_nothing, target="table"),
}

# the function names of nested callbacks that carry a write's rows
ROWS_OF_NESTED_READS = frozenset(c.rows_from_nested for c in COMMANDS.values()
                                 if c.rows_from_nested)
# outer commands read without their query once their nested write was read in full
LIGHT_WRAPPERS = frozenset(name for name, c in COMMANDS.items() if c.light)


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


def spec() -> str:
    """The table's reads as ``FactGatherer`` takes them: a line per command, its simple
    name, the field of its CatalogTable for a light read (or ``-``), then its reads as
    ``key:kind:path``, tab-separated."""
    lines = []
    for name, c in COMMANDS.items():
        reads = [f"{r.key}:{r.kind}:{r.path}" for r in c.reads]
        lines.append("\t".join([name, c.light or "-"] + reads))
    return "\n".join(lines)
