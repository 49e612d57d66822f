"""The fact reader: one ``QueryExecution`` -> ``QueryFacts`` (plain data).

Runs on the extraction worker, never on Spark's listener bus. It reads a query in two
phases: ``begin`` (the plan's root class, the executed write node's metrics, the SQL
execution ids: enough to know a nested write, whose plan is read once its root has
arrived) and ``finish`` (the analyzed plan's JSON, the command's reads of
``lineage/commands.py``, the leaves that are the inputs). The JVM gatherer answers each
phase in one call (a plain write's both, with its callback already); where it is
missing, or a call fails, the same facts are read through py4j (``py4j_reads.py``).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from definity_spark.lineage import commands
from definity_spark.lineage.commands import (
    COMMANDS,
    LIGHT_WRAPPERS,
    ROWS_OF_NESTED_READS,
)
from definity_spark.lineage.facts import LeafFacts, QueryFacts
from definity_spark.lineage.plan import simple_name
from definity_spark.lineage.streams import StreamFacts, StreamSink
from definity_spark.spark import gatherer, table_formats
from definity_spark.spark.listener import SeqRef, error_text
from definity_spark.spark.metric_text import (
    METRIC,
    ROWS,
    parse_rows,
    parse_write_metrics,
    scan_facts,
)
from definity_spark.spark.py4j_reads import (
    ROW_PRESERVING,
    STATUS_SCAN,
    Py4jReads,
    json_leaves,
    kafka_leaf,
    leaf_facts,
    option_str,
    option_text,
    quiet,
)

logger = logging.getLogger("definity_spark.spark")


def _ref(qe: Any) -> Any:
    """What the gatherer is given for a QueryExecution: its own sequence number for a
    callback its listener took, else the JavaObject."""
    return qe.seq if isinstance(qe, SeqRef) else qe


def gatherer_config(queue_size: int) -> tuple[Any, ...]:
    """``FactGatherer``'s constructor arguments: the command table, the reader's own
    patterns, the size of its callback queue."""
    return (commands.spec(), ",".join(ROWS_OF_NESTED_READS), ",".join(ROW_PRESERVING),
            STATUS_SCAN, METRIC.pattern, ROWS.pattern, queue_size)


def make_gatherer(gateway: Any, jsession: Any, queue_size: int
                  ) -> tuple[Any | None, gatherer.Loaded]:
    """A ``FactGatherer`` for one session, configured with the command table and the
    reader's own patterns, and how its class was loaded (None: unavailable)."""
    loaded = gatherer.load(gateway, jsession)
    if loaded.cls is None:
        return None, loaded
    try:
        return gatherer.new(loaded, *gatherer_config(queue_size)), loaded
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
        self.py4j = Py4jReads(gateway, jsession)
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
            reading.root = self.py4j.command_name(plan) if facts.succeeded \
                else simple_name(str(plan.getClass().getName()))
            acc_ids: list[int] = []
            command = COMMANDS.get(reading.root)
            if facts.succeeded and command is not None:
                facts.write_metrics, acc_ids = self.py4j.write_metrics(qe)
            elif facts.succeeded and func_name in ROWS_OF_NESTED_READS:
                # a JDBC write's data goes out through a nested foreachPartition: its
                # query's row count is the write's row count
                rows, acc = self.py4j.rows_below(qe.executedPlan())
                if rows is not None:
                    facts.write_metrics = {"queryOutputRows": rows}
                    acc_ids = [acc]
            self.py4j.execution_ids(qe, facts, acc_ids)
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
        reading.root = raw.get("command") or simple_name(str(raw["root"]))
        if "write_metrics" in raw:
            facts.write_metrics, _ = parse_write_metrics(raw["write_metrics"],
                                                          raw.get("child_rows"))
        elif raw.get("nested_rows") is not None:
            rows, _ = parse_rows(raw["nested_rows"])
            if rows is not None:
                facts.write_metrics = {"queryOutputRows": rows}
        facts.scans = [scan_facts(x) for x in raw.get("scans") or ()]
        facts.run = {str(k): float(v) for k, v in (raw.get("run") or {}).items()}
        facts.observed = {str(k): v for k, v in (raw.get("observed") or {}).items()}
        if "execution_id" in raw:
            facts.execution_id = int(raw["execution_id"])
            facts.root_execution_id = int(raw["root_execution_id"])
            facts.description = raw.get("description")
            facts.root_description = raw.get("root_description")

    def _committed(self, reading: Reading) -> None:
        """A write without row counts: what its table format committed (Iceberg, Delta),
        and the table's schema after it where the format says (Delta)."""
        facts, command = reading.facts, COMMANDS.get(reading.root)
        if command is None or command.metrics != "committed" or not facts.succeeded \
                or "numOutputRows" in facts.write_metrics:
            return
        started = time.time() - (facts.duration_ns or 0) / 1e9
        with quiet():
            metrics, schema = table_formats.committed(
                self.gateway, self.jsession, reading.live_plan(), reading.root, started)
            facts.write_metrics.update(metrics)
            if schema is not None and facts.command is not None:
                facts.command.table_schema = schema

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
                facts.plan = [self.py4j.light_head(plan, root)]
            else:
                facts.plan = json.loads(plan.toJSON())
            head = facts.plan[0] if facts.plan else {}
            if facts.succeeded:
                facts.sql_text = option_str(plan.origin().sqlText())
                if facts.sql_text is None and isinstance(head.get("query"), list):
                    # Spark 4 CTAS: the command's own origin is empty, its query's is not
                    with quiet():
                        facts.sql_text = option_str(plan.query().origin().sqlText())
            command = COMMANDS.get(root)
            if command is not None:
                values = {r.key: self.py4j.read(plan, r) for r in command.reads}
                facts.command = commands.command_facts(root, head, values)
                self._committed(reading)
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
            self._committed(reading)
        if facts.succeeded and "leaves" in raw:  # not for a light read
            groups = raw["leaves"]
            if not self._leaves_gathered(groups, facts, root):
                self._leaves(reading.live_plan(), facts, root)

    @staticmethod
    def _failed(facts: QueryFacts, exc: Exception) -> None:
        facts.read_error = f"{type(exc).__name__}: {exc}"[:500]
        facts.partial = True
        logger.debug("plan read failed: %s", facts.read_error)

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
            fields = COMMANDS[root].query_fields
            query = head.get(fields[0]) if fields else None
            return True, query if isinstance(query, list) else []
        return False, facts.plan or []

    def _leaves(self, plan: Any, facts: QueryFacts, root: str) -> None:
        """The inputs through py4j (``Py4jReads.leaves``)."""
        if self._too_big(facts):
            return
        leaf_command, tree = self._main_tree(facts, root)
        fields = COMMANDS[root].query_fields if leaf_command else None
        self.py4j.leaves(plan, facts, fields, tree, self.budget_ms / 1000.0)

    def _leaves_gathered(self, groups: list[list[dict[str, Any]]], facts: QueryFacts,
                         root: str) -> bool:
        """``_leaves`` from the gatherer's leaf groups (main tree, then each subquery).
        False when its main group does not line up with the plan's JSON (read live)."""
        if self._too_big(facts) or not groups:
            return True
        main = json_leaves(self._main_tree(facts, root)[1])
        if len(main) != len(groups[0]):
            return False
        leaves: list[LeafFacts] = []
        for i, group in enumerate(groups):
            known = main if i == 0 else [json.loads(x["json"])[0] for x in group]
            leaves.extend(leaf_facts(d, lambda x=x: x) for d, x in zip(known, group))
        facts.leaves = leaves
        return True

class Reading:
    """One callback being read: its facts so far and the live objects phase 2 needs."""

    __slots__ = ("facts", "qe", "plan", "root", "done", "spent", "eager_finish")

    def __init__(self, facts: QueryFacts, qe: Any):
        self.facts = facts
        self.qe = qe
        self.plan: Any = None  # the live plan (py4j), fetched when first needed
        # the command table's name of the plan's root: its simple class name, or
        # commands.GENERIC for a write the table does not know
        self.root = ""
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


# -- Structured Streaming ----------------------------------------------------------------

def stream_item(text: str) -> tuple[dict[str, Any], StreamFacts | None]:
    """One item of ``StreamWatch`` (``FactGatherer.next``): its fields, and for a run's
    "start" item the run's facts (None when they could not be read)."""
    header, _, plan_json = text.partition("\n")
    raw = json.loads(header)
    if raw.get("stream") != "start":
        return raw, None
    if raw.get("read_error") or "sink" not in raw:
        logger.debug("streaming query facts not read: %s", raw.get("read_error"))
        return raw, None
    plan = json.loads(plan_json) if plan_json else None
    query = QueryFacts(func_name="stream", succeeded=True, plan=plan)
    groups = (raw.get("facts") or {}).get("leaves") or []
    main = json_leaves(plan or [])
    if groups and len(main) == len(groups[0]):
        for i, group in enumerate(groups):
            known = main if i == 0 else [json.loads(x["json"])[0] for x in group]
            query.leaves.extend(leaf_facts(d, lambda x=x: x) for d, x in zip(known, group))
        for leaf, extra in zip(query.leaves, raw.get("stream_leaves") or []):
            _stream_leaf(leaf, extra)
    else:  # the leaves do not line up with the plan: inputs unknown
        query.partial = True
    sink = dict(raw["sink"])
    table = sink.get("table")
    facts = StreamFacts(
        id=str(raw["id"]), run_id=str(raw["run_id"]), name=raw.get("name"),
        sink=StreamSink(
            cls=str(sink.get("cls")), path=sink.get("path"),
            table=None if table is None else (table.get("catalog"),
                                              tuple(table.get("namespace") or ()),
                                              str(table["name"])),
            table_schema=sink.get("table_schema"),
            partition_columns=list(sink.get("partition_columns") or ()),
            kafka_servers=sink.get("kafka_servers"), kafka_topic=sink.get("kafka_topics")),
        schema=raw.get("schema"), query=query)
    return raw, facts


def _stream_leaf(leaf: LeafFacts, extra: dict[str, Any]) -> None:
    """A streaming source's facts (``StreamWatch.streamLeaf``) into its leaf."""
    if not extra:
        return
    table = extra.get("table")
    if table is not None:
        leaf.table = (table.get("catalog"), tuple(table.get("namespace") or ()),
                      str(table["name"]))
    elif simple_name(str(extra.get("table_cls"))) == "SparkTable" \
            and "/" not in str(extra.get("v2_name")):
        # Iceberg's, read by readStream.format("iceberg").load(name): Spark keeps no
        # identifier; the table's own name is catalog.namespace.table (a path: unnamed)
        leaf.table = commands.parse_identifier(extra.get("v2_name"))
    if extra.get("paths"):
        leaf.paths = [str(p) for p in extra["paths"]]
    kafka_leaf(leaf, extra)
