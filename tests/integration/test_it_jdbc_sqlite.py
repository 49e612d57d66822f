"""Issue 3, JDBC v1 against a real SQLite database (Debian's xerial sqlite-jdbc driver).

Reads with ``spark.read.jdbc`` and ``format("jdbc")``, writes with ``df.write.jdbc`` and
``format("jdbc").save()`` (SaveIntoDataSourceCommand: exactly one tf, even though a
JDBC write runs an extra read execution of its own). Names: the JDBC URL without
``jdbc:``, then ``/`` and the table: ``sqlite:/tmp/.../crm.db/customers``.

Target tables are created up front with Python's sqlite3: Spark 4 cannot tell "table
missing" from other SQLite errors, so it cannot create a table there itself.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from it_helpers import PEOPLE, Task, expect_write, file_name, people_df

pytestmark = pytest.mark.spark

SQLITE_JAR = "/usr/share/java/sqlite-jdbc.jar"
DRIVER = {"driver": "org.sqlite.JDBC"}
CUSTOMERS = [(1, "Ann", "ann@x.com"), (2, "Bob", "bob@y.org"), (3, "Cid", "cid@x.com")]


@pytest.fixture(scope="module")
def module_data(spark: Any, module_dir: Path) -> dict[str, Any]:
    if not os.path.exists(SQLITE_JAR):
        pytest.skip("Debian libxerial-sqlite-jdbc-java not installed (.ci/setup-deps.sh)")
    db = module_dir / "crm.db"
    with sqlite3.connect(str(db)) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER, name TEXT, email TEXT)")
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?)", CUSTOMERS)
        for table in ("customers_copy", "customers_api", "customers_archive"):
            conn.execute(f"CREATE TABLE {table} (id INTEGER, name TEXT)")
    src = module_dir / "src" / "people"
    people_df(spark).coalesce(1).write.parquet(str(src))
    return {"url": f"jdbc:sqlite:{db}", "name": f"sqlite:{db}", "src": src}


def _name(data: dict[str, Any], table: str) -> str:
    return f"{data['name']}/{table}"


def test_read_jdbc_method(task: Task, module_data: dict[str, Any], module_dir: Path) -> None:
    out = str(module_dir / "out" / "from_read_jdbc")
    batch = task.run(lambda: task.spark.read.jdbc(module_data["url"], "customers",
                                                  properties=dict(DRIVER))
                     .select("id", "name").write.parquet(out))
    expect_write(batch, output=file_name(out),
                 inputs={_name(module_data, "customers"): ["id", "name"]},
                 schema=["id-INTEGER", "name-STRING"], cnt=len(CUSTOMERS), ds_type="path")


def test_read_format_jdbc(task: Task, module_data: dict[str, Any], module_dir: Path) -> None:
    out = str(module_dir / "out" / "from_format_jdbc")

    def action() -> None:
        df = (task.spark.read.format("jdbc").option("url", module_data["url"])
              .option("dbtable", "customers").option("driver", DRIVER["driver"]).load())
        df.where("email LIKE '%@x.com'").select("name").write.parquet(out)

    batch = task.run(action)
    expect_write(batch, output=file_name(out),
                 inputs={_name(module_data, "customers"): ["name", "email"]},
                 schema=["name-STRING"], cnt=2, ds_type="path")


def test_write_format_jdbc_save(task: Task, module_data: dict[str, Any]) -> None:
    src = module_data["src"]
    batch = task.run(lambda: task.spark.read.parquet(str(src)).select("id", "name")
                     .write.format("jdbc").option("url", module_data["url"])
                     .option("dbtable", "customers_copy").option("driver", DRIVER["driver"])
                     .mode("append").save())
    expect_write(batch, output=_name(module_data, "customers_copy"),
                 inputs={file_name(src): ["id", "name"]},
                 schema=["id-INTEGER", "name-STRING"], cnt=len(PEOPLE), ds_type="jdbc")


def test_write_jdbc_method(task: Task, module_data: dict[str, Any]) -> None:
    batch = task.run(lambda: people_df(task.spark).where("age > 30").select("id", "name")
                     .write.jdbc(module_data["url"], "customers_api", mode="append",
                                 properties=dict(DRIVER)))
    expect_write(batch, output=_name(module_data, "customers_api"), inputs={},
                 schema=["id-INTEGER", "name-STRING"], cnt=2, ds_type="jdbc")


def test_jdbc_to_jdbc_same_names_read_and_written(task: Task, module_data: dict[str, Any]
                                                  ) -> None:
    def action() -> None:
        task.spark.read.jdbc(module_data["url"], "customers", properties=dict(DRIVER)) \
            .select("id", "name").write.jdbc(module_data["url"], "customers_archive",
                                             mode="append", properties=dict(DRIVER))
        task.spark.read.jdbc(module_data["url"], "customers_archive",
                             properties=dict(DRIVER)) \
            .write.jdbc(module_data["url"], "customers_copy", mode="append",
                        properties=dict(DRIVER))

    batch = task.run(action)
    views = [(t["input_datasets"], t["output"]["name"]) for t in batch.tfs]
    assert views == [
        ({_name(module_data, "customers"): {"columns": ["id", "name"]}},
         _name(module_data, "customers_archive")),
        ({_name(module_data, "customers_archive"): {"columns": ["id", "name"]}},
         _name(module_data, "customers_copy")),
    ], views
