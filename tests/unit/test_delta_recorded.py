"""Delta Lake commands over plan facts recorded from real Spark + Delta runs (no JVM).

Fixtures: tests/fixtures/plans/<spark>/delta_*.json (``record_plans.py --delta``: Delta
3.3.3 on Spark 3.5.9, Delta 4.4.0 on Spark 4.2.1). The integration module
(tests/integration/test_it_delta.py) checks the same commands end to end; here the rules
alone: how many transformations each scenario gives, and the column lineage of MERGE,
UPDATE and DELETE, whose assignments are fields of Delta's commands.
"""

from __future__ import annotations

import os

import pytest

from definity_spark.lineage.columns import to_json
from definity_spark.lineage.rules import WRITE

from .replay import PLANS, VERSIONS, replay

DELTA_VERSIONS = [v for v in VERSIONS
                  if os.path.exists(os.path.join(PLANS, v, "delta_merge_sql.json"))]
pytestmark = pytest.mark.skipif(not DELTA_VERSIONS, reason="no recorded Delta fixtures")

# scenario -> transformations (record_delta.py: one user action each; delta_checkpoint
# makes two writes, the second one crossing Delta's checkpoint interval)
TF_COUNT = {
    "delta_checkpoint": 2, "delta_clone_sql": 1, "delta_ctas_sql": 1,
    "delta_delete_api": 1, "delta_delete_path_api": 1, "delta_delete_sql": 1,
    "delta_describe_history": 0, "delta_insert_into_api": 1, "delta_insert_into_path_sql": 1,
    "delta_insert_into_sql": 1, "delta_insert_overwrite_sql": 1, "delta_merge_api": 1,
    "delta_merge_sql": 1, "delta_optimize": 0, "delta_optimize_zorder": 0,
    "delta_read_cdf": 1, "delta_read_only_count": 0, "delta_read_path": 1,
    "delta_read_path_sql": 1, "delta_read_table": 1, "delta_read_timestamp_as_of": 1,
    "delta_read_version_as_of": 1, "delta_read_version_option": 1,
    "delta_replace_table_sql": 1, "delta_rtas_sql": 1, "delta_save_as_table_append": 1,
    "delta_save_as_table_ignore": 0, "delta_save_as_table_new": 1,
    "delta_save_as_table_overwrite": 1, "delta_save_as_table_partitioned": 1,
    "delta_save_merge_schema": 1, "delta_save_overwrite_schema": 1,
    "delta_save_path_append": 1, "delta_save_path_ignore": 0, "delta_save_path_new": 1,
    "delta_save_path_overwrite": 1, "delta_save_path_partitioned": 1,
    "delta_save_replace_where": 1, "delta_update_api": 1, "delta_update_sql": 1,
    "delta_vacuum": 0, "delta_write_to_append": 1,
}


@pytest.fixture(params=DELTA_VERSIONS)
def v(request):
    return request.param


def writes(v, scenario):
    return [o.lineage for o in replay(v, scenario) if o.kind == WRITE]


def test_every_recorded_scenario_is_counted(v):
    recorded = sorted(f[:-5] for f in os.listdir(os.path.join(PLANS, v))
                      if f.startswith("delta_") and f != "delta_executions.json")
    assert recorded == sorted(TF_COUNT)


@pytest.mark.parametrize("scenario", sorted(TF_COUNT))
def test_one_logical_write_is_one_transformation(v, scenario):
    assert len(writes(v, scenario)) == TF_COUNT[scenario]


def columns(lineage):
    return to_json(lineage.column_lineage)


@pytest.mark.parametrize("scenario,target", [("delta_merge_sql", "dl.t_merge"),
                                             ("delta_merge_api", "dl.t_merge_api")])
def test_merge_columns_come_from_the_target_and_the_assignments(v, scenario, target):
    # MERGE INTO t USING dl.updates s ON t.id = s.id WHEN MATCHED THEN UPDATE SET
    # t.amount = s.amount WHEN NOT MATCHED THEN INSERT *: every column keeps the
    # target's values (copied, or matched and set to itself) or takes the source's
    (w,) = writes(v, scenario)
    assert w.output.name == target
    assert {i.name: i.columns for i in w.inputs} == {
        "dl.updates": ("id", "kind", "amount"), target: ("id", "kind", "amount")}
    assert columns(w) == {"version": 1, "columns": [
        {"name": c, "direct": {"dl.updates": [c], target: [c]}}
        for c in ("id", "kind", "amount")],
        # the match condition decides which rows take which clause
        "indirect_all": {"dl.updates": ["id"], target: ["id"]}}
    assert {k: w.metrics[k] for k in ("cnt", "rows_inserted", "rows_updated",
                                      "rows_deleted")} == {
        "cnt": 6, "rows_inserted": 1, "rows_updated": 1, "rows_deleted": 0}


@pytest.mark.parametrize("scenario,target", [("delta_update_sql", "dl.t_update"),
                                             ("delta_update_api", "dl.t_update_api")])
def test_update_columns_keep_the_target_and_the_assignment(v, scenario, target):
    # UPDATE t SET amount = amount * 2 WHERE kind = 'a': only amount is assigned, under
    # the condition on kind
    (w,) = writes(v, scenario)
    assert columns(w) == {"version": 1, "columns": [
        {"name": "id", "direct": {target: ["id"]}},
        {"name": "kind", "direct": {target: ["kind"]}},
        {"name": "amount", "direct": {target: ["amount"]}, "indirect": {target: ["kind"]}}]}
    assert w.metrics["rows_updated"] == 2 and w.metrics["cnt"] == 5


@pytest.mark.parametrize("scenario,target", [
    ("delta_delete_sql", "dl.t_delete"), ("delta_delete_api", "dl.t_delete_api"),
    ("delta_delete_path_api", "file:/TMP/delta/by_kind")])
def test_delete_keeps_every_column_and_its_condition_decides_rows(v, scenario, target):
    (w,) = writes(v, scenario)
    assert w.output.name == target
    assert columns(w) == {"version": 1, "columns": [
        {"name": c, "direct": {target: [c]}} for c in ("id", "kind", "amount")],
        "indirect_all": {target: ["id"]}}
    assert w.metrics["rows_deleted"] == 1


def test_clone_has_no_column_lineage_and_says_why(v):
    (w,) = writes(v, "delta_clone_sql")
    assert columns(w) == {"version": 1, "columns": [], "partial": True,
                          "reason": "no query in CloneTableCommand"}
