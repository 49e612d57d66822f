"""Issue 3, the first write of an application: cold JVM, cold py4j, nothing warmed up.

In real applications the first write is usually the first action of the JVM. Its
lineage must be as complete as any later write's. This module sorts first in the suite
so that, in a full run, its scenario is the first query the SparkSession ever runs: the
source data is made with Python's stdlib (sqlite3, csv), not with Spark.
"""

from __future__ import annotations

import csv
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from it_helpers import Task, expect_write, file_name

pytestmark = pytest.mark.spark

SQLITE_JAR = "/usr/share/java/sqlite-jdbc.jar"


@pytest.fixture(scope="module")
def module_data(module_dir: Path) -> dict[str, Any]:
    if not os.path.exists(SQLITE_JAR):
        pytest.skip("Debian libxerial-sqlite-jdbc-java not installed (.ci/setup-deps.sh)")
    db = module_dir / "shop.db"
    with sqlite3.connect(str(db)) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER, name TEXT, country TEXT)")
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?)",
                         [(1, "Ann", "FR"), (2, "Bob", "NO"), (3, "Cid", "FR")])
    src = module_dir / "src" / "orders_csv"
    src.mkdir(parents=True)
    with open(src / "part-0.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["order_id", "customer_id", "amount"])
        writer.writerows([(10, 1, 5), (11, 1, 7), (12, 3, 9), (13, 2, 1)])
    return {"url": f"jdbc:sqlite:{db}", "name": f"sqlite:{db}/customers", "csv": src}


def test_first_write_of_the_application_has_all_inputs(task: Task, module_data: Any,
                                                       module_dir: Path) -> None:
    out = str(module_dir / "out" / "orders_fr")

    def action() -> None:
        spark = task.spark
        customers = spark.read.jdbc(module_data["url"], "customers",
                                    properties={"driver": "org.sqlite.JDBC"})
        orders = (spark.read.schema("order_id INT, customer_id INT, amount INT")
                  .option("header", True).csv(str(module_data["csv"])))
        (orders.join(customers, orders.customer_id == customers.id)
         .where("country = 'FR'").select("order_id", "name").write.parquet(out))

    batch = task.run(action)
    expect_write(batch, output=file_name(out),
                 inputs={module_data["name"]: ["id", "name", "country"],
                         file_name(module_data["csv"]): ["order_id", "customer_id"]},
                 schema=["order_id-INTEGER", "name-STRING"], cnt=3, ds_type="path")
