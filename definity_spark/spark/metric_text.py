"""Spark's metrics as text (a plan node's ``metrics`` map's ``toString``, as py4j and the
gatherer both read it): write metrics, row counts, scan metrics. Pure: no py4j.
"""

from __future__ import annotations

import re
from typing import Any

from definity_spark.lineage.commands import table_from_json
from definity_spark.lineage.facts import LeafFacts

# (the gatherer is given the same patterns and bounds: facts.gatherer_config)
METRIC = re.compile(r"(\w+) -> SQLMetric\(id: (\d+), name: .*?, value: (-?[\d.]+)\)")
ROWS = re.compile(r"numOutputRows -> SQLMetric\(id: (\d+), name: .*?, value: (-?[\d.]+)\)")


# a scan node's metrics -> the per-input metric types (docs/metrics.md): Spark's file
# scans, and Iceberg's own (a V2 scan's custom metrics, keyed by their names)
SCAN_METRICS = {"numOutputRows": "read_rows", "filesSize": "read_bytes",
                "numFiles": "read_files", "numPartitions": "read_partitions",
                "totalDataFileSize": "read_bytes", "resultDataFiles": "read_files"}


def scan_facts(raw: dict[str, Any]) -> LeafFacts:
    """One scan of the gatherer's ``scans``: what names its dataset and what it read."""
    metrics = {m.group(1): float(m.group(3)) for m in METRIC.finditer(raw.get("metrics") or "")}
    # a metric never set (a scan that did not run: AQE skipped its side) keeps Spark's
    # initial -1 of size metrics: not measured, so absent
    facts = LeafFacts(cls=str(raw.get("cls")), v2_name=raw.get("v2_name"),
                      jdbc_url=raw.get("jdbc_url"), jdbc_table=raw.get("jdbc_table"),
                      scan_metrics={name: metrics[key] for key, name in SCAN_METRICS.items()
                                    if metrics.get(key, -1) >= 0})
    facts.table = table_from_json(raw.get("table"))
    if raw.get("paths"):
        facts.paths = [p for p in str(raw["paths"]).split("\n") if p]
    return facts


def parse_rows(metrics: str) -> tuple[float | None, int]:
    """(numOutputRows, its accumulator id) of a metrics map's text."""
    m = ROWS.search(metrics)
    return (float(m.group(2)), int(m.group(1))) if m else (None, -1)


def parse_write_metrics(metrics: str, child_rows: str | None
                        ) -> tuple[dict[str, float], list[int]]:
    """The write node's metrics and their accumulator ids, from its metrics map's text.
    DataSource V2 writes (Iceberg, JDBC catalog) report no row count of their own: the
    rows written are the rows their query produced (``child_rows``: the metrics of the
    first node below that counts them)."""
    out: dict[str, float] = {}
    ids: list[int] = []
    for m in METRIC.finditer(metrics):
        out[m.group(1)] = float(m.group(3))
        ids.append(int(m.group(2)))
    if "numOutputRows" not in out and child_rows is not None:
        rows, acc = parse_rows(child_rows)
        if rows is not None:
            out["numOutputRows"] = rows
            ids.append(acc)
    return out, ids


def app_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The gatherer's ``appSummary`` as task-level metrics, with ``utilization``: task time
    over the executors' core-seconds, at most 1 (Spark's task time overlaps the next
    task's on a freed core; docs/metrics.md)."""
    out = {str(k): float(v) for k, v in summary.items()}
    cores = out.get("executor_core_seconds", 0.0)
    if cores > 0:
        out["utilization"] = min(1.0, round(out.get("task_time_seconds", 0.0) / cores, 4))
    return out
