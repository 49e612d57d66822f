"""The fact reader's py4j side: what the JVM gatherer reads in one call, read here with
py4j accessor calls, one round trip at a time.

The path where the gatherer cannot be loaded (the Python listener), where one of its
calls fails, and for what only py4j reads: a V2 write's Iceberg snapshot, and, for a
query the gatherer did not answer, its executed write node's metrics and its SQL
execution ids. Each accessor here has its twin in ``FactGatherer.java``; the integration
suite reads every query both ways and requires the same facts.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from definity_spark.lineage import commands, naming
from definity_spark.lineage.commands import COMMANDS, table_from_json
from definity_spark.lineage.facts import Attr, LeafFacts, QueryFacts
from definity_spark.lineage.plan import build, simple_name
from definity_spark.spark.metric_text import METRIC, ROWS, parse_rows, parse_write_metrics

logger = logging.getLogger("definity_spark.spark")

# SQLPlanMetric(name, accumulatorId, metricType): a name may hold "(ms)", a type dots
# (Iceberg's "v2Custom_org.apache.iceberg...")
_PLAN_METRIC_ID = re.compile(r"SQLPlanMetric\((?:[^()]|\([^()]*\))*?,(\d+),[^,()]+\)")
# Spark's interfaces of a write command: one the table does not know is still a write
_WRITE_INTERFACES = ("org.apache.spark.sql.execution.command.DataWritingCommand",
                     "org.apache.spark.sql.catalyst.plans.logical.V2WriteCommand")
ID_NODES = 4  # nodes whose metrics find a query's execution when it has no write metrics
STATUS_SCAN = 32  # newest executions searched in the SQL status store
_STATUS_WAIT_MS = 200  # for the status store to catch up when a query is not in it yet
MIN_LEAVES = 64  # leaves read whatever the time budget says
# physical nodes that keep their child's rows (a V2 write's rows are its query's)
ROW_PRESERVING = frozenset({
    "ProjectExec", "WholeStageCodegenExec", "InputAdapter", "ColumnarToRowExec",
    "RowToColumnarExec", "ShuffleExchangeExec", "AQEShuffleReadExec", "SortExec",
    "WriteFilesExec", "CoalesceExec", "DeserializeToObjectExec", "SerializeFromObjectExec",
    "MapPartitionsExec", "ReusedExchangeExec",
    "CollectMetricsExec",  # observed metrics (Dataset.observe, the data quality rule)
})


def option_str(opt: Any) -> str | None:
    """A Scala ``Option[String]`` in one round trip (``Some(x)`` / ``None``)."""
    return option_text(str(opt.toString()))


def option_text(s: str | None) -> str | None:
    """The value of an ``Option``'s ``toString`` (``Some(x)`` -> x, ``None`` -> None)."""
    if s is not None and s.startswith("Some(") and s.endswith(")"):
        return s[5:-1]
    return None


def option_value(value: Any) -> Any:
    """A ``scala.Option``'s value (None for ``None``); anything else as it is."""
    try:
        return value.get() if value.isDefined() else None
    except Exception:  # noqa: BLE001 - not an Option
        return value


def live_leaf(node: Any, name: str) -> dict[str, Any]:
    """Through py4j, what ``FactGatherer.group`` answers for one leaf."""
    info: dict[str, Any] = {}
    if name == "LogicalRelation":
        rel = node.relation()
        info["relation_cls"] = str(rel.getClass().getName())
        rname = simple_name(info["relation_cls"])
        if rname == "HadoopFsRelation" or simple_name(
                str(rel.getClass().getSuperclass().getName())) == "HadoopFsRelation":
            # (Delta's relation is an anonymous subclass)
            info["paths"] = root_paths(rel)
        elif rname == "JDBCRelation":
            opts = rel.jdbcOptions()
            info["jdbc_url"] = str(opts.url())
            info["jdbc_table"] = str(opts.tableOrQuery())
        elif rname == "KafkaRelation":
            info.update(kafka_info(rel))
    elif name in ("DataSourceV2Relation", "DataSourceV2ScanRelation"):
        info.update(v2_info(node.relation() if name == "DataSourceV2ScanRelation" else node))
    return info


def root_paths(rel: Any) -> str:
    """A file relation's root paths; a file sink's directory read through its
    ``_spark_metadata`` log (``MetadataLogFileIndex``) qualified as the sink's is
    (``FactGatherer.rootPaths``)."""
    location = rel.location()
    paths = location.rootPaths()
    if simple_name(str(location.getClass().getName())) != "MetadataLogFileIndex":
        return str(paths.mkString("\n"))
    conf = rel.sparkSession().sessionState().newHadoopConf()
    out = []
    for i in range(paths.size()):
        p = paths.apply(i)
        out.append(str(p.getFileSystem(conf).makeQualified(p).toString()))
    return "\n".join(out)


KAFKA_OPTIONS = (("kafka.bootstrap.servers", "kafka_servers"), ("subscribe", "kafka_topics"),
                 ("assign", "kafka_assign"), ("subscribepattern", "kafka_pattern"))


def kafka_info(rel: Any) -> dict[str, Any]:
    """A Kafka batch read's servers and topics (``FactGatherer.kafka``): never another of
    its options, which may hold credentials."""
    field = rel.getClass().getDeclaredField("sourceOptions")
    field.setAccessible(True)
    options = field.get(rel)
    info: dict[str, Any] = {}
    for key, name in KAFKA_OPTIONS:
        value = option_value(options.get(key))
        if value is not None:
            info[name] = str(value)
    return info


def kafka_leaf(facts: LeafFacts, info: dict[str, Any]) -> None:
    """A Kafka source's facts (a batch read, a streaming source) from its options."""
    if info.get("kafka_servers"):
        facts.kafka_servers = str(info["kafka_servers"])
        facts.kafka_topics = naming.kafka_topics(info.get("kafka_topics"),
                                                 info.get("kafka_assign"))
        facts.kafka_pattern = info.get("kafka_pattern")


def v2_info(rel: Any) -> dict[str, Any]:
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


def attrs(value: Any) -> list[Attr]:
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


def json_leaves(tree: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The leaf nodes' fields of a ``toJSON`` tree, in pre-order."""
    return [n.fields for n in build(tree).walk() if not n.children] if tree else []


def leaf_facts(d: dict[str, Any], live: Any) -> LeafFacts:
    """A leaf's facts from its JSON; ``live()`` answers what the JSON lacks (relation
    class, file paths, JDBC options, V2 identifiers), called only when needed."""
    cls = str(d.get("class"))
    name = simple_name(cls)
    if name == "HiveTableRelation":
        out = attrs(d.get("dataCols")) + attrs(d.get("partitionCols"))
    else:
        out = attrs(d.get("output"))
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
            kafka_leaf(facts, info)
    elif name == "HiveTableRelation":
        facts.table = table_from_json(d.get("tableMeta"))
    elif name in ("DataSourceV2Relation", "DataSourceV2ScanRelation"):
        info = live()
        facts.table = v2_table(info)
        if simple_name(info["table_cls"]) == "JDBCTable":
            facts.relation_cls = info["table_cls"]
    return facts


def v2_table(info: dict[str, Any]) -> tuple[str | None, tuple[str, ...], str]:
    return (info.get("catalog"), tuple(info.get("namespace") or ()), info["name"])


class Py4jReads:
    """The py4j reads of one session's queries."""

    def __init__(self, gateway: Any, jsession: Any):
        self.gateway = gateway
        self.jsession = jsession
        self._status_store: Any = None
        self._has_query_id: bool | None = None
        self._write_interfaces: list[Any] | None = None

    def command_name(self, plan: Any) -> str:
        """The command table's name of an analyzed root (``FactGatherer.commandName``): its
        simple class name, or ``GENERIC`` for a write the table does not know."""
        name = simple_name(str(plan.getClass().getName()))
        if name in COMMANDS:
            return name
        if self._write_interfaces is None:
            self._write_interfaces = []
            for cls in _WRITE_INTERFACES:
                with quiet():
                    self._write_interfaces.append(self.gateway.jvm.java.lang.Class.forName(cls))
        if any(c.isInstance(plan) for c in self._write_interfaces):
            return commands.GENERIC
        return name

    def read(self, node: Any, read: commands.Read) -> Any:
        """One read of the command table through py4j (``FactGatherer.read``'s twin)."""
        value: Any = node
        for step in commands.path_steps(read.path):
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
            value = option_value(value)
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
            return self.qualified(str(value), node)
        raise ValueError(f"unknown read kind {kind}")

    def qualified(self, path: str, node: Any) -> str:
        """A path without a scheme, qualified as Spark does (``FactGatherer.qualified``)."""
        if ":" in path.split("/", 1)[0]:
            return path
        local = False
        with quiet():
            local = bool(node.isLocal())
        jvm = self.gateway.jvm
        p = jvm.org.apache.hadoop.fs.Path(path)
        conf = self.jsession.sparkContext().hadoopConfiguration()
        fs = jvm.org.apache.hadoop.fs.FileSystem.getLocal(conf) if local \
            else p.getFileSystem(conf)
        return str(fs.makeQualified(p).toString())

    def light_head(self, cmd: Any, root: str) -> dict[str, Any]:
        """The command node's own JSON fields the rules use, read with accessors: the
        ``CatalogTable`` (``table`` / ``tableDesc``) and a marker for its query."""
        field = COMMANDS[root].light or "table"
        ct = getattr(cmd, field)()
        ident = ct.identifier()
        identifier: dict[str, Any] = {"table": str(ident.table())}
        for part in ("database", "catalog"):
            with quiet():
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

    def leaves(self, plan: Any, facts: QueryFacts, query_fields: tuple[str, ...] | None,
               tree: list[dict[str, Any]], budget_s: float) -> None:
        """The leaves of the plan (or of the plans a leaf command reads, its
        ``query_fields``) and of their subqueries, each read from its JSON (the main tree's,
        else one ``toJSON``) and live where naming needs it; after ``budget_s`` (past
        ``MIN_LEAVES`` leaves) the facts are partial."""
        head = facts.plan[0] if facts.plan else {}
        roots = [plan]
        if query_fields is not None:  # a leaf command: the plans it reads are fields
            roots = [getattr(plan, f)() for f in query_fields if isinstance(head.get(f), list)]
        seen_budget = budget_s
        started = time.monotonic()  # budget of the leaf reads
        # reuse the main tree's leaves' JSON instead of one toJSON round trip per leaf
        main_json = json_leaves(tree)
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
                    facts.leaves.append(self.leaf(_Nth(leaves, i),
                                                   known[i] if known else None))

    def leaf(self, nth: _Nth, d: dict[str, Any] | None = None) -> LeafFacts:
        """One leaf: its JSON (from the plan's, else one ``toJSON``); the live node only
        when the JSON lacks what naming needs (paths, JDBC options, V2 identifiers)."""
        if d is None:
            d = json.loads(nth.get().toJSON())[0]
        return leaf_facts(d, lambda: live_leaf(nth.get(), simple_name(str(d.get("class")))))

    # -- metrics and execution ids ----------------------------------------------------------
    def write_metrics(self, qe: Any) -> tuple[dict[str, float], list[int]]:
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
        if not ROWS.search(metrics):
            children = node.children()
            if children.size() == 1:
                child_rows = self.rows_below_text(children.apply(0))
        return parse_write_metrics(metrics, child_rows)

    def rows_below(self, node: Any) -> tuple[float | None, int]:
        text = self.rows_below_text(node)
        return parse_rows(text) if text is not None else (None, -1)

    def rows_below_text(self, node: Any) -> str | None:
        """The metrics of the first node, going down through row-preserving nodes
        (projections, exchanges, sorts, codegen and AQE wrappers), that counts its output
        rows; None if none does."""
        for _ in range(12):
            n = simple_name(str(node.getClass().getName()))
            metrics = str(node.metrics().toString())
            if ROWS.search(metrics):
                return metrics
            if n == "AdaptiveSparkPlanExec":
                node = node.executedPlan()
            elif n.endswith("QueryStageExec"):
                node = node.plan()
            elif n in ROW_PRESERVING:
                children = node.children()
                if children.size() != 1:
                    return None
                node = children.apply(0)
            else:
                return None
        return None

    @staticmethod
    def any_metric_ids(plan: Any) -> list[int]:
        """The metric accumulator ids of the first ``ID_NODES`` nodes (pre-order) that have
        metrics (``FactGatherer.anyMetrics``): a read's, or a command's that runs others."""
        ids: list[int] = []
        stack, found, seen = [plan], 0, 0
        while stack and seen < 64 and found < ID_NODES:
            node = stack.pop()
            seen += 1
            n = simple_name(str(node.getClass().getName()))
            if n == "AdaptiveSparkPlanExec":
                stack.append(node.executedPlan())
                continue
            if n.endswith("QueryStageExec"):
                stack.append(node.plan())
                continue
            if n == "CommandResultExec":
                stack.append(node.commandPhysicalPlan())
                continue
            mine = [int(m.group(2)) for m in METRIC.finditer(str(node.metrics().toString()))]
            if mine:
                ids.extend(mine)
                found += 1
            kids = node.children()
            stack.extend(kids.apply(i) for i in range(kids.size() - 1, -1, -1))
        return ids

    def store(self) -> Any:
        if self._status_store is None:
            self._status_store = self.jsession.sharedState().statusStore()
        return self._status_store

    def execution_ids(self, qe: Any, facts: QueryFacts, acc_ids: list[int]) -> None:
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
        if query_id is None and not acc_ids and facts.succeeded:
            acc_ids = self.any_metric_ids(qe.executedPlan())
        if query_id is None and not acc_ids:
            return
        if not self.find_execution(qe, facts, query_id, acc_ids):
            # the status store learns of an execution on another listener-bus queue than
            # this callback's: let it catch up (_STATUS_WAIT_MS at most), then look again
            with quiet():
                self.jsession.sparkContext().listenerBus().waitUntilEmpty(_STATUS_WAIT_MS)
            self.find_execution(qe, facts, query_id, acc_ids)

    def find_execution(self, qe: Any, facts: QueryFacts, query_id: str | None,
                        acc_ids: list[int]) -> bool:
        store = self.store()
        count = int(store.executionsCount())
        start = max(0, count - STATUS_SCAN)
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
                with quiet():
                    root = store.execution(facts.root_execution_id)
                    if root.isDefined():
                        facts.root_description = str(root.get().description())
            return True
        return False


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


class quiet:
    """Context manager: an accessor that does not exist on this Spark version is skipped."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is not None:
            logger.debug("accessor skipped: %s", exc)
        return exc is not None and isinstance(exc, Exception)
