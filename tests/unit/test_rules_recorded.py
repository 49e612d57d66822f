"""Extraction rules over plan facts recorded from real Spark runs (no JVM).

Fixtures: tests/fixtures/plans/<spark version>/<scenario>.json, recorded by
tests/fixtures/record_plans.py. Every scenario is checked on every recorded version.
"""

from __future__ import annotations

import time

import pytest

from definity_spark.lineage.rules import FAILED, IGNORED, READ, WRITE, Options, extract, redact

from .replay import VERSIONS, load, replay

pytestmark = pytest.mark.skipif(not VERSIONS, reason="no recorded fixtures")


def writes(version, scenario):
    return [o.lineage for o in replay(version, scenario) if o.kind == WRITE]


@pytest.fixture(params=VERSIONS)
def v(request):
    return request.param


def inputs(lineage):
    return {i.name: i.columns for i in lineage.inputs}


def test_partitioned_parquet_write(v):
    (w,) = writes(v, "parquet_partitioned")
    assert w.output.name == "file:/TMP/data/events"
    assert w.output.ds_type == "path"
    # partition column last, as Spark reads the dataset back
    assert w.output.schema == (("id", "LONG"), ("name", "STRING"), ("grp", "LONG"))
    assert inputs(w) == {"file:/TMP/data/base": ("id", "name", "grp")}
    assert w.metrics["cnt"] == 10
    assert w.metrics["write_files"] >= 3 and w.metrics["write_bytes"] > 0
    assert w.query_str == "DataFrameWriter.parquet(file:/TMP/data/events) mode=errorifexists"


def test_ctas_is_one_tf_with_outer_name_and_inner_metrics(v):
    assert len(load(v, "ctas_sql")) == 2  # two executions...
    (w,) = writes(v, "ctas_sql")  # ...one transformation
    assert w.output.name == "default.t1" and w.output.ds_type == "table"
    assert w.output.schema == (("id", "LONG"), ("name", "STRING"))
    assert inputs(w) == {"file:/TMP/data/events": ("id", "name", "grp")}
    assert w.metrics["cnt"] == 3
    assert w.query_str.startswith("CREATE TABLE t1 USING parquet AS SELECT")


def test_save_as_table_nested_executions(v):
    (w,) = writes(v, "save_as_table")
    assert w.output.name == "default.t2"
    assert [c for c, _ in w.output.schema] == ["id", "name", "grp", "amount", "tags"]
    assert dict(w.output.schema)["amount"] == "DECIMAL(10,2)"
    assert dict(w.output.schema)["tags"] == "ARRAY<STRING>"
    assert w.metrics["cnt"] == 10
    assert w.query_str == "DataFrameWriter.saveAsTable(default.t2) mode=errorifexists"


def test_subqueries_scalar_in_exists_are_inputs_with_columns(v):
    (w,) = writes(v, "insert_subqueries")
    assert inputs(w) == {
        "default.t2": ("id", "name", "grp", "amount"),  # grp: correlated EXISTS
        "default.t1": ("id",),
    }


def test_union_and_ctes(v):
    (w,) = writes(v, "union_cte")
    assert inputs(w) == {"default.t1": ("id", "name"), "default.t2": ("id", "name")}


def test_views_and_cache_report_sources(v):
    (w,) = writes(v, "view_cache")
    assert w.output.name == "default.t3"
    assert inputs(w) == {"default.t2": ("id", "grp"), "file:/TMP/data/events": ("id", "name")}


def test_hive_tables_static_partition_and_ctas(v):
    ws = writes(v, "hive_tables")
    assert [w.output.name for w in ws] == ["default.h1", "default.h2"]
    h1, h2 = ws
    assert h1.output.schema == (("id", "LONG"), ("name", "STRING"), ("dt", "STRING"))
    assert inputs(h1) == {"default.t1": ("id", "name")}
    assert inputs(h2) == {"default.h1": ("id", "name", "dt")}
    assert h2.metrics["cnt"] == h1.metrics["cnt"]


def test_insert_overwrite_directory(v):
    (w,) = writes(v, "insert_directory")
    assert w.output.name == "file:/TMP/out/dir"
    assert inputs(w) == {"default.t1": ("id",)}
    assert "cnt" in w.metrics


def test_read_only_actions_are_not_transformations(v):
    out = replay(v, "read_only")
    assert [o.kind for o in out] == [READ, READ]
    assert [(i.name, i.columns) for i in out[1].inputs] == [("default.t2", ("id",))]


def test_ddl_is_ignored(v):
    assert {o.kind for o in replay(v, "ddl")} == {IGNORED}


def test_failed_write_is_not_a_transformation(v):
    out = replay(v, "failed_write")
    assert [o.kind for o in out] == [FAILED]
    assert "boom" in (out[0].error or "") or "failure" in (out[0].error or "")


def test_jdbc_names_and_no_secret():
    out = replay("spark35", "jdbc")
    ws = [o.lineage for o in out if o.kind == WRITE]
    assert ws[0].output.name == "sqlite:/TMP/crm.db/customers"
    assert ws[0].output.ds_type == "jdbc"
    assert ws[0].metrics["cnt"] == 10  # rows of the nested foreachPartition execution
    assert inputs(ws[1]) == {"sqlite:/TMP/crm.db/customers": ("id", "name")}
    for w in ws:
        assert "s3cret" not in repr(w)


def test_join20_columns_and_time(v):
    facts = load(v, "join20")[-1]
    started = time.perf_counter()
    o = extract(facts, Options())
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert o.kind == WRITE
    assert len(o.lineage.inputs) == 21
    assert elapsed_ms < 500
    print(f"join20 rules time {elapsed_ms:.1f} ms")


def test_unknown_command_is_ignored_not_error(v):
    facts = load(v, "parquet_partitioned")[0]
    facts.plan[0]["class"] = "org.example.SomeNewCommand"
    facts.command = None
    assert extract(facts).kind == IGNORED


def test_redaction():
    s = redact("OPTIONS (url 'jdbc:postgresql://u:pw@h/db', password 'hunter2', token=abc)")
    assert "hunter2" not in s and "abc" not in s and ":pw@" not in s
    assert redact("x secret_thing", r"secret_\w+") == "x *********(redacted)"


def test_view_columns_are_the_ones_the_query_uses(v):
    (w,) = writes(v, "view_columns")
    # v_all = SELECT * FROM t2 and a temp view of t2: only id (select, join) and grp
    # (filter) are read, not every column the views expose
    assert inputs(w) == {"default.t2": ("id", "grp")}


def test_mode_ignore_on_existing_path_is_not_a_tf(v):
    assert [o.kind for o in replay(v, "mode_ignore")] == [IGNORED]


ICEBERG = "spark35"


@pytest.mark.skipif("spark35" not in VERSIONS, reason="no Spark 3.5 fixtures")
class TestIcebergRecorded:
    def test_append_sql(self):
        (w,) = writes(ICEBERG, "iceberg_append_sql")
        assert w.output.name == "ice.db.target" and w.output.ds_type == "table"
        assert inputs(w) == {"ice.db.events": ("id", "kind", "amount")}
        assert w.metrics["cnt"] == 2

    def test_v2_ctas_is_one_tf(self):
        (w,) = writes(ICEBERG, "iceberg_ctas")
        assert w.output.name == "ice.db.ctas"
        assert w.output.schema == (("id", "LONG"), ("kind", "STRING"))
        assert w.metrics["cnt"] == 3

    def test_merge_target_and_source_are_inputs_without_metadata_columns(self):
        (w,) = writes(ICEBERG, "iceberg_merge")
        assert set(inputs(w)) == {"ice.db.target", "ice.db.updates"}
        for cols in inputs(w).values():
            assert not any(c.startswith("_") for c in cols)

    def test_delete_merge_on_read(self):
        (w,) = writes(ICEBERG, "iceberg_delete_mor")
        assert w.output.name == "ice.db.mor" and "ice.db.mor" in inputs(w)
        assert w.metrics["cnt"] == 1  # one position delete

    def test_read_iceberg_columns(self):
        (w,) = writes(ICEBERG, "iceberg_read")
        assert inputs(w) == {"ice.db.events": ("id", "kind")}


def test_ctas_with_cte(v):
    (w,) = writes(v, "ctas_cte")
    # Spark 3.5 puts the plan first under WithCTE, Spark 4 last
    assert inputs(w) == {"default.t2": ("grp", "amount"), "default.t1": ("id", "name")}


def test_save_as_table_partition_column_last(v):
    (w,) = writes(v, "save_as_table_partitioned")
    assert w.output.name == "default.t_part"
    assert w.output.schema == (("id", "LONG"), ("grp", "LONG"))


def test_an_unknown_write_command_is_partial(v, caplog):
    """A write command of a format the rules table does not know (the gatherer reads it
    with the generic entry, commands.GENERIC): reported with its target and its query's
    schema, marked partial, its class logged once at INFO however often it runs."""
    import logging
    from dataclasses import replace

    from definity_spark.lineage import rules
    from definity_spark.lineage.facts import CommandFacts

    cls = "com.example.lake.WriteIntoLakeCommand"
    (facts,) = [f for f in load(v, "parquet_partitioned") if f.func_name == "command"]
    known = facts.command
    plan = [dict(facts.plan[0], **{"class": cls})] + facts.plan[1:]
    unknown = replace(facts, plan=plan, command=CommandFacts(
        cls=cls, generic=True, output_path=known.output_path, query_schema=known.query_schema))
    rules._UNKNOWN_LOGGED.discard("WriteIntoLakeCommand")
    with caplog.at_level(logging.INFO, logger="definity_spark"):
        outcomes = [extract(unknown) for _ in range(2)]
    for outcome in outcomes:
        assert outcome.kind == WRITE
        w = outcome.lineage
        assert w.partial is True
        assert w.output.name == "file:/TMP/data/events" and w.output.ds_type == "path"
        assert w.output.schema == (("id", "LONG"), ("name", "STRING"), ("grp", "LONG"))
        assert inputs(w) == {"file:/TMP/data/base": ("id", "name", "grp")}
        # the writer call from the execution's description; the mode is not known
        assert w.query_str == "DataFrameWriter.parquet(file:/TMP/data/events)"
    logged = [r for r in caplog.records if cls in r.getMessage()]
    assert [r.levelno for r in logged] == [logging.INFO]
    # the known command itself is not partial
    assert extract(facts).lineage.partial is False
