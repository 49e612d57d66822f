"""Issue 3, JDBC against a real PostgreSQL server (Debian's postgresql, started by the
session fixture on a free loopback port), v1 (``spark.read.jdbc``, ``format("jdbc")``,
``df.write.jdbc``) and the V2 JDBC catalog (``JDBCTableCatalog``: AppendData, V2 CTAS,
catalog reads).

Names: v1 ``postgresql://127.0.0.1:<port>/shop/public.orders`` (no user, password or URL
parameter, even when they are in the URL); V2 catalog tables ``pg.public.orders``.
The password is used everywhere and asserted to appear in no payload of the task.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from it_helpers import Task, expect_write, file_name, people_df

pytestmark = pytest.mark.spark

DRIVER = "org.postgresql.Driver"
ORDERS = [(1, "ann", Decimal("120.50")), (2, "bob", Decimal("30.00")),
          (3, "cid", Decimal("250.00"))]
ORDERS_SCHEMA = ["order_id-INTEGER", "customer-STRING", "amount-DECIMAL(10,2)"]
CATALOG = "org.apache.spark.sql.execution.datasources.v2.jdbc.JDBCTableCatalog"


@pytest.fixture(scope="module")
def module_data(spark: Any, postgres: Any) -> dict[str, Any]:
    values = ", ".join(f"({i}, '{c}', {a})" for i, c, a in ORDERS)
    postgres.psql(
        "CREATE TABLE public.orders (order_id int, customer text, amount numeric(10,2));"
        f"INSERT INTO public.orders VALUES {values};"
        "CREATE TABLE public.orders_copy (order_id int, customer text, amount numeric(10,2));"
        "CREATE TABLE public.orders_v2 (order_id int, customer text, amount numeric(10,2));")
    for key, value in (("", CATALOG), (".url", postgres.url), (".user", postgres.user),
                       (".password", postgres.password), (".driver", DRIVER)):
        spark.conf.set("spark.sql.catalog.pg" + key, value)
    return {
        "pg": postgres,
        "props": {"user": postgres.user, "password": postgres.password, "driver": DRIVER},
        "prefix": f"postgresql://127.0.0.1:{postgres.port}/{postgres.database}",
    }


def test_read_jdbc_with_password_properties(task: Task, module_data: dict[str, Any],
                                            module_dir: Path) -> None:
    pg = module_data["pg"]
    out = str(module_dir / "out" / "pg_read")
    batch = task.run(lambda: task.spark.read.jdbc(pg.url, "public.orders",
                                                  properties=module_data["props"])
                     .where("amount > 100").select("order_id").write.parquet(out))
    expect_write(batch, output=file_name(out),
                 inputs={module_data["prefix"] + "/public.orders": ["order_id", "amount"]},
                 schema=["order_id-INTEGER"], cnt=2, ds_type="path")


def test_credentials_in_url_never_in_the_name(task: Task, module_data: dict[str, Any],
                                              module_dir: Path) -> None:
    pg = module_data["pg"]
    url = f"{pg.url}?user={pg.user}&password={pg.password}&ApplicationName=it"
    out = str(module_dir / "out" / "pg_url_creds")
    batch = task.run(lambda: task.spark.read.format("jdbc").option("url", url)
                     .option("dbtable", "public.orders").option("driver", DRIVER).load()
                     .write.parquet(out))
    expect_write(batch, output=file_name(out),
                 inputs={module_data["prefix"] + "/public.orders":
                         ["order_id", "customer", "amount"]},
                 schema=ORDERS_SCHEMA, cnt=len(ORDERS), ds_type="path")


def test_write_jdbc_append_existing_table(task: Task, module_data: dict[str, Any]) -> None:
    pg = module_data["pg"]

    def action() -> None:
        task.spark.read.jdbc(pg.url, "public.orders", properties=module_data["props"]) \
            .write.jdbc(pg.url, "public.orders_copy", mode="append",
                        properties=module_data["props"])

    batch = task.run(action)
    expect_write(batch, output=module_data["prefix"] + "/public.orders_copy",
                 inputs={module_data["prefix"] + "/public.orders":
                         ["order_id", "customer", "amount"]},
                 schema=ORDERS_SCHEMA, cnt=len(ORDERS), ds_type="jdbc")


def test_write_jdbc_creates_new_table(task: Task, module_data: dict[str, Any]) -> None:
    pg = module_data["pg"]
    batch = task.run(lambda: people_df(task.spark).select("id", "name").write
                     .format("jdbc").option("url", pg.url).option("dbtable", "public.people")
                     .option("user", pg.user).option("password", pg.password)
                     .option("driver", DRIVER).mode("overwrite").save())
    expect_write(batch, output=module_data["prefix"] + "/public.people", inputs={},
                 schema=["id-INTEGER", "name-STRING"], cnt=4, ds_type="jdbc")
    assert pg.psql("SELECT count(*) FROM public.people").strip() == "4"


def test_v2_catalog_insert_is_append_data(task: Task, module_data: dict[str, Any]) -> None:
    sql = ("INSERT INTO pg.public.orders_v2 SELECT order_id, customer, amount "
           "FROM pg.public.orders WHERE amount > 100")
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output="pg.public.orders_v2",
                 inputs={"pg.public.orders": ["order_id", "customer", "amount"]},
                 schema=ORDERS_SCHEMA, cnt=2, ds_type="table", query_str=sql)


def test_v2_catalog_read_to_path(task: Task, module_data: dict[str, Any],
                                 module_dir: Path) -> None:
    out = str(module_dir / "out" / "pg_v2_read")
    batch = task.run(lambda: task.spark.table("pg.public.orders").select("customer")
                     .write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={"pg.public.orders": ["customer"]},
                 schema=["customer-STRING"], cnt=len(ORDERS), ds_type="path")


def test_v2_catalog_ctas(task: Task, module_data: dict[str, Any]) -> None:
    sql = ("CREATE TABLE pg.public.big_orders AS "
           "SELECT order_id, amount FROM pg.public.orders WHERE amount > 100")
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output="pg.public.big_orders",
                 inputs={"pg.public.orders": ["order_id", "amount"]},
                 schema=["order_id-INTEGER", "amount-DECIMAL(10,2)"], cnt=2, ds_type="table",
                 query_str=sql)


def test_password_appears_in_no_payload(task: Task, module_data: dict[str, Any]) -> None:
    # runs last in the module: every payload of this task so far
    bodies = task.reader.bodies(task.task_id)
    assert len([b for e, b in bodies if e == "/log/tf"]) >= 6
    text = repr(bodies)
    assert module_data["pg"].password not in text
    assert "password=" not in text.lower() and "user=" not in text.lower()
