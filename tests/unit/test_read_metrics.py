"""Per-input read metrics (docs/metrics.md): a scan's metrics as the gatherer gives them,
mapped back to the write's inputs by the rules (pure: recorded shapes, no JVM)."""

from __future__ import annotations

from definity_spark.lineage.facts import Attr, LeafFacts, QueryFacts
from definity_spark.lineage.rules import Options, _inputs
from definity_spark.spark.metric_text import scan_facts

# FileSourceScanExec.metrics().toString() as Spark 3.5 prints it (shortened)
FILE_SCAN = ("Map(numFiles -> SQLMetric(id: 41, name: Some(number of files read), value: 3), "
             "pruningTime -> SQLMetric(id: 44, name: Some(dynamic partition pruning time), "
             "value: -1), metadataTime -> SQLMetric(id: 42, name: Some(metadata time), "
             "value: 0), filesSize -> SQLMetric(id: 43, name: Some(size of files read), "
             "value: 5262), numOutputRows -> SQLMetric(id: 40, name: Some(number of output "
             "rows), value: 1000), numPartitions -> SQLMetric(id: 45, name: Some(number of "
             "partitions read), value: 2))")
JDBC_SCAN = "Map(numOutputRows -> SQLMetric(id: 7, name: Some(number of output rows), value: 3))"
TABLE = {"table": "m_tab", "database": "default"}


def _scan(metrics: str, **raw: object) -> LeafFacts:
    return scan_facts({"cls": "org.apache.spark.sql.execution.FileSourceScanExec",
                       "metrics": metrics, **raw})


def _leaf(table: str) -> LeafFacts:
    return LeafFacts(cls="org.apache.spark.sql.execution.datasources.LogicalRelation",
                     output=[Attr(name="id", expr_id=1)],
                     table=(None, ("default",), table))


def test_a_file_scans_metrics_by_their_spark_names() -> None:
    scan = _scan(FILE_SCAN, table=TABLE)
    assert scan.scan_metrics == {"read_rows": 1000, "read_bytes": 5262, "read_files": 3,
                                 "read_partitions": 2}
    assert scan.table == (None, ("default",), "m_tab")


def test_what_spark_did_not_measure_is_absent() -> None:
    assert _scan(JDBC_SCAN).scan_metrics == {"read_rows": 3}  # JDBC: no bytes, no files
    never_ran = FILE_SCAN.replace("value: 5262", "value: -1")  # a size metric never set
    assert "read_bytes" not in _scan(never_ran).scan_metrics


def test_every_scan_of_an_input_counts_and_others_are_not_inputs() -> None:
    facts = QueryFacts(func_name="command", succeeded=True,
                       leaves=[_leaf("m_tab"), _leaf("m_tab"), _leaf("dims")],
                       scans=[_scan(FILE_SCAN, table=TABLE), _scan(FILE_SCAN, table=TABLE),
                              _scan(JDBC_SCAN, table={"table": "elsewhere",
                                                      "database": "default"})])
    inputs = {i.name: i.metrics for i in _inputs(facts, Options())[0]}
    assert inputs == {"default.m_tab": {"read_rows": 2000, "read_bytes": 10524,
                                        "read_files": 6, "read_partitions": 4},
                      "default.dims": {}}


def test_a_v2_scan_is_matched_by_its_tables_name() -> None:
    v2 = scan_facts({"cls": "org.apache.spark.sql.execution.datasources.v2.BatchScanExec",
                     "metrics": JDBC_SCAN, "v2_name": "db.events"})
    leaf = LeafFacts(cls="org.apache.spark.sql.execution.datasources.v2.DataSourceV2Relation",
                     table=("ice", ("db",), "events"))
    facts = QueryFacts(func_name="command", succeeded=True, leaves=[leaf], scans=[v2])
    (only,) = _inputs(facts, Options())[0]
    assert (only.name, only.metrics) == ("ice.db.events", {"read_rows": 3})


def test_an_iceberg_scan_gives_its_own_file_counts_and_sizes() -> None:
    metrics = ("Map(numOutputRows -> SQLMetric(id: 7, name: Some(number of output rows), "
               "value: 500), totalDataFileSize -> SQLMetric(id: 9, name: Some(total data file "
               "size (bytes)), value: 4096), resultDataFiles -> SQLMetric(id: 10, name: "
               "Some(number of result data files), value: 2), skippedDataFiles -> SQLMetric("
               "id: 11, name: Some(number of skipped data files), value: 0))")
    scan = scan_facts({"cls": "org.apache.spark.sql.execution.datasources.v2.BatchScanExec",
                       "metrics": metrics, "v2_name": "ice.m.m_ev"})
    assert scan.scan_metrics == {"read_rows": 500, "read_bytes": 4096, "read_files": 2}


def test_utilization_is_task_time_over_core_seconds_at_most_one() -> None:
    from definity_spark.spark.metric_text import app_metrics

    # the gatherer's appSummary of a saturated local[1] application (recorded: 6,030 tasks)
    saturated = {"executors_added": 0, "executors_removed": 0,
                 "executor_core_seconds": 53.313, "task_time_seconds": 54.844}
    out = app_metrics(saturated)
    assert out["utilization"] == 1.0
    assert out["task_time_seconds"] == 54.844  # the raw figures stay as they are
    assert app_metrics({**saturated, "task_time_seconds": 12.0})["utilization"] == 0.2251
    assert "utilization" not in app_metrics({**saturated, "executor_core_seconds": 0})
    assert all(isinstance(v, float) for v in out.values())
