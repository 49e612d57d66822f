"""The fact reader: one ``QueryExecution`` (live, through py4j) -> ``QueryFacts`` (plain data).

Runs on the extraction worker, never on Spark's listener bus. It reads each query once,
with few round trips: one ``toJSON()`` of the analyzed plan (parsed in Python: node
classes, catalog identifiers, every expression id; the gatherer writes the same JSON
without Spark's serialiser: FactGatherer.java's PlanJson), then accessors only where the
JSON drops what lineage needs: file paths, JDBC url/table, V2 catalog identifiers, save modes,
the written query's schema, the executed write node's metrics, and the SQL execution ids
that pair nested executions. py4j class/method lookups are cached by py4j's JavaObject
member cache per object; attribute chains through ``jvm.*`` are resolved once per reader.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from definity_spark.lineage import commands
from definity_spark.lineage.commands import (
    COMMANDS,
    LIGHT_WRAPPERS,
    ROWS_OF_NESTED_READS,
    table_from_json,
)
from definity_spark.lineage.facts import Attr, LeafFacts, QueryFacts
from definity_spark.lineage.plan import build, simple_name
from definity_spark.spark import gatherer
from definity_spark.spark.listener import SeqRef, error_text

logger = logging.getLogger("definity_spark.spark")

_METRIC = re.compile(r"(\w+) -> SQLMetric\(id: (\d+), name: .*?, value: (-?[\d.]+)\)")
_PLAN_METRIC_ID = re.compile(r"SQLPlanMetric\([^()]*?,(\d+),\w+\)")
_STATUS_SCAN = 32  # newest executions searched in the SQL status store
_STATUS_WAIT_MS = 200  # for the status store to catch up when a query is not in it yet
MIN_LEAVES = 64  # leaves read whatever the time budget says
_ROWS = re.compile(r"numOutputRows -> SQLMetric\(id: (\d+), name: .*?, value: (-?[\d.]+)\)")
# physical nodes that keep their child's rows (a V2 write's rows are its query's)
_ROW_PRESERVING = frozenset({
    "ProjectExec", "WholeStageCodegenExec", "InputAdapter", "ColumnarToRowExec",
    "RowToColumnarExec", "ShuffleExchangeExec", "AQEShuffleReadExec", "SortExec",
    "WriteFilesExec", "CoalesceExec", "DeserializeToObjectExec", "SerializeFromObjectExec",
    "MapPartitionsExec", "ReusedExchangeExec",
})
_SUMMARY = re.compile(r"([a-z\-]+)=(\d+)")


def _option_value(value: Any) -> Any:
    """A ``scala.Option``'s value (None for ``None``); anything else as it is."""
    try:
        return value.get() if value.isDefined() else None
    except Exception:  # noqa: BLE001 - not an Option
        return value


def option_str(opt: Any) -> str | None:
    """A Scala ``Option[String]`` in one round trip (``Some(x)`` / ``None``)."""
    return option_text(str(opt.toString()))


def option_text(s: str | None) -> str | None:
    """The value of an ``Option``'s ``toString`` (``Some(x)`` -> x, ``None`` -> None)."""
    if s is not None and s.startswith("Some(") and s.endswith(")"):
        return s[5:-1]
    return None


def _attrs(value: Any) -> list[Attr]:
    out: list[Attr] = []
    for tree in value or ():
        if isinstance(tree, list) and tree and isinstance(tree[0], dict):
            d = tree[0]
            e = d.get("exprId") or {}
            if "id" not in e:
                continue
            meta = d.get("metadata") or {}
            is_meta = any(str(k).startswith("__") and "metadata" in str(k) for k in meta)
            out.append(Attr(str(d.get("name")), int(e["id"]), d.get("dataType"), is_meta))
    return out


def _json_leaves(tree: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leaf nodes' fields of a ``toJSON`` tree, in pre-order."""
    return [n.fields for n in build(tree).walk() if not n.children] if tree else []


def _ref(qe: Any) -> Any:
    """What the gatherer is given for a QueryExecution: its own sequence number for a
    callback its listener took, else the JavaObject."""
    return qe.seq if isinstance(qe, SeqRef) else qe


def _parse_rows(metrics: str) -> tuple[float | None, int]:
    """(numOutputRows, its accumulator id) of a metrics map's text."""
    m = _ROWS.search(metrics)
    return (float(m.group(2)), int(m.group(1))) if m else (None, -1)


def _parse_write_metrics(metrics: str, child_rows: str | None
                         ) -> tuple[dict[str, float], list[int]]:
    """The write node's metrics and their accumulator ids, from its metrics map's text.
    DataSource V2 writes (Iceberg, JDBC catalog) report no row count of their own: the
    rows written are the rows their query produced (``child_rows``: the metrics of the
    first node below that counts them)."""
    out: dict[str, float] = {}
    ids: list[int] = []
    for m in _METRIC.finditer(metrics):
        out[m.group(1)] = float(m.group(3))
        ids.append(int(m.group(2)))
    if "numOutputRows" not in out and child_rows is not None:
        rows, acc = _parse_rows(child_rows)
        if rows is not None:
            out["numOutputRows"] = rows
            ids.append(acc)
    return out, ids


def _leaf_facts(d: dict[str, Any], live: Any) -> LeafFacts:
    """A leaf's facts from its JSON; ``live()`` answers what the JSON lacks (relation
    class, file paths, JDBC options, V2 identifiers), called only when needed."""
    cls = str(d.get("class"))
    name = simple_name(cls)
    if name == "HiveTableRelation":
        out = _attrs(d.get("dataCols")) + _attrs(d.get("partitionCols"))
    else:
        out = _attrs(d.get("output"))
    facts = LeafFacts(cls=cls, output=out)
    if name == "LogicalRelation":
        facts.table = table_from_json(d.get("catalogTable"))
        if facts.table is None:
            info = live()
            facts.relation_cls = info["relation_cls"]
            if "paths" in info:
                facts.paths = [p for p in info["paths"].split("\n") if p]
            if "jdbc_url" in info:
                facts.jdbc_url = info["jdbc_url"]
                facts.jdbc_table = info["jdbc_table"]
    elif name == "HiveTableRelation":
        facts.table = table_from_json(d.get("tableMeta"))
    elif name in ("DataSourceV2Relation", "DataSourceV2ScanRelation"):
        info = live()
        facts.table = _v2_table(info)
        if simple_name(info["table_cls"]) == "JDBCTable":
            facts.relation_cls = info["table_cls"]
    return facts


def _live_leaf(node: Any, name: str) -> dict[str, Any]:
    """Through py4j, what ``FactGatherer.group`` answers for one leaf."""
    info: dict[str, Any] = {}
    if name == "LogicalRelation":
        rel = node.relation()
        info["relation_cls"] = str(rel.getClass().getName())
        rname = simple_name(info["relation_cls"])
        if rname == "HadoopFsRelation":
            info["paths"] = str(rel.location().rootPaths().mkString("\n"))
        elif rname == "JDBCRelation":
            opts = rel.jdbcOptions()
            info["jdbc_url"] = str(opts.url())
            info["jdbc_table"] = str(opts.tableOrQuery())
    elif name in ("DataSourceV2Relation", "DataSourceV2ScanRelation"):
        info.update(_v2_info(node.relation() if name == "DataSourceV2ScanRelation" else node))
    return info


def _v2_info(rel: Any) -> dict[str, Any]:
    """A DataSourceV2Relation's catalog, namespace and name (``FactGatherer.v2``)."""
    info: dict[str, Any] = {}
    cat_opt = rel.catalog()
    if cat_opt.isDefined():
        info["catalog"] = str(cat_opt.get().name())
    ident_opt = rel.identifier()
    table = rel.table()
    if ident_opt.isDefined():
        ident = ident_opt.get()
        info["namespace"] = [str(x) for x in ident.namespace()]
        info["name"] = str(ident.name())
    else:
        info["name"] = str(table.name())
    info["table_cls"] = str(table.getClass().getName())
    return info


def _v2_table(info: dict[str, Any]) -> tuple[str | None, tuple[str, ...], str]:
    return (info.get("catalog"), tuple(info.get("namespace") or ()), info["name"])


def gatherer_config(queue_size: int) -> tuple[Any, ...]:
    """``FactGatherer``'s constructor arguments: the command table, the reader's own
    patterns, the size of its callback queue."""
    return (commands.spec(), ",".join(ROWS_OF_NESTED_READS), ",".join(_ROW_PRESERVING),
            _STATUS_SCAN, _METRIC.pattern, _ROWS.pattern, queue_size)


def make_gatherer(gateway: Any, jsession: Any, queue_size: int
                  ) -> tuple[Any | None, gatherer.Loaded]:
    """A ``FactGatherer`` for one session, configured with the command table and the
    reader's own patterns, and how its class was loaded (None: unavailable)."""
    loaded = gatherer.load(gateway, jsession)
    if loaded.cls is None:
        return None, loaded
    try:
        return gatherer.new(loaded, gateway, *gatherer_config(queue_size)), loaded
    except Exception as exc:  # noqa: BLE001 - an unexpected JVM: py4j instead
        return None, gatherer.Loaded(None, "unavailable", f"{type(exc).__name__}: {exc}"[:300])


class FactReader:
    """Reads QueryExecutions of one SparkSession (one instance per worker)."""

    def __init__(self, gateway: Any, jsession: Any, budget_ms: int, max_plan_nodes: int,
                 gatherer: Any = None):
        self.gateway = gateway
        self.jsession = jsession
        self.budget_ms = budget_ms
        self.max_plan_nodes = max_plan_nodes
        self._status_store = None
        self._version: str | None = None
        self._has_query_id: bool | None = None
        self._gatherer = gatherer  # the JVM half (None: read through py4j)
        self.gathered = 0  # phases read by the gatherer
        self.eager_phases = 0  # phases of those, answered with the callback (no py4j call)
        self.fallbacks = 0  # phases the gatherer failed, then read through py4j

    def _gathered(self, phase: str, call: Any) -> str | None:
        """One gatherer call, or None (then the phase is read through py4j)."""
        try:
            text = str(call())
            self.gathered += 1
            return text
        except Exception as exc:  # noqa: BLE001 - py4j path instead
            self.fallbacks += 1
            logger.debug("gatherer %s failed, reading through py4j: %s", phase, exc)
            return None

    # -- entry point -----------------------------------------------------------------
    def read(self, func_name: str, qe: Any, duration_ns: int | None,
             exception: Any, light: bool = False) -> QueryFacts:
        """Read one callback's QueryExecution (both phases at once)."""
        reading = self.begin(func_name, qe, duration_ns, exception)
        self.finish(reading, light)
        return reading.facts

    def begin(self, func_name: str, qe: Any, duration_ns: int | None,
              exception: Any, eager: tuple[str, str | None] | None = None) -> Reading:
        """Phase 1, cheap (no plan serialisation): root class, write metrics, execution ids.

        Enough to know whether the callback is a nested write (``Reading.nested_write``),
        whose plan the observer reads later, when its root has arrived (see observer.py).
        ``eager``: the gatherer's answers to both phases, taken with the callback
        (``FactGatherer.setEager``); then neither phase crosses py4j again.
        """
        g = self._gatherer if func_name != "analyze" else None
        started = time.monotonic()
        facts = QueryFacts(func_name=func_name, succeeded=exception is None,
                           duration_ns=duration_ns, spark_version=self.version())
        reading = Reading(facts, qe)
        if exception is not None:
            facts.error = error_text(exception)
        text = None
        if eager is not None and g is not None:
            text, reading.eager_finish = eager
            self.gathered += 1
            self.eager_phases += 1
        elif g is not None:
            text = self._gathered("begin", lambda: g.begin(_ref(qe), func_name,
                                                           facts.succeeded))
        try:
            if text is not None:
                raw = json.loads(text)
                # the JVM's time on both eager phases counts as this reading's
                reading.spent += int(raw.get("eager_ns") or 0) / 1e9
                self._begin_gathered(reading, raw)
                return reading
            facts.qe_id = int(qe.id())
            if func_name == "analyze":
                reading.done = True
                return reading
            plan = reading.live_plan()
            reading.root = simple_name(str(plan.getClass().getName()))
            acc_ids: list[int] = []
            command = COMMANDS.get(reading.root)
            if facts.succeeded and command is not None:
                facts.write_metrics, acc_ids = self._write_metrics(qe)
                if "numOutputRows" not in facts.write_metrics and command.metrics == "iceberg":
                    with _quiet():
                        facts.write_metrics.update(self._iceberg_snapshot(plan))
            elif facts.succeeded and func_name in ROWS_OF_NESTED_READS:
                # a JDBC write's data goes out through a nested foreachPartition: its
                # query's row count is the write's row count
                rows, acc = self._rows_below(qe.executedPlan())
                if rows is not None:
                    facts.write_metrics = {"queryOutputRows": rows}
                    acc_ids = [acc]
            self._execution_ids(qe, facts, acc_ids)
        except Exception as exc:  # the plan could not be read: say so, never raise
            self._failed(facts, exc)
            reading.done = True
        finally:
            reading.spent += time.monotonic() - started
        return reading

    def _begin_gathered(self, reading: Reading, raw: dict[str, Any]) -> None:
        """``begin`` from the gatherer's answer (the same facts, the same parsing)."""
        facts = reading.facts
        facts.qe_id = int(raw["qe_id"])
        reading.root = simple_name(str(raw["root"]))
        if "write_metrics" in raw:
            facts.write_metrics, _ = _parse_write_metrics(raw["write_metrics"],
                                                          raw.get("child_rows"))
            command = COMMANDS.get(reading.root)
            if "numOutputRows" not in facts.write_metrics and command is not None \
                    and command.metrics == "iceberg":
                with _quiet():
                    facts.write_metrics.update(self._iceberg_snapshot(reading.live_plan()))
        elif raw.get("nested_rows") is not None:
            rows, _ = _parse_rows(raw["nested_rows"])
            if rows is not None:
                facts.write_metrics = {"queryOutputRows": rows}
        if "execution_id" in raw:
            facts.execution_id = int(raw["execution_id"])
            facts.root_execution_id = int(raw["root_execution_id"])
            facts.description = raw.get("description")
            facts.root_description = raw.get("root_description")

    def finish(self, reading: Reading, light: bool = False) -> None:
        """Phase 2: the plan (one ``toJSON``), the command's target, the inputs.

        ``light``: the callback is an outer command (``LIGHT_WRAPPERS``) whose nested
        write has been read in full already: its query is that write's query, so only
        the command node is read (target table, mode, written schema), not the query.
        """
        if reading.done:
            return
        reading.done = True
        started = time.monotonic()
        facts, root = reading.facts, reading.root
        light = light and facts.succeeded and root in LIGHT_WRAPPERS
        g = self._gatherer
        text = None
        if reading.eager_finish is not None and not light:
            text, reading.eager_finish = reading.eager_finish, None
            self.gathered += 1
            self.eager_phases += 1
        elif g is not None:
            text = self._gathered("finish", lambda: g.finish(_ref(reading.qe), facts.succeeded,
                                                             light))
        try:
            if text is not None:
                self._finish_gathered(reading, text)
                return
            plan = reading.live_plan()
            if light:
                facts.plan = [self._light_head(plan, root)]
            else:
                facts.plan = json.loads(plan.toJSON())
            head = facts.plan[0] if facts.plan else {}
            if facts.succeeded:
                facts.sql_text = option_str(plan.origin().sqlText())
                if facts.sql_text is None and isinstance(head.get("query"), list):
                    # Spark 4 CTAS: the command's own origin is empty, its query's is not
                    with _quiet():
                        facts.sql_text = option_str(plan.query().origin().sqlText())
            command = COMMANDS.get(root)
            if command is not None:
                values = {r.key: self._read(plan, r) for r in command.reads}
                facts.command = commands.command_facts(root, head, values)
            if facts.succeeded and not light:
                self._leaves(plan, facts, root)
        except Exception as exc:  # the plan could not be read: say so, never raise
            self._failed(facts, exc)
        finally:
            reading.spent += time.monotonic() - started

    def _finish_gathered(self, reading: Reading, text: str) -> None:
        """``finish`` from the gatherer's answer: a line of facts, then the plan's JSON."""
        facts, root = reading.facts, reading.root
        header, _, plan_json = text.partition("\n")
        raw = json.loads(header)
        facts.plan = json.loads(plan_json)
        head = facts.plan[0] if facts.plan else {}
        if facts.succeeded:
            facts.sql_text = option_text(raw.get("sql"))
            if facts.sql_text is None and isinstance(head.get("query"), list):
                facts.sql_text = option_text(raw.get("query_sql"))
        if root in COMMANDS:
            facts.command = commands.command_facts(root, head, raw.get("command") or {})
        if facts.succeeded and "leaves" in raw:  # not for a light read
            groups = raw["leaves"]
            if not self._leaves_gathered(groups, facts, root):
                self._leaves(reading.live_plan(), facts, root)

    @staticmethod
    def _failed(facts: QueryFacts, exc: Exception) -> None:
        facts.read_error = f"{type(exc).__name__}: {exc}"[:500]
        facts.partial = True
        logger.debug("plan read failed: %s", facts.read_error)

    def _read(self, node: Any, read: commands.Read) -> Any:
        """One read of the command table through py4j (``FactGatherer.read``'s twin)."""
        value: Any = node
        for step in read.path.split("."):
            name, _, arg = step.partition("(")
            try:
                method = getattr(value, name)
                value = method(arg[:-1]) if arg else method()
            except Exception:  # noqa: BLE001 - missing on this Spark, or it threw
                return None
            if value is None:
                return None
        kind = read.kind
        if kind in (commands.OPTION, commands.QUALIFIED):
            value = _option_value(value)
            if value is None:
                return None
        if kind in (commands.STR, commands.OPTION):
            return str(value)
        if kind == commands.CLASS:
            return str(value.getClass().getName())
        if kind == commands.SCHEMA:
            return json.loads(value.json())
        if kind == commands.STRINGS:
            if hasattr(value, "__len__"):  # a Java array (py4j JavaArray)
                return [str(x) for x in value]
            return [str(value.apply(i)) for i in range(value.size())]
        if kind == commands.QUALIFIED:
            return self._qualified(str(value), node)
        raise ValueError(f"unknown read kind {kind}")

    def _qualified(self, path: str, node: Any) -> str:
        """A path without a scheme, qualified as Spark does (``FactGatherer.qualified``)."""
        if ":" in path.split("/", 1)[0]:
            return path
        local = False
        with _quiet():
            local = bool(node.isLocal())
        jvm = self.gateway.jvm
        p = jvm.org.apache.hadoop.fs.Path(path)
        conf = self.jsession.sparkContext().hadoopConfiguration()
        fs = jvm.org.apache.hadoop.fs.FileSystem.getLocal(conf) if local \
            else p.getFileSystem(conf)
        return str(fs.makeQualified(p).toString())

    def _light_head(self, cmd: Any, root: str) -> dict[str, Any]:
        """The command node's own JSON fields the rules use, read with accessors: the
        ``CatalogTable`` (``table`` / ``tableDesc``) and a marker for its query."""
        field = COMMANDS[root].light or "table"
        ct = getattr(cmd, field)()
        ident = ct.identifier()
        identifier: dict[str, Any] = {"table": str(ident.table())}
        for part in ("database", "catalog"):
            with _quiet():
                value = option_str(getattr(ident, part)())
                if value is not None:
                    identifier[part] = value
        table: dict[str, Any] = {
            "identifier": identifier,
            "schema": json.loads(ct.schema().json()),
            "partitionColumnNames": commands.string_seq(str(ct.partitionColumnNames().mkString(
                "[", ",", "]"))),
        }
        return {"class": str(cmd.getClass().getName()), "num-children": 0, field: table,
                "query": [], "light": True}

    def version(self) -> str | None:
        if self._version is None:
            try:
                self._version = str(self.jsession.version())
            except Exception:
                self._version = "?"
        return self._version

    # -- leaves (inputs) ----------------------------------------------------------------
    def _too_big(self, facts: QueryFacts) -> bool:
        """Over ``max_plan_nodes``: the facts keep no plan and no leaves (partial)."""
        if facts.plan is None or len(facts.plan) <= self.max_plan_nodes:
            return False
        facts.partial = True
        logger.debug("plan of %d nodes exceeds max_plan_nodes", len(facts.plan))
        facts.plan = None
        return True

    @staticmethod
    def _main_tree(facts: QueryFacts, root: str) -> tuple[bool, list[dict[str, Any]]]:
        """(whether the plan is a leaf command, the JSON tree whose leaves in pre-order
        are exactly the main root's ``collectLeaves()``). A leaf command (CTAS,
        saveAsTable) keeps its query in a non-child field, embedded in its JSON; a tree
        of [] has no leaves known."""
        head = facts.plan[0] if facts.plan else {}
        if int(head.get("num-children", 0) or 0) == 0 and root in COMMANDS:
            query = head.get("query")
            return True, query if isinstance(query, list) else []
        return False, facts.plan or []

    def _leaves(self, plan: Any, facts: QueryFacts, root: str) -> None:
        if self._too_big(facts):
            return
        leaf_command, tree = self._main_tree(facts, root)
        head = facts.plan[0] if facts.plan else {}
        roots = [plan]
        if leaf_command:
            roots = [plan.query()] if isinstance(head.get("query"), list) else []
        seen_budget = self.budget_ms / 1000.0
        started = time.monotonic()  # budget of the leaf reads
        # reuse the main tree's leaves' JSON instead of one toJSON round trip per leaf
        main_json = _json_leaves(tree)
        for r in roots:
            groups = [(r.collectLeaves(), main_json if r is roots[0] else [])]
            subs = r.subqueriesAll()
            for i in range(subs.size()):
                groups.append((subs.apply(i).collectLeaves(), []))
            for leaves, known in groups:
                n = leaves.size()
                if len(known) != n:
                    known = []
                for i in range(n):
                    # the budget bounds the per-leaf reads of huge plans, not a cold JVM's
                    # first toJSON: the first MIN_LEAVES leaves are always read
                    if len(facts.leaves) >= MIN_LEAVES and \
                            time.monotonic() - started > seen_budget:
                        facts.partial = True
                        logger.debug("extraction budget exhausted after %d leaves",
                                     len(facts.leaves))
                        return
                    facts.leaves.append(self._leaf(_Nth(leaves, i),
                                                   known[i] if known else None))

    def _leaves_gathered(self, groups: list[list[dict[str, Any]]], facts: QueryFacts,
                         root: str) -> bool:
        """``_leaves`` from the gatherer's leaf groups (main tree, then each subquery).
        False when its main group does not line up with the plan's JSON (read live)."""
        if self._too_big(facts) or not groups:
            return True
        main = _json_leaves(self._main_tree(facts, root)[1])
        if len(main) != len(groups[0]):
            return False
        leaves: list[LeafFacts] = []
        for i, group in enumerate(groups):
            known = main if i == 0 else [json.loads(x["json"])[0] for x in group]
            leaves.extend(_leaf_facts(d, lambda x=x: x) for d, x in zip(known, group))
        facts.leaves = leaves
        return True

    def _leaf(self, nth: _Nth, d: dict[str, Any] | None = None) -> LeafFacts:
        """One leaf: its JSON (from the plan's, else one ``toJSON``); the live node only
        when the JSON lacks what naming needs (paths, JDBC options, V2 identifiers)."""
        if d is None:
            d = json.loads(nth.get().toJSON())[0]
        return _leaf_facts(d, lambda: _live_leaf(nth.get(), simple_name(str(d.get("class")))))

    # -- metrics and execution ids ----------------------------------------------------------
    def _write_metrics(self, qe: Any) -> tuple[dict[str, float], list[int]]:
        """Metrics of the executed write node (under AQE: unwrap the adaptive plan)."""
        node = qe.executedPlan()
        for _ in range(6):
            n = simple_name(str(node.getClass().getName()))
            if n == "AdaptiveSparkPlanExec":
                node = node.executedPlan()
            elif n.endswith("QueryStageExec"):
                node = node.plan()
            elif n == "CommandResultExec":
                node = node.commandPhysicalPlan()
            else:
                break
        metrics = str(node.metrics().toString())
        child_rows = None
        if not _ROWS.search(metrics):
            children = node.children()
            if children.size() == 1:
                child_rows = self._rows_below_text(children.apply(0))
        return _parse_write_metrics(metrics, child_rows)

    @staticmethod
    def _iceberg_snapshot(cmd: Any) -> dict[str, float]:
        """Iceberg row-level writes (MERGE/UPDATE/DELETE) report no Spark metric: the
        snapshot the write committed says what it wrote (summary ``added-*``)."""
        table = cmd.table().table()  # DataSourceV2Relation -> SparkTable
        if simple_name(str(table.getClass().getName())) == "RowLevelOperationTable":
            table = table.table()  # MERGE/UPDATE/DELETE wrap the table
        if "iceberg" not in str(table.getClass().getName()).lower():
            return {}
        snapshot = table.table().currentSnapshot()
        if snapshot is None:
            return {}
        summary = dict(_SUMMARY.findall(str(snapshot.summary().toString())))

        def num(*keys: str) -> float:
            return float(sum(int(summary.get(k, 0) or 0) for k in keys))

        out = {"numOutputRows": num("added-records", "added-position-deletes",
                                    "added-equality-deletes")}
        if "added-files-size" in summary:
            out["numOutputBytes"] = num("added-files-size")
        out["numFiles"] = num("added-data-files", "added-delete-files")
        return out

    def _rows_below(self, node: Any) -> tuple[float | None, int]:
        text = self._rows_below_text(node)
        return _parse_rows(text) if text is not None else (None, -1)

    def _rows_below_text(self, node: Any) -> str | None:
        """The metrics of the first node, going down through row-preserving nodes
        (projections, exchanges, sorts, codegen and AQE wrappers), that counts its output
        rows; None if none does."""
        for _ in range(12):
            n = simple_name(str(node.getClass().getName()))
            metrics = str(node.metrics().toString())
            if _ROWS.search(metrics):
                return metrics
            if n == "AdaptiveSparkPlanExec":
                node = node.executedPlan()
            elif n.endswith("QueryStageExec"):
                node = node.plan()
            elif n in _ROW_PRESERVING:
                children = node.children()
                if children.size() != 1:
                    return None
                node = children.apply(0)
            else:
                return None
        return None

    def _store(self) -> Any:
        if self._status_store is None:
            self._status_store = self.jsession.sharedState().statusStore()
        return self._status_store

    def _execution_ids(self, qe: Any, facts: QueryFacts, acc_ids: list[int]) -> None:
        """SQL execution id + root execution id: pairs nested executions exactly.

        Spark 4: ``qe.queryId()`` equals the status store's ``queryId``. Spark 3.5: the
        executed write node's metric accumulator ids appear in its execution's metrics.
        """
        query_id = None
        if self._has_query_id is not False:
            try:
                query_id = str(qe.queryId().toString())
                self._has_query_id = True
            except Exception:
                self._has_query_id = False
        if query_id is None and not acc_ids:
            return
        if not self._find_execution(qe, facts, query_id, acc_ids):
            # the status store learns of an execution on another listener-bus queue than
            # this callback's: let it catch up (_STATUS_WAIT_MS at most), then look again
            with _quiet():
                self.jsession.sparkContext().listenerBus().waitUntilEmpty(_STATUS_WAIT_MS)
            self._find_execution(qe, facts, query_id, acc_ids)

    def _find_execution(self, qe: Any, facts: QueryFacts, query_id: str | None,
                        acc_ids: list[int]) -> bool:
        store = self._store()
        count = int(store.executionsCount())
        start = max(0, count - _STATUS_SCAN)
        lst = store.executionsList(start, count - start)
        wanted = set(acc_ids)
        for i in range(lst.size() - 1, -1, -1):
            x = lst.apply(i)
            if query_id is not None:
                if str(x.queryId().toString()) != query_id:
                    continue
            else:
                found = {int(m.group(1)) for m in
                         _PLAN_METRIC_ID.finditer(str(x.metrics().toString()))}
                if not wanted & found:
                    continue
            facts.execution_id = int(x.executionId())
            facts.root_execution_id = int(x.rootExecutionId())
            facts.description = str(x.description())
            if facts.root_execution_id != facts.execution_id:
                with _quiet():
                    root = store.execution(facts.root_execution_id)
                    if root.isDefined():
                        facts.root_description = str(root.get().description())
            return True
        return False


class Reading:
    """One callback being read: its facts so far and the live objects phase 2 needs."""

    __slots__ = ("facts", "qe", "plan", "root", "done", "spent", "eager_finish")

    def __init__(self, facts: QueryFacts, qe: Any):
        self.facts = facts
        self.qe = qe
        self.plan: Any = None  # the live plan (py4j), fetched when first needed
        self.root = ""  # simple class name of the plan's root node
        self.done = False
        self.spent = 0.0  # seconds spent reading (both phases)
        self.eager_finish: str | None = None  # the gatherer's phase 2, taken with phase 1

    def live_plan(self) -> Any:
        """The analyzed plan through py4j. A failed query's analyzed() rethrows (and
        Spark 4 logs an ERROR): a failure only needs the root class, which logical()
        gives."""
        if self.plan is None:
            self.plan = self.qe.analyzed() if self.facts.succeeded else self.qe.logical()
        return self.plan

    @property
    def nested_write(self) -> bool:
        """A successful write that ran inside another SQL execution (CTAS, saveAsTable)."""
        f = self.facts
        return (not self.done and f.succeeded and self.root in COMMANDS
                and f.execution_id is not None and f.root_execution_id is not None
                and f.execution_id != f.root_execution_id)

    @property
    def wrapper(self) -> bool:
        rule = COMMANDS.get(self.root)
        return bool(rule and rule.wrapper)


class _Nth:
    """The i-th element of a JVM ``Seq``, fetched on first use (one round trip saved per
    leaf whose JSON says everything)."""

    __slots__ = ("_seq", "_i", "_value")

    def __init__(self, seq: Any, i: int):
        self._seq, self._i, self._value = seq, i, None

    def get(self) -> Any:
        if self._value is None:
            self._value = self._seq.apply(self._i)
        return self._value


class _quiet:
    """Context manager: an accessor that does not exist on this Spark version is skipped."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            logger.debug("accessor skipped: %s", exc)
        return exc is not None and isinstance(exc, Exception)
