"""The wire model serialises to exactly the shapes of ../shared/definity-api.md."""

import json

from definity_spark import wire


def test_task_start_exact_shape():
    body = wire.TaskStart(task_id="app-1-abc", app_name="p", task_name="t", env="dev",
                          app_pit="2025-09-01", tags={"team": "data"}).to_json()
    assert body == {"task_id": "app-1-abc", "status": "start", "app_name": "p",
                    "task_name": "t", "task_type": "spark", "env": "dev",
                    "app_pit": "2025-09-01", "tags": {"team": "data"}}
    assert wire.TaskStart.endpoint == "/log/task"


def test_task_start_leaves_out_unset_optionals():
    body = wire.TaskStart(task_id="x", app_name="p", task_name="t").to_json()
    assert body == {"task_id": "x", "status": "start", "app_name": "p", "task_name": "t",
                    "task_type": "spark"}


def test_task_end_exact_shape():
    assert wire.TaskEnd(task_id="x").to_json() == {"task_id": "x", "status": "end"}


def test_transformation_matches_documented_example():
    tf = wire.Transformation(
        task_id="t1", tf_id=1, output_name="shared_db.table_b",
        inputs={"shared_db.table_a": ("id", "name", "event_type")},
        query_str="CREATE TABLE shared_db.table_b AS SELECT id, name, upper(event_type) "
                  "AS event_type_upper FROM shared_db.table_a",
    )
    assert json.dumps(tf.to_json()) == json.dumps({
        "task_id": "t1", "tf_id": 1, "status": "end",
        "query_str": "CREATE TABLE shared_db.table_b AS SELECT id, name, upper(event_type) "
                     "AS event_type_upper FROM shared_db.table_a",
        "input_datasets": {"shared_db.table_a": {"columns": ["id", "name", "event_type"]}},
        "output": {"name": "shared_db.table_b"},
    })
    assert tf.endpoint == "/log/tf"


def test_transformation_types_and_unknown_columns():
    body = wire.Transformation(task_id="t", tf_id=3, output_name="o",
                               inputs={"a": None, "b": []}).to_json()
    assert isinstance(body["tf_id"], int) and isinstance(body["task_id"], str)
    assert body["input_datasets"] == {"a": {}, "b": {"columns": []}}
    assert "query_str" not in body


def test_dataset_schema_fields_numbered_from_zero():
    body = wire.DatasetSchema(task_id="t", tf_id=2, ds_name="db.t", ds_type="table",
                              fields=[("id", "INTEGER"), ("name", "STRING")]).to_json()
    assert body == {"task_id": "t", "tf_id": 2, "ds_name": "db.t", "ds_type": "table",
                    "metadata": [
                        {"info_type": "schema_field", "info_value": "id-INTEGER", "info_num": 0},
                        {"info_type": "schema_field", "info_value": "name-STRING", "info_num": 1},
                    ]}


def test_metrics_shape():
    body = wire.Metrics(task_id="t", metrics=[wire.Metric("db.t", "cnt", 5)]).to_json()
    assert body == {"task_id": "t", "metrics": [
        {"asset_name": "db.t", "asset_type": "table", "metric_type": "cnt", "value": 5}]}


def test_envelope_roundtrip():
    payload = wire.TaskEnd(task_id="t")
    record = json.loads(json.dumps(wire.envelope(payload)))
    raw = wire.from_envelope(record)
    assert raw.endpoint == "/log/task" and raw.to_json() == payload.to_json()


def test_column_lineage_is_one_optional_field_added_last():
    from definity_spark.lineage.model import (
        ColumnDeps,
        ColumnLineage,
        InputLineage,
        OutputLineage,
        WriteLineage,
    )
    from definity_spark.task import build_payloads

    base = WriteLineage(output=OutputLineage("shared_db.table_b", "table"),
                        inputs=(InputLineage("shared_db.table_a", ("id", "event_type")),),
                        query_str="CREATE TABLE ...")
    without = build_payloads("t1", 1, base)[0].to_json()
    # no column lineage: the documented fields only, as before the field existed
    assert json.dumps(without) == json.dumps({
        "task_id": "t1", "tf_id": 1, "status": "end", "query_str": "CREATE TABLE ...",
        "input_datasets": {"shared_db.table_a": {"columns": ["id", "event_type"]}},
        "output": {"name": "shared_db.table_b"}})
    columns = ColumnLineage(columns=(
        ColumnDeps("id", direct={"shared_db.table_a": ("id",)}),
        ColumnDeps("event_type_upper", direct={"shared_db.table_a": ("event_type",)}),
        ColumnDeps("loaded_at")), indirect_all={"shared_db.table_a": ("id",)})
    import dataclasses

    with_it = build_payloads("t1", 1, dataclasses.replace(base, column_lineage=columns))
    body = with_it[0].to_json()
    assert list(body) == list(without) + ["column_lineage"]
    assert {k: v for k, v in body.items() if k != "column_lineage"} == without
    assert body["column_lineage"] == {
        "version": 1,
        "columns": [
            {"name": "id", "direct": {"shared_db.table_a": ["id"]}},
            {"name": "event_type_upper", "direct": {"shared_db.table_a": ["event_type"]}},
            {"name": "loaded_at", "no_inputs": True}],
        "indirect_all": {"shared_db.table_a": ["id"]}}
    # the dataset and metrics payloads do not change
    assert [p.to_json() for p in with_it[1:]] == \
        [p.to_json() for p in build_payloads("t1", 1, base)[1:]]
