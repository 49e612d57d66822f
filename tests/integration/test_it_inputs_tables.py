"""Issue 3, inputs from the session catalog: datasource and Hive serde tables, persistent
views (the underlying tables are reported), temp views over tables, and several inputs
through joins, unions, subqueries, CTEs, scalar subqueries, IN and EXISTS subqueries.

Names are ``db.table`` without ``spark_catalog``; columns are the ones the query
references, in each input's schema order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from it_helpers import (
    PEOPLE,
    PEOPLE_COLS,
    Task,
    expect_write,
    file_name,
    orders_df,
    people_df,
)

pytestmark = pytest.mark.spark

DB = "it_in"
PEOPLE_T = f"{DB}.people_tbl"
PEOPLE_H = f"{DB}.people_hive"
ORDERS_T = f"{DB}.orders"


@pytest.fixture(scope="module")
def module_data(spark: Any) -> None:
    spark.sql(f"DROP DATABASE IF EXISTS {DB} CASCADE")
    spark.sql(f"CREATE DATABASE {DB}")
    people_df(spark).coalesce(1).write.format("parquet").saveAsTable(PEOPLE_T)
    orders_df(spark).coalesce(1).write.format("parquet").saveAsTable(ORDERS_T)
    spark.sql(f"CREATE TABLE {PEOPLE_H} (id INT, name STRING, age INT, city STRING) "
              "STORED AS TEXTFILE")
    spark.sql(f"INSERT INTO {PEOPLE_H} SELECT * FROM {PEOPLE_T}")
    spark.sql(f"CREATE VIEW {DB}.v_adults AS SELECT id, name, city FROM {PEOPLE_T} "
              "WHERE age >= 30")
    people_df(spark).write.partitionBy("city").format("parquet").saveAsTable(f"{DB}.ds_part")
    spark.sql(f"CREATE TABLE {DB}.hive_part (id INT, name STRING, age INT) "
              "PARTITIONED BY (city STRING) STORED AS TEXTFILE")
    spark.sql(f"INSERT INTO {DB}.hive_part PARTITION (city) "
              f"SELECT id, name, age, city FROM {PEOPLE_T}")


def _out(module_dir: Path, name: str) -> str:
    return str(module_dir / "out" / name)


def test_datasource_table_dataframe_api(task: Task, module_data: Any, module_dir: Path) -> None:
    out = _out(module_dir, "ds_table")
    batch = task.run(lambda: task.spark.table(PEOPLE_T).select("city", "name")
                     .write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={PEOPLE_T: ["name", "city"]},
                 schema=["city-STRING", "name-STRING"], cnt=len(PEOPLE), ds_type="path")


def test_hive_serde_table_sql(task: Task, module_data: Any, module_dir: Path) -> None:
    out = _out(module_dir, "hive_table")
    batch = task.run(lambda: task.spark.sql(
        f"SELECT id, name FROM {PEOPLE_H} WHERE age < 30").write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={PEOPLE_H: ["id", "name", "age"]},
                 schema=["id-INTEGER", "name-STRING"], cnt=2, ds_type="path")


@pytest.mark.parametrize("table", ["ds_part", "hive_part"])
def test_partitioned_table_read_is_the_table(task: Task, module_data: Any, module_dir: Path,
                                             table: str) -> None:
    # partition pruning reads one directory; the input is still the table, and the
    # partition column comes last in its schema order
    out = _out(module_dir, f"from_{table}")
    batch = task.run(lambda: task.spark.sql(
        f"SELECT name, city FROM {DB}.{table} WHERE city = 'Paris'").write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={f"{DB}.{table}": ["name", "city"]},
                 schema=["name-STRING", "city-STRING"], cnt=2, ds_type="path")


def test_unqualified_name_gets_the_database(task: Task, module_data: Any,
                                            module_dir: Path) -> None:
    out = _out(module_dir, "unqualified")
    spark = task.spark
    spark.catalog.setCurrentDatabase(DB)
    try:
        batch = task.run(lambda: spark.sql("SELECT * FROM people_tbl").write.parquet(out))
    finally:
        spark.catalog.setCurrentDatabase("default")
    expect_write(batch, output=file_name(out), inputs={PEOPLE_T: PEOPLE_COLS},
                 schema=["id-INTEGER", "name-STRING", "age-INTEGER", "city-STRING"],
                 cnt=len(PEOPLE), ds_type="path")


def test_persistent_view_reports_underlying_table(task: Task, module_data: Any,
                                                  module_dir: Path) -> None:
    out = _out(module_dir, "view")
    batch = task.run(lambda: task.spark.table(f"{DB}.v_adults").select("name")
                     .write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={PEOPLE_T: ["name", "age"]},
                 schema=["name-STRING"], cnt=2, ds_type="path")


def test_temp_view_over_table(task: Task, module_data: Any, module_dir: Path) -> None:
    out = _out(module_dir, "temp_view_table")
    task.spark.sql(f"CREATE OR REPLACE TEMP VIEW it_in_tv_orders AS SELECT * FROM {ORDERS_T}")
    batch = task.run(lambda: task.spark.sql(
        "SELECT order_id, amount FROM it_in_tv_orders").write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={ORDERS_T: ["order_id", "amount"]},
                 schema=["order_id-INTEGER", "amount-DECIMAL(10,2)"], cnt=5, ds_type="path")


def test_union_of_datasource_and_hive_tables(task: Task, module_data: Any,
                                             module_dir: Path) -> None:
    out = _out(module_dir, "union")
    batch = task.run(lambda: task.spark.sql(
        f"SELECT id, name FROM {PEOPLE_T} WHERE city = 'Paris' "
        f"UNION ALL SELECT id, name FROM {PEOPLE_H} WHERE city = 'Rome'").write.parquet(out))
    expect_write(batch, output=file_name(out),
                 inputs={PEOPLE_T: ["id", "name", "city"], PEOPLE_H: ["id", "name", "city"]},
                 schema=["id-INTEGER", "name-STRING"], cnt=3, ds_type="path")


def test_subquery_in_from(task: Task, module_data: Any, module_dir: Path) -> None:
    out = _out(module_dir, "from_subquery")
    batch = task.run(lambda: task.spark.sql(
        f"SELECT x.n FROM (SELECT name AS n, age FROM {PEOPLE_T} WHERE age > 26) x "
        "WHERE x.age < 40").write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={PEOPLE_T: ["name", "age"]},
                 schema=["n-STRING"], cnt=2, ds_type="path")


# CTAS scenarios: one tf with the outer table, query_str = the SQL text.
CTAS_CASES = {
    "join": (
        f"SELECT p.name, o.amount FROM {PEOPLE_T} p JOIN {ORDERS_T} o ON p.id = o.person_id",
        {PEOPLE_T: ["id", "name"], ORDERS_T: ["person_id", "amount"]},
        ["name-STRING", "amount-DECIMAL(10,2)"], 5),
    "cte": (
        f"WITH totals AS (SELECT person_id, sum(amount) AS total FROM {ORDERS_T} "
        f"GROUP BY person_id) SELECT p.name, t.total FROM {PEOPLE_T} p "
        "JOIN totals t ON p.id = t.person_id",
        {PEOPLE_T: ["id", "name"], ORDERS_T: ["person_id", "amount"]},
        ["name-STRING", "total-DECIMAL(20,2)"], 4),
    "scalar_subquery": (
        f"SELECT order_id FROM {ORDERS_T} WHERE amount > (SELECT max(age) FROM {PEOPLE_T})",
        {PEOPLE_T: ["age"], ORDERS_T: ["order_id", "amount"]},
        ["order_id-INTEGER"], 3),
    "in_subquery": (
        f"SELECT name FROM {PEOPLE_T} WHERE id IN "
        f"(SELECT person_id FROM {ORDERS_T} WHERE status = 'shipped')",
        {PEOPLE_T: ["id", "name"], ORDERS_T: ["person_id", "status"]},
        ["name-STRING"], 3),
    "exists_subquery": (
        f"SELECT name FROM {PEOPLE_T} p WHERE EXISTS (SELECT 1 FROM {ORDERS_T} o "
        "WHERE o.person_id = p.id AND o.amount > 100)",
        {PEOPLE_T: ["id", "name"], ORDERS_T: ["person_id", "amount"]},
        ["name-STRING"], 2),
    "view_joined_with_hive": (
        f"SELECT v.name, h.age FROM {DB}.v_adults v JOIN {PEOPLE_H} h ON v.id = h.id",
        {PEOPLE_T: ["id", "name", "age"], PEOPLE_H: ["id", "age"]},
        ["name-STRING", "age-INTEGER"], 2),
}


@pytest.mark.parametrize("case", sorted(CTAS_CASES))
def test_multi_input_ctas(task: Task, module_data: Any, case: str) -> None:
    select, inputs, schema, cnt = CTAS_CASES[case]
    table = f"{DB}.ctas_{case}"
    sql = f"CREATE TABLE {table} USING parquet AS {select}"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output=table, inputs=inputs, schema=schema, cnt=cnt, ds_type="table",
                 query_str=sql)
