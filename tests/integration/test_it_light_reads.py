"""The light read of an outer CTAS command (issue 6: one plan serialisation per CTAS).

When a CTAS's nested data write has been read in full, the observer reads the outer
command without its query (``FactReader.finish(light=True)``): the command node's own
fields through accessors instead of ``toJSON``. These tests read the same analyzed
command both ways, on a real Spark with a Hive metastore, and require the same command
facts (target table, schema, partition columns, mode) and the same SQL text.
"""

from __future__ import annotations

from typing import Any

import pytest

from definity_spark.lineage.commands import LIGHT_WRAPPERS
from definity_spark.lineage.rules import Options, extract
from definity_spark.spark.facts import FactReader, make_gatherer

pytestmark = pytest.mark.spark

DB = "it_light"
# the module's task is read in the driver, where a test watches the facts it reads
TASK_SETTINGS = {"helper_process": False}


@pytest.fixture(scope="module")
def module_data(spark: Any) -> None:
    spark.sql(f"DROP DATABASE IF EXISTS {DB} CASCADE")
    spark.sql(f"CREATE DATABASE {DB}")
    spark.range(5).selectExpr("CAST(id AS INT) AS id", "CAST(id AS STRING) AS name",
                              "'2026-11-26' AS ds").write.saveAsTable(f"{DB}.src")


def _analyzed(spark: Any, sql: str) -> Any:
    """The QueryExecution of a statement, analyzed but not run (no table is created)."""
    js = spark._jsparkSession
    plan = js.sessionState().sqlParser().parsePlan(sql)
    return js.sessionState().executePlan(plan, _skip_mode(spark))


def _skip_mode(spark: Any) -> Any:
    jvm = spark.sparkContext._jvm
    return getattr(jvm.org.apache.spark.sql.execution, "CommandExecutionMode$") \
        .__getattr__("MODULE$").SKIP()


CASES = {
    "datasource": f"CREATE TABLE {DB}.t1 USING parquet PARTITIONED BY (ds) AS "
                  f"SELECT id, name, ds FROM {DB}.src",
    "hive_text": f"CREATE TABLE {DB}.t2 STORED AS TEXTFILE AS SELECT id, name FROM {DB}.src",
    "hive_parquet": f"CREATE TABLE {DB}.t3 STORED AS PARQUET AS SELECT id FROM {DB}.src",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_light_read_equals_full_read(spark: Any, module_data: Any, case: str) -> None:
    gw, js = spark.sparkContext._gateway, spark._jsparkSession
    reader = FactReader(gw, js, 2000, 20000, gatherer=make_gatherer(gw, js, 100)[0])
    qe = _analyzed(spark, CASES[case])
    full = reader.read("command", qe, 1_000_000, None, light=False)
    light = reader.read("command", qe, 1_000_000, None, light=True)
    # both read by the JVM-side gatherer; a py4j-only light read finds the same
    assert (reader.gathered, reader.fallbacks) == (4, 0)
    plain = FactReader(gw, js, 2000, 20000)
    assert plain.read("command", qe, 1_000_000, None, light=True).to_json() == light.to_json()
    root = full.root_class.rsplit(".", 1)[-1] if full.root_class else ""
    assert root in LIGHT_WRAPPERS, root
    assert light.plan is not None and light.plan[0].get("light") is True
    assert full.read_error is None and light.read_error is None
    assert light.command == full.command
    assert light.command is not None and light.command.table is not None
    assert light.command.table[-1] == CASES[case].split()[2].split(".")[1]
    assert light.sql_text == full.sql_text == CASES[case]
    assert full.leaves and not light.leaves  # the query's inputs come from the nested write
    out_full = extract(full, Options()).lineage
    out_light = extract(light, Options()).lineage
    assert out_full is not None and out_light is not None
    assert out_light.output == out_full.output
    assert out_light.inputs == () and out_full.inputs[0].name == f"{DB}.src"


@pytest.mark.parametrize("how", ["sql", "saveAsTable"])
def test_ctas_serialises_its_query_once(task: Any, module_data: Any, how: str) -> None:
    """Through the whole plugin: the nested insert is read in full (after the statement),
    the outer command light, and the one tf still has the inputs, columns and rows."""
    from it_helpers import expect_write

    observer = list(task.handle._runtime.observers.values())[0]
    seen: list[Any] = []
    observer.worker.on_facts = seen.append  # (read in the driver: TASK_SETTINGS)
    table = f"{DB}.once_{how.lower()}"
    try:
        if how == "sql":
            batch = task.run(lambda: task.spark.sql(
                f"CREATE TABLE {table} USING parquet AS SELECT id, name FROM {DB}.src "
                "WHERE id < 3"))
        else:
            batch = task.run(lambda: task.spark.table(f"{DB}.src").where("id < 3")
                             .select("id", "name").write.saveAsTable(table))
    finally:
        observer.worker.on_facts = None
    expect_write(batch, output=table, inputs={f"{DB}.src": ["id", "name"]},
                 schema=["id-INTEGER", "name-STRING"], cnt=3, ds_type="table")
    writes = [f for f in seen if f.command is not None]
    full = [f for f in writes if not f.plan[0].get("light")]
    light = [f for f in writes if f.plan[0].get("light")]
    assert len(full) == 1, [f.root_class for f in writes]
    assert full[0].root_class.endswith("InsertIntoHadoopFsRelationCommand")
    assert light and len(writes) == len(full) + len(light)
