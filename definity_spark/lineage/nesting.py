"""One logical write = one transformation, even when Spark runs it as nested executions.

``saveAsTable`` and every CTAS run the data write as a nested SQL execution inside the
outer command's execution (Spark 4's ``saveAsTable`` even nests three deep:
``SaveAsV1TableCommand`` > ``CreateDataSourceTableAsSelectCommand`` > the insert). The
listener sees the nested executions first, the outer one last. ``NestedWrites`` holds the
nested outcomes by their root SQL execution id and, when the root's own callback arrives,
folds them into one: the outer command's name and schema, the nested write's row/byte/file
metrics, the inputs of whichever level has them.

The pairing is exact where the facts carry SQL execution ids for both sides (Spark 4:
``QueryExecution.queryId`` is the status store's ``queryId``; Spark 3.5: a write's metric
accumulator ids appear in the status store's execution metrics). A Spark 3.5 outer CTAS
command has neither (no metrics, no queryId): it claims the oldest pending group whose
nested QueryExecutions were created after it (a nested QueryExecution is always created
while its outer one runs, so its ``qe.id`` is larger). A Spark 3.5 write with no metrics
at all (V1-fallback V2 writes such as the JDBC v2 catalog) has no execution id either: it is
held until the next callback, which claims it when that is an outer command without ids,
created before it, for the same target (the outer callback always directly follows its
nested ones); otherwise it is released then, or after an idle period / ``drain``.
See docs/coverage.md.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import replace

from definity_spark.lineage import columns
from definity_spark.lineage.commands import COMMANDS
from definity_spark.lineage.plan import simple_name
from definity_spark.lineage.rules import (
    FAILED,
    IGNORE_NOTHING_WRITTEN,
    IGNORED,
    READ,
    WRITE,
    Options,
    Outcome,
    describe_write,
)

logger = logging.getLogger("definity_spark.lineage")

MAX_PENDING_GROUPS = 256


class NestedWrites:
    """Pairs nested executions with their root (single-threaded: the extraction worker)."""

    def __init__(self) -> None:
        self._pending: dict[int, list[Outcome]] = OrderedDict()
        # a write without execution ids (Spark 3.5, no write metrics: V1-fallback V2 and
        # JDBC writes) waits for the next callback: if that is an outer command without
        # ids created before it, for the same target, it is that command's nested write
        self._held: list[Outcome] = []

    def idle(self) -> bool:
        """Nothing is waiting for a later callback."""
        return not self._pending and not self._held

    def feed(self, outcome: Outcome) -> list[Outcome]:
        """Take one callback's outcome; return the outcomes that are final now."""
        released: list[Outcome] = []
        claimed: list[Outcome] = []
        if self._held:
            if self._claims_held(outcome):
                claimed, self._held = self._held, []
            elif not _nested(outcome):
                # a write to a staged table waits for its CTAS/RTAS whatever comes
                # between (Delta runs its own queries in between); a nested callback
                # belongs to a command still running: it releases nothing
                released = [h for h in self._held if not h.extras.get("staged")]
                self._held = [h for h in self._held if h.extras.get("staged")]
        return released + self._hold_or_return(self._feed(outcome, claimed))

    def _claims_held(self, outcome: Outcome) -> bool:
        if outcome.kind == FAILED and outcome.wrapper and outcome.execution_id is None:
            # Spark 3.5 failed CTAS: the failed nested insert (or the staged write), then
            # the failed outer command: one failed logical write
            return all((h.kind == FAILED or h.extras.get("staged")) and (
                outcome.qe_id is None or h.qe_id is None or h.qe_id > outcome.qe_id)
                for h in self._held)
        if not (outcome.wrapper and outcome.kind == WRITE and outcome.lineage is not None):
            return False
        for h in self._held:
            if h.kind != WRITE or h.lineage is None or (
                    outcome.qe_id is not None and h.qe_id is not None
                    and h.qe_id < outcome.qe_id):
                return False
            if h.lineage.output.name != outcome.lineage.output.name:
                return False
        return True

    def _hold_or_return(self, finals: list[Outcome]) -> list[Outcome]:
        out: list[Outcome] = []
        for o in finals:
            if o.kind in (WRITE, FAILED) and o.execution_id is None and o.qe_id is not None:
                self._held.append(o)
            else:
                out.append(o)
        return out

    def release_held(self) -> list[Outcome]:
        """Writes held for a possible outer command: final now (queue idle / drain)."""
        held, self._held = self._held, []
        return held

    def _feed(self, outcome: Outcome, claimed: list[Outcome]) -> list[Outcome]:
        ex, root = outcome.execution_id, outcome.root_execution_id
        if _nested(outcome):
            if outcome.kind in (WRITE, FAILED) or (outcome.kind == READ and (
                    "rows" in outcome.extras or "run" in outcome.extras)):
                group = self._pending.setdefault(root, [])
                group.extend(claimed)
                group.append(outcome)
                if len(self._pending) > MAX_PENDING_GROUPS:  # a root that never came
                    _, group = self._pending.popitem(last=False)
                    logger.debug("nested group without root flushed")
                    return [o for o in group if o.kind == WRITE]
            # nested reads (a JDBC write's own schema query, a table format's internal
            # queries) belong to the root: only their rows and how they ran count
            return []
        group = None
        if ex is not None and ex in self._pending:
            group = self._pending.pop(ex)
        elif ex is None and outcome.wrapper and self._pending:
            group = self._claim_for_outer(outcome)
        group = claimed + (group or [])
        if _nothing_written(outcome, group):
            return [replace(outcome, kind=IGNORED, lineage=None, reason=IGNORE_NOTHING_WRITTEN)]
        if not group:
            return [outcome]
        return _merge(outcome, group)

    def _claim_for_outer(self, outcome: Outcome):
        for key, group in self._pending.items():
            if outcome.qe_id is None or all(
                    o.qe_id is None or o.qe_id > outcome.qe_id for o in group):
                return self._pending.pop(key)
        return None

    def flush(self) -> list[Outcome]:
        """Pending nested writes whose root never reported: each is its own write."""
        out: list[Outcome] = self.release_held()
        for group in self._pending.values():
            out.extend(o for o in group if o.kind in (WRITE, FAILED))
        self._pending.clear()
        return out

    def pending(self) -> int:
        return sum(len(g) for g in self._pending.values())


def _nested(outcome: Outcome) -> bool:
    """A callback known to run inside another SQL execution."""
    ex, root = outcome.execution_id, outcome.root_execution_id
    return ex is not None and root is not None and ex != root


def _nothing_written(outer: Outcome, group: list[Outcome]) -> bool:
    """A wrapper in mode ignore (saveAsTable / save "ignore", a CTAS that ignores an
    existing table) whose nested write never came: the target existed, nothing written."""
    if outer.kind != WRITE or not outer.wrapper \
            or (outer.extras.get("mode") or "").lower() != "ignore":
        return False
    return not any(o.kind == WRITE or "rows" in o.extras for o in group)


# run metrics that are a largest value, not a sum (docs/metrics.md); the skew's stage id
# and task count go with the largest ratio
_RUN_MAX = ("peak_execution_memory_bytes",)
_SKEW = ("skew_ratio", "skew_stage_id", "skew_stage_tasks")


def add_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    """How several SQL executions of one logical write (or a task's writes) ran, together:
    counts and times summed, the peak the largest, the most skewed stage kept."""
    out: dict[str, float] = {}
    for run in runs:
        for key, value in run.items():
            if key in _SKEW:
                continue
            out[key] = max(out.get(key, 0), value) if key in _RUN_MAX \
                else out.get(key, 0) + value
        if run.get("skew_ratio", 0) > out.get("skew_ratio", 0):
            out.update({k: run[k] for k in _SKEW if k in run})
    return out


def _merge(outer: Outcome, group: list[Outcome]) -> list[Outcome]:
    inner_writes = [o for o in group if o.kind == WRITE and o.lineage is not None]
    if outer.kind == FAILED:
        return [outer]  # one failed logical write, counted once
    if outer.kind != WRITE or outer.lineage is None:
        if outer.kind in (READ, IGNORED):
            # the root is not a write (e.g. a command that runs writes of its own):
            # every nested write is a transformation of its own
            return [outer] + [o for o in group if o.kind in (WRITE, FAILED)]
        return [outer]
    nested_rows = [o.extras["rows"] for o in group if o.kind == READ and "rows" in o.extras]
    nested_runs = [o.extras["run"] for o in group if o.kind == READ and "run" in o.extras]
    # data quality measured in a nested query that carried the rows (JDBC, Delta)
    nested_quality = next((o.extras["quality"] for o in reversed(group)
                           if o.kind == READ and o.extras.get("quality")), {})
    if not inner_writes:
        if not nested_rows and any(o.kind == FAILED for o in group):
            return [replace(outer, kind=FAILED, lineage=None,
                            error=next(o.error for o in group if o.kind == FAILED))]
        lineage = outer.lineage
        if nested_quality and not lineage.quality:
            lineage = replace(lineage, quality=nested_quality)
        metrics = dict(lineage.metrics)
        if nested_rows and "cnt" not in metrics:
            # JDBC write: the rows went out through the nested query execution
            metrics["cnt"] = float(sum(nested_rows))
        run = add_runs([lineage.run] + nested_runs)
        return [replace(outer, lineage=replace(lineage, metrics=metrics, run=run))]
    lin = outer.lineage
    # metrics of the deepest write that has row counts (the actual data write)
    with_rows = [o for o in inner_writes if "cnt" in o.lineage.metrics]
    source = with_rows[-1] if with_rows else inner_writes[-1]
    metrics = dict(source.lineage.metrics)
    if "duration_ms" in lin.metrics:
        metrics["duration_ms"] = lin.metrics["duration_ms"]  # the whole logical write
    for k, v in lin.metrics.items():
        metrics.setdefault(k, v)
    if "cnt" not in metrics and nested_rows:
        metrics["cnt"] = float(sum(nested_rows))  # V2 CTAS over a V1-fallback (JDBC) write
    inputs = lin.inputs
    if not inputs:
        for o in inner_writes:
            if o.lineage.inputs:
                inputs = o.lineage.inputs
                break
    schema = lin.output.schema
    if not schema:
        for o in inner_writes:
            if o.lineage.output.schema:
                schema = o.lineage.output.schema
                break
    name = lin.output.name
    command = COMMANDS.get(simple_name(outer.command_class or ""))
    if command is not None and command.named_by_nested:
        # the nested write has the name qualified: database.table, or file:/path where the
        # outer command (INSERT OVERWRITE DIRECTORY) holds the path as written
        for o in inner_writes:
            inner = o.lineage.output
            if inner.ds_type == lin.output.ds_type and inner.name != name and (
                    inner.name.endswith("." + name) or inner.name.endswith(":" + name)):
                name = inner.name
                break
    query_str = lin.query_str
    if not outer.extras.get("sql") and outer.extras.get("call") and name != lin.output.name:
        query_str = describe_write(name, outer.extras.get("call"), outer.extras.get("mode"),
                                   outer.command_class or "", Options(),
                                   outer.extras.get("format"))
    elif not outer.extras.get("sql") and not outer.extras.get("call"):
        # Spark 3.5 outer commands carry no execution description: the nested write
        # knows its root's (``saveAsTable at ...``)
        call = next((o.extras.get("root_call") for o in inner_writes
                     if o.extras.get("root_call")), None)
        if call:
            query_str = describe_write(name, call, outer.extras.get("mode"),
                                       outer.command_class or "", Options(),
                                       outer.extras.get("format"))
    column_lineage = lin.column_lineage
    if column_lineage is not None and not column_lineage.columns:
        # the outer command was read without its query: the nested write has the plan
        for o in inner_writes:
            inner = o.lineage.column_lineage
            if inner is not None and inner.columns:
                column_lineage = columns.for_columns(inner, [c for c, _ in schema])
                break
    run = add_runs([lin.run] + [o.lineage.run for o in inner_writes] + nested_runs)
    # data quality: measured in the pass that wrote the rows (the nested write's)
    quality = lin.quality or next(
        (o.lineage.quality for o in reversed(inner_writes) if o.lineage.quality),
        nested_quality)
    merged = replace(lin, output=replace(lin.output, name=name, schema=schema), inputs=inputs,
                     query_str=query_str, column_lineage=column_lineage, run=run,
                     quality=quality,
                     metrics=metrics, partial=lin.partial or any(o.lineage.partial
                                                                 for o in inner_writes))
    return [replace(outer, lineage=merged)]
