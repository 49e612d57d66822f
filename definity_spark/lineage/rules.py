"""Extraction rules: one query's plan facts in, its lineage out (pure, no py4j).

``extract(facts, options)`` classifies a finished query as

* ``write``: one ``WriteLineage`` (output name/type/schema, inputs with columns, metrics,
  query text). Which commands write, and where their target and schema come from, is one
  table, ``commands.COMMANDS``, keyed by Spark node class name (OpenLineage's extractor
  manager idea): adding a Spark command is one entry plus one recorded fixture.
* ``read``: a read-only action (count, collect, show...) with the datasets it read.
* ``failed``: the query threw; it wrote nothing (a failed write is not a transformation).
* ``ignored``: DDL, SHOW, SET, an analysis failure, or a class no rule knows (logged at
  debug, never an error).

Nested executions (CTAS, saveAsTable) are paired afterwards by ``nesting.py``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from definity_spark.lineage import columns, naming, quality
from definity_spark.lineage.commands import COMMANDS, GENERIC, PLAN_METRICS, Command
from definity_spark.lineage.facts import METADATA_COLUMNS, CommandFacts, LeafFacts, QueryFacts
from definity_spark.lineage.model import InputLineage, OutputLineage, WriteLineage
from definity_spark.lineage.plan import PlanIndex, simple_name
from definity_spark.lineage.types import type_name

logger = logging.getLogger("definity_spark.lineage")

WRITE = "write"
READ = "read"
FAILED = "failed"
IGNORED = "ignored"


@dataclass(frozen=True)
class Options:
    """The settings the rules need (taken from ``Settings`` once, by the observer)."""

    normalize_s3: bool = True
    trim_partition_dirs: bool = True
    redaction_regex: str | None = None
    column_lineage: bool = True  # which input columns each written column comes from
    # the datasets and columns whose data quality is measured (lineage/quality.py)
    quality: tuple[quality.Entry, ...] = ()

    @classmethod
    def of(cls, settings: Any) -> Options:
        """The rules' options from resolved ``Settings``."""
        return cls(normalize_s3=settings.normalize_s3,
                   trim_partition_dirs=settings.trim_partition_dirs,
                   redaction_regex=settings.effective_redaction_regex,
                   column_lineage=settings.column_lineage,
                   quality=quality.parse(getattr(settings, "quality_columns", None)))


# actions that only read (funcName of the callback); anything else non-writing is ignored
READ_FUNCS = frozenset({
    "count", "collect", "collectToPython", "collectAsList", "head", "take", "tail",
    "toPandas", "collectAsArrowToPython", "toLocalIterator", "first", "show", "foreach",
    "foreachPartition", "toArrowBatchRdd", "collectAsArrowToR", "toJSON",
})


# callbacks of a table format's own work (Delta's log replay, checkpoints): never a read
# action nor a write, wherever they run
INTERNAL_FUNC_PREFIXES = ("Cache Delta Table State", "Delta checkpoint")

_WRITER_CALL = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*) at \S+:\d+$")
_SECRET = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?key"
    r"|credentials?)(\s*(?:=|:|\s)\s*)('[^']*'|\"[^\"]*\"|[^\s,;&)'\"]+)")
REDACTED = "*********(redacted)"


@dataclass(frozen=True)
class Outcome:
    """What one callback amounts to; ``nesting.NestedWrites`` pairs nested executions."""

    kind: str
    lineage: WriteLineage | None = None
    inputs: tuple[InputLineage, ...] = ()
    func_name: str = ""
    error: str | None = None
    reason: str = ""
    wrapper: bool = False
    qe_id: int | None = None
    execution_id: int | None = None
    root_execution_id: int | None = None
    command_class: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def redact(text: str | None, extra_regex: str | None = None) -> str | None:
    """Mask secrets (``password=...``, ``'password' 'x'`` in OPTIONS, user regex)."""
    if text is None:
        return None
    # First the shared redaction (definity_spark.redaction: URL credentials, values of
    # sensitive option / parameter names, SQL literals after them, with the configured
    # regex for names), on the original text: the passes below may split a literal.
    from definity_spark.redaction import redact_string

    out = redact_string(text, extra_regex or None) or text
    out = _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", out)
    out = re.sub(r"(?i)(//[^/:@\s]+:)[^@/\s]+@", r"\1" + REDACTED + "@", out)
    if extra_regex:
        try:
            out = re.sub(extra_regex, REDACTED, out)
        except re.error:
            logger.debug("invalid redaction regex ignored")
    return out


def extract(facts: QueryFacts, options: Options | None = None,
            want_reads: bool = True) -> Outcome:
    """Classify one callback and extract its lineage (see the module docstring)."""
    options = options or Options()
    base = dict(func_name=facts.func_name, qe_id=facts.qe_id, execution_id=facts.execution_id,
                root_execution_id=facts.root_execution_id, command_class=facts.root_class)
    if not facts.succeeded:
        if facts.func_name == "analyze":  # Spark 4 analysis failure: no query ran
            return Outcome(IGNORED, reason="analysis failure", **base)
        rule = COMMANDS.get(simple_name(facts.root_class or ""))
        return Outcome(FAILED, error=redact(facts.error, options.redaction_regex),
                       wrapper=bool(rule and rule.wrapper), **base)
    root = simple_name(facts.root_class or "")
    rule = COMMANDS.get(root)
    if rule is None and facts.command is not None and facts.command.generic:
        rule = COMMANDS[GENERIC]
        if root not in _UNKNOWN_LOGGED:
            _UNKNOWN_LOGGED.add(root)
            logger.info("definity-spark: write command %s is not one the plugin knows: "
                        "reported with its target and schema only (partial)",
                        facts.root_class)
    if rule is not None and not rule.wrapper and _ignored_nothing_written(facts):
        # (a wrapper writes in a nested execution: nesting.py knows whether it came)
        return Outcome(IGNORED, reason=IGNORE_NOTHING_WRITTEN, **base)
    if rule is not None:
        lineage = _write_lineage(facts, rule, options)
        if lineage is None:
            logger.debug("write command %s without a resolvable target", root)
            return Outcome(IGNORED, reason=f"no target:{root}", **base)
        extras = {
            "sql": bool(facts.sql_text),
            "call": writer_call(facts.description),
            "root_call": writer_call(facts.root_description),
            "mode": facts.command.mode if facts.command else None,
            "format": facts.command.provider if facts.command else None,
            "staged": bool(facts.command and facts.command.staged),
        }
        return Outcome(WRITE, lineage=lineage, wrapper=rule.wrapper, extras=extras, **base)
    if facts.func_name.startswith(INTERNAL_FUNC_PREFIXES):
        return Outcome(IGNORED, reason=f"internal:{facts.func_name}", **base)
    if root.endswith("Command") or root.endswith("Exec") or facts.func_name == "command":
        return Outcome(IGNORED, reason=f"command:{root}", **base)
    if facts.func_name in READ_FUNCS or facts.leaves:
        inputs = _inputs(facts, options)[0] if want_reads else ()
        extras: dict[str, Any] = {}
        if "queryOutputRows" in facts.write_metrics:
            extras["rows"] = facts.write_metrics["queryOutputRows"]
        if facts.run:  # a nested read of a write (JDBC): part of how the write ran
            extras["run"] = dict(facts.run)
        if facts.observed:  # a nested read that carried a write's rows (JDBC, Delta)
            extras["quality"] = quality.measures(facts.observed)
        return Outcome(READ, inputs=inputs, extras=extras, **base)
    logger.debug("unknown query kind %s (%s) ignored", root, facts.func_name)
    return Outcome(IGNORED, reason=f"unknown:{root}", **base)


IGNORE_NOTHING_WRITTEN = "mode=ignore, target exists: nothing written"
_UNKNOWN_LOGGED: set[str] = set()  # write commands reported generically, logged once


def _ignored_nothing_written(facts: QueryFacts) -> bool:
    """``mode("ignore")`` on an existing target: Spark runs the command, writes nothing."""
    cmd = facts.command
    if cmd is None or (cmd.mode or "").lower() != "ignore":
        return False
    m = facts.write_metrics
    return not m.get("numFiles") and not m.get("numOutputRows")


# -- inputs ------------------------------------------------------------------------

def _leaf_names(leaf: LeafFacts, options: Options) -> list[str]:
    return naming.leaf_names(leaf, options.normalize_s3, options.trim_partition_dirs)


def _inputs(facts: QueryFacts, options: Options) -> tuple[tuple[InputLineage, ...], bool]:
    """(inputs in first-seen order with the columns each is read for, columns known)."""
    refs: set[int] | None = None
    if facts.plan:
        try:
            refs = PlanIndex(facts.plan).referenced_ids()
        except Exception as exc:  # a plan shape the index does not know: columns unknown
            logger.debug("columns unknown: %s", exc)
    order: list[str] = []
    columns: dict[str, set[str]] = {}
    schema_order: dict[str, list[str]] = {}
    metrics: dict[str, dict[str, float]] = {}
    # a command's sources that are no plan leaf (a CLONE's table) are read whole
    sources = facts.command.sources if facts.command is not None else []
    for leaf, whole in [(x, False) for x in facts.leaves] + [(x, True) for x in sources]:
        names = _leaf_names(leaf, options)
        user_cols = [a for a in leaf.output
                     if not a.metadata_col and a.name not in METADATA_COLUMNS]
        for name in names:
            if name not in columns:
                order.append(name)
                columns[name] = set()
                schema_order[name] = []
            known = schema_order[name]
            for a in user_cols:
                if a.name not in known:
                    known.append(a.name)
            if refs is not None:
                columns[name].update(a.name for a in user_cols if whole or a.expr_id in refs)
    for scan in facts.scans:  # what the executed plan's scans read, by input
        name = _scanned_input(scan, order, options)
        if name is not None:
            into = metrics.setdefault(name, {})
            for k, v in scan.scan_metrics.items():
                into[k] = into.get(k, 0) + v
    result = []
    for name in order:
        cols: tuple[str, ...] | None = None
        if refs is not None and not facts.partial:
            cols = tuple(c for c in schema_order[name] if c in columns[name])
        result.append(InputLineage(name=name, columns=cols, metrics=metrics.get(name, {})))
    return tuple(result), refs is not None


def _scanned_input(scan: LeafFacts, inputs: Sequence[str], options: Options) -> str | None:
    """The input a scan of the executed plan read: named as the analyzed plan's leaves
    are; a DataSource V2 scan knows only its table's own name (``catalog.db.table`` for
    Iceberg), matched to an input by its dotted suffix."""
    for name in _leaf_names(scan, options):
        if name in inputs:
            return name
    if scan.v2_name:
        v2 = scan.v2_name.lower()
        for name in inputs:
            low = name.lower()
            if low == v2 or low.endswith("." + v2) or v2.endswith("." + low):
                return name
    return None


# -- output ------------------------------------------------------------------------

def _fields(struct: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not struct:
        return []
    return [(str(f.get("name")), type_name(f.get("type"))) for f in struct.get("fields", ())]


def _partition_last(fields: list[tuple[str, str]],
                    partition: Sequence[str]) -> list[tuple[str, str]]:
    lowered = [p.lower() for p in partition]
    data = [f for f in fields if f[0].lower() not in lowered]
    parts = sorted((f for f in fields if f[0].lower() in lowered),
                   key=lambda f: lowered.index(f[0].lower()))
    return data + parts


def _output(cmd: CommandFacts, rule: Command, options: Options) -> OutputLineage | None:
    target = rule.target
    if target == "auto":
        if cmd.table is not None:
            target = "table"
        elif cmd.jdbc_url and cmd.jdbc_table:
            target = "jdbc"
        elif cmd.kafka_servers and cmd.kafka_topic:
            target = "kafka"
        elif cmd.output_path:
            target = "path"
        else:
            return None
    query_fields = _partition_last(_fields(cmd.query_schema), cmd.partition_columns)
    if target == "table":
        if cmd.table is None:
            return None
        catalog, namespace, table = cmd.table
        # a catalog table reads back with its partition columns last (Spark 4's
        # SaveAsV1TableCommand carries the schema in DataFrame order)
        schema = _partition_last(_fields(cmd.table_schema), cmd.partition_columns) \
            or query_fields
        schema = [f for f in schema if f[0] not in METADATA_COLUMNS]
        return OutputLineage(naming.table_name(catalog, namespace, table), "table", tuple(schema))
    if target == "jdbc":
        return OutputLineage(naming.jdbc_name(cmd.jdbc_url or "", cmd.jdbc_table or ""), "jdbc",
                             tuple(query_fields))
    if target == "kafka":
        return OutputLineage(naming.kafka_name(cmd.kafka_servers or "", cmd.kafka_topic or ""),
                             "kafka", tuple(query_fields))
    if not cmd.output_path:
        return None
    name = naming.path_name(cmd.output_path, options.normalize_s3, options.trim_partition_dirs)
    # a table by path (Delta) knows its schema after the write; a plain path is its query's
    return OutputLineage(name, "path", tuple(_fields(cmd.table_schema) or query_fields))


def write_metrics(facts: QueryFacts, rule: Command) -> dict[str, float]:
    """The write's metric types from its node's metrics (the command's own names, else
    ``PLAN_METRICS``): each the sum of the metrics it names that the node has."""
    names = PLAN_METRICS if rule.metric_names is None else rule.metric_names
    out: dict[str, float] = {}
    for metric_type, spark_names in names.items():
        found = [facts.write_metrics[n] for n in spark_names if n in facts.write_metrics]
        if found:
            out[metric_type] = float(sum(found))
    return out


def writer_call(description: str | None) -> str | None:
    """``saveAsTable at NativeMethodAccessorImpl.java:0`` -> ``saveAsTable`` (else None:
    a description the user set with ``setJobDescription`` says nothing about the call)."""
    if description:
        m = _WRITER_CALL.match(description.strip())
        if m:
            return m.group(1)
    return None


def describe_write(name: str, call: str | None, mode: str | None, root_class: str,
                   options: Options, fmt: str | None = None) -> str:
    """``DataFrameWriter.parquet(file:/tmp/x) mode=overwrite`` (or the command class);
    ``format=orc`` is added when the call does not say it (``save``, ``insertInto``...)."""
    suffix = f" mode={mode.lower()}" if mode else ""
    if fmt and (not call or fmt.lower() != call.lower()):
        suffix = f" format={fmt.lower()}" + suffix
    if call == "sql":
        # spark.sql(...) of a statement whose plan keeps no SQL text (a format's own
        # parser: Delta's CLONE)
        what = f"SparkSession.sql: {simple_name(root_class or '?')}({name}){suffix}"
    elif call:
        what = f"DataFrameWriter.{call}({name}){suffix}"
    else:
        what = f"{simple_name(root_class or '?')}({name}){suffix}"
    return redact(what, options.redaction_regex) or what


def _describe(facts: QueryFacts, out: OutputLineage, options: Options) -> str:
    """SQL text when the write came from spark.sql(...), else a short action description."""
    if facts.sql_text:
        return redact(facts.sql_text, options.redaction_regex) or ""
    cmd = facts.command
    call = writer_call(facts.description)
    return describe_write(out.name, call, cmd.mode if cmd else None, facts.root_class or "?",
                          options, cmd.provider if cmd else None)


def _write_lineage(facts: QueryFacts, rule: Command, options: Options) -> WriteLineage | None:
    if facts.command is None:
        return None
    out = _output(facts.command, rule, options)
    if out is None:
        return None
    inputs, _ = _inputs(facts, options)
    metrics = write_metrics(facts, rule)
    if facts.duration_ns is not None:
        metrics["duration_ms"] = round(facts.duration_ns / 1e6, 3)
    column_lineage = None
    if options.column_lineage:
        column_lineage = columns.column_lineage(
            facts, [c for c, _ in out.schema],
            leaf_names=lambda leaf: _leaf_names(leaf, options))
    return WriteLineage(output=out, inputs=inputs, query_str=_describe(facts, out, options),
                        metrics=metrics, partial=facts.partial or facts.command.generic,
                        column_lineage=column_lineage, run=dict(facts.run),
                        quality=quality.measures(facts.observed))
