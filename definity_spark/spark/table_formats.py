"""What a table format committed for a write whose plan counted no rows (py4j).

Iceberg's row-level writes and Delta's writes report no Spark write metric: the table's
own commit says what was written. Both answers use Spark's write-metric names
(``numOutputRows``, ``numOutputBytes``, ``numFiles``, ``numRemovedFiles``), so the rules
map them as they map the plan's (``commands.PLAN_METRICS``). Delta also gives the table's
schema after the write (``mergeSchema`` adds columns the plan does not show).

Delta: the newest commit of the table, read once the write's callback is taken (its
commit is the newest then). It must be a write of this command's kind, made since the
query started (give or take ``COMMIT_SLACK_S``): an older commit is another write's. A
later write to the same table that commits before the plugin reads this one would still
be taken for it (docs/coverage.md). Read through py4j on the extraction worker.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Optional

from definity_spark.lineage.plan import simple_name

logger = logging.getLogger("definity_spark.spark")

COMMIT_SLACK_S = 10.0  # the reader's lag behind the query's end it accepts
_SUMMARY = re.compile(r"([a-z\-]+)=(\d+)")
_OPERATION_METRIC = re.compile(r"(\w+) -> (\d+)")
# Delta's operation (CommitInfo.operation) of each command that writes through it
DELTA_OPERATIONS = {
    "SaveIntoDataSourceCommand": ("WRITE",),
    "AppendData": ("WRITE",),
    "OverwriteByExpression": ("WRITE",),
    "OverwritePartitionsDynamic": ("WRITE",),
    "CreateTableAsSelect": ("CREATE TABLE AS SELECT",),
    "ReplaceTableAsSelect": ("REPLACE TABLE AS SELECT", "CREATE OR REPLACE TABLE AS SELECT"),
}


Committed = tuple[dict[str, float], Optional[dict[str, Any]]]  # metrics, table schema


def committed(gateway: Any, jsession: Any, cmd: Any, root: str, started_s: float
              ) -> Committed:
    """What the write command ``cmd`` (its command-table name ``root``) committed:
    Iceberg's snapshot summary or Delta's commit operation metrics and schema; nothing for
    another format. ``started_s``: when the query started (epoch seconds, at the latest)."""
    table = _written_table(cmd, root)
    if table is None:
        if root == "SaveIntoDataSourceCommand" and "delta" in str(
                cmd.dataSource().getClass().getName()).lower():
            path = cmd.options().get("path")
            if path.isDefined():
                log = gateway.jvm.org.apache.spark.sql.delta.DeltaLog.forTable(
                    jsession, str(path.get()))
                return delta_commit(gateway, log, root, started_s)
        return {}, None
    cls = str(table.getClass().getName())
    if "iceberg" in cls.lower():
        return iceberg_snapshot(table), None
    if simple_name(cls) == "DeltaTableV2":
        return delta_commit(gateway, table.deltaLog(), root, started_s)
    return {}, None


def _written_table(cmd: Any, root: str) -> Any:
    """The catalog table a V2 write or CTAS wrote (None: not a V2 table)."""
    if root in ("CreateTableAsSelect", "ReplaceTableAsSelect"):
        name = cmd.name()  # ResolvedIdentifier: the table as it is now, after the write
        return name.catalog().loadTable(name.identifier())
    if root == "SaveIntoDataSourceCommand":
        return None
    table = cmd.table().table()  # DataSourceV2Relation -> its Table
    if simple_name(str(table.getClass().getName())) == "RowLevelOperationTable":
        table = table.table()  # MERGE/UPDATE/DELETE wrap the table
    return table


def iceberg_snapshot(table: Any) -> dict[str, float]:
    """The snapshot the write committed (summary ``added-*``)."""
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


def delta_commit(gateway: Any, delta_log: Any, root: str, started_s: float) -> Committed:
    """The operation metrics of the table's newest commit, when it is a write of this
    command's kind (``DELTA_OPERATIONS``) made since ``started_s``; the table's schema."""
    schema = json.loads(str(delta_log.unsafeVolatileSnapshot().schema().json()))
    history = delta_log.history().getHistory(gateway.jvm.scala.Some(1))
    if history.size() == 0:
        return {}, schema
    commit = history.apply(0)
    operation = str(commit.operation())
    if operation not in DELTA_OPERATIONS.get(root, ()):
        logger.debug("newest Delta commit is a %s, not this %s: no commit metrics",
                     operation, root)
        return {}, schema
    if commit.timestamp().getTime() / 1000.0 < started_s - COMMIT_SLACK_S:
        logger.debug("newest Delta commit is older than the write: no commit metrics")
        return {}, schema
    return {k: float(v) for k, v in
            _OPERATION_METRIC.findall(str(commit.operationMetrics().toString()))}, schema
