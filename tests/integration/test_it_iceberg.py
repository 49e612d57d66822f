"""Issues 3 and 21, DataSourceV2 with real Iceberg tables (Hadoop catalog ``ice`` on a
temp warehouse). Spark 3.5: the runtime jar of the PyPI wheel
snowpark-connect-deps-iceberg==1.0.2 (Iceberg 1.10.2); Spark 4.1, the newest Spark 4.x
that Iceberg supports: iceberg-spark-runtime-4.1_2.13 1.12.0 from Maven Central
(.ci/fetch-jars.sh). Other Spark lines have no Iceberg runtime: skipped.

AppendData (SQL and ``writeTo().append()``), OverwriteByExpression, OverwritePartitions-
Dynamic, V2 CTAS and RTAS (SQL and ``writeTo``), and the row-level commands MERGE INTO,
UPDATE, DELETE FROM (copy-on-write ``ReplaceData``; merge-on-read ``WriteDelta``): the
target table is an input AND the output, the MERGE source is an input, and Iceberg's
metadata columns (``_file``, ``_pos``, ...) are never reported as columns.

cnt is the rows the write physically wrote: a copy-on-write DELETE/UPDATE/MERGE rewrites
the whole data file it touches (every table here is one file), a merge-on-read DELETE
writes one position-delete row per deleted row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from it_helpers import ICEBERG_LINES, Task, expect_write, file_name, iceberg_jar, require_format

pytestmark = pytest.mark.spark

EVENTS = [(1, "a", 10.0), (2, "b", 20.0), (3, "a", 30.0), (4, "c", 40.0), (5, "b", 50.0)]
DDL = "id BIGINT, kind STRING, amount DOUBLE"
SCHEMA = ["id-LONG", "kind-STRING", "amount-DOUBLE"]
ALL = ["id", "kind", "amount"]
EV = "ice.db.events"


@pytest.fixture(scope="module")
def module_data(spark: Any) -> None:
    require_format("Iceberg", ICEBERG_LINES, iceberg_jar() is not None)
    spark.sql("DROP NAMESPACE IF EXISTS ice.db CASCADE")
    spark.sql("CREATE NAMESPACE ice.db")
    plain = ("events", "updates", "t_append", "t_merge", "t_update", "t_delete")
    for name in plain:
        spark.sql(f"CREATE TABLE ice.db.{name} ({DDL}) USING iceberg")
    for name in ("t_overwrite", "t_dyn"):
        spark.sql(f"CREATE TABLE ice.db.{name} ({DDL}) USING iceberg PARTITIONED BY (kind)")
    spark.sql(f"CREATE TABLE ice.db.t_delete_mor ({DDL}) USING iceberg TBLPROPERTIES "
              "('format-version'='2', 'write.delete.mode'='merge-on-read')")
    events = spark.createDataFrame(EVENTS, DDL).coalesce(1)
    for name in ("events", "t_merge", "t_update", "t_delete", "t_delete_mor", "t_overwrite",
                 "t_dyn"):
        events.writeTo(f"ice.db.{name}").append()
    spark.createDataFrame([(2, "b", 99.0), (9, "z", 1.0)], DDL).coalesce(1) \
        .writeTo("ice.db.updates").append()


def test_read_iceberg_table(task: Task, module_data: Any, module_dir: Path) -> None:
    out = str(module_dir / "out" / "ice_read")
    batch = task.run(lambda: task.spark.table(EV).where("kind = 'a'").select("id")
                     .write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={EV: ["id", "kind"]},
                 schema=["id-LONG"], cnt=2, ds_type="path")


def test_append_data_sql(task: Task, module_data: Any) -> None:
    sql = f"INSERT INTO ice.db.t_append SELECT id, kind, amount FROM {EV} WHERE amount > 25"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output="ice.db.t_append", inputs={EV: ALL}, schema=SCHEMA, cnt=3,
                 ds_type="table", query_str=sql)


def test_append_data_write_to(task: Task, module_data: Any) -> None:
    batch = task.run(lambda: task.spark.table(EV).where("kind = 'b'").select("id", "kind")
                     .selectExpr("id", "kind", "0D AS amount")
                     .writeTo("ice.db.t_append").append())
    expect_write(batch, output="ice.db.t_append", inputs={EV: ["id", "kind"]}, schema=SCHEMA,
                 cnt=2, ds_type="table")


def test_overwrite_by_expression_write_to(task: Task, module_data: Any) -> None:
    from pyspark.sql import functions as F

    batch = task.run(lambda: task.spark.table(EV).where("kind = 'a'")
                     .selectExpr("id + 100 AS id", "kind", "amount")
                     .writeTo("ice.db.t_overwrite").overwrite(F.col("kind") == "a"))
    expect_write(batch, output="ice.db.t_overwrite", inputs={EV: ALL}, schema=SCHEMA, cnt=2,
                 ds_type="table")


def test_insert_overwrite_static_is_overwrite_by_expression(task: Task, module_data: Any
                                                            ) -> None:
    sql = f"INSERT OVERWRITE ice.db.t_append SELECT id, kind, amount FROM {EV}"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output="ice.db.t_append", inputs={EV: ALL}, schema=SCHEMA,
                 cnt=len(EVENTS), ds_type="table", query_str=sql)


def test_overwrite_partitions_dynamic(task: Task, module_data: Any) -> None:
    batch = task.run(lambda: task.spark.table(EV).where("kind = 'b'")
                     .selectExpr("id", "kind", "amount * 10 AS amount")
                     .writeTo("ice.db.t_dyn").overwritePartitions())
    expect_write(batch, output="ice.db.t_dyn", inputs={EV: ALL}, schema=SCHEMA, cnt=2,
                 ds_type="table")


def test_v2_ctas_sql(task: Task, module_data: Any) -> None:
    sql = f"CREATE TABLE ice.db.ctas USING iceberg AS SELECT id, kind FROM {EV}"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output="ice.db.ctas", inputs={EV: ["id", "kind"]},
                 schema=["id-LONG", "kind-STRING"], cnt=len(EVENTS), ds_type="table",
                 query_str=sql)


def test_v2_ctas_write_to_create(task: Task, module_data: Any) -> None:
    batch = task.run(lambda: task.spark.table(EV).select("id", "amount")
                     .writeTo("ice.db.ctas_api").create())
    expect_write(batch, output="ice.db.ctas_api", inputs={EV: ["id", "amount"]},
                 schema=["id-LONG", "amount-DOUBLE"], cnt=len(EVENTS), ds_type="table")


def test_v2_rtas_sql(task: Task, module_data: Any) -> None:
    task.spark.sql("CREATE TABLE ice.db.rtas (x INT) USING iceberg")
    task.run(lambda: None)  # DDL: consume whatever it reported (asserted elsewhere)
    sql = f"REPLACE TABLE ice.db.rtas USING iceberg AS SELECT id, kind FROM {EV} WHERE id > 3"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output="ice.db.rtas", inputs={EV: ["id", "kind"]},
                 schema=["id-LONG", "kind-STRING"], cnt=2, ds_type="table", query_str=sql)


def test_v2_create_or_replace_write_to(task: Task, module_data: Any) -> None:
    batch = task.run(lambda: task.spark.table(EV).select("kind")
                     .writeTo("ice.db.rtas_api").createOrReplace())
    expect_write(batch, output="ice.db.rtas_api", inputs={EV: ["kind"]},
                 schema=["kind-STRING"], cnt=len(EVENTS), ds_type="table")


def test_merge_into(task: Task, module_data: Any) -> None:
    sql = ("MERGE INTO ice.db.t_merge t USING ice.db.updates s ON t.id = s.id "
           "WHEN MATCHED THEN UPDATE SET t.amount = s.amount "
           "WHEN NOT MATCHED THEN INSERT *")
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output="ice.db.t_merge",
                 inputs={"ice.db.t_merge": ALL, "ice.db.updates": ALL}, schema=SCHEMA,
                 cnt=len(EVENTS) + 1, ds_type="table", query_str=sql)


def test_update(task: Task, module_data: Any) -> None:
    sql = "UPDATE ice.db.t_update SET amount = amount * 2 WHERE kind = 'a'"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output="ice.db.t_update", inputs={"ice.db.t_update": ALL},
                 schema=SCHEMA, cnt=len(EVENTS), ds_type="table", query_str=sql)


def test_delete_copy_on_write(task: Task, module_data: Any) -> None:
    sql = "DELETE FROM ice.db.t_delete WHERE id = 3"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output="ice.db.t_delete", inputs={"ice.db.t_delete": ALL},
                 schema=SCHEMA, cnt=len(EVENTS) - 1, ds_type="table", query_str=sql)


def test_delete_merge_on_read_is_write_delta(task: Task, module_data: Any) -> None:
    sql = "DELETE FROM ice.db.t_delete_mor WHERE id = 3"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output="ice.db.t_delete_mor", inputs={"ice.db.t_delete_mor": ["id"]},
                 schema=SCHEMA, cnt=1, ds_type="table", query_str=sql)


def test_three_part_name(task: Task, module_data: Any, module_dir: Path) -> None:
    """A catalog named like a Unity Catalog one (``main``) gives ``main.sales.orders``,
    read and written (docs/naming.md, "Three-part names")."""
    conf = task.spark.conf
    conf.set("spark.sql.catalog.main", "org.apache.iceberg.spark.SparkCatalog")
    conf.set("spark.sql.catalog.main.type", "hadoop")
    conf.set("spark.sql.catalog.main.warehouse", "file:" + str(module_dir / "uc_main"))
    task.spark.sql("CREATE NAMESPACE IF NOT EXISTS main.sales")
    task.spark.sql(f"CREATE TABLE main.sales.orders ({DDL}) USING iceberg")
    task.run(lambda: None)  # DDL: consumed
    sql = f"INSERT INTO main.sales.orders SELECT * FROM {EV} WHERE kind = 'a'"
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output="main.sales.orders", inputs={EV: ALL}, schema=SCHEMA, cnt=2,
                 ds_type="table", query_str=sql)
    out = str(module_dir / "out" / "uc_read")
    batch = task.run(lambda: task.spark.table("main.sales.orders").select("id")
                     .write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={"main.sales.orders": ["id"]},
                 schema=["id-LONG"], cnt=2, ds_type="path")


def test_stream_from_iceberg_to_iceberg(task: Task, module_data: Any, module_dir: Path) -> None:
    """Issue 24: an Iceberg table read as a stream and written with ``toTable`` is one
    transformation of the run, named as in batch: source and sink by their table names."""
    spark = task.spark
    spark.sql(f"CREATE TABLE ice.db.stream_out ({DDL}) USING iceberg")
    task.run(lambda: None)  # DDL: consumed

    def run() -> None:
        q = (spark.readStream.format("iceberg").load(EV).where("amount > 15").writeStream
             .format("iceberg").outputMode("append").queryName("ice_stream")
             .option("checkpointLocation", str(module_dir / "chk" / "ice_stream"))
             .toTable("ice.db.stream_out"))
        q.processAllAvailable()
        q.stop()

    batch = task.run(run)
    tfs = [t for t in batch.tfs if t["output"]["name"] == "ice.db.stream_out"]
    assert len(tfs) == 1 and len(batch.tfs) == 1, batch.summary()
    [tf] = tfs
    assert tf["input_datasets"] == {EV: {"columns": ALL}}, tf
    assert tf["stream"]["name"] == "ice_stream", tf
    ds = [d for d in batch.datasets if d.get("ds_name") == "ice.db.stream_out"]
    assert len(ds) == 1 and ds[0]["tf_id"] == tf["tf_id"] and ds[0]["ds_type"] == "table", ds
    assert [m["info_value"] for m in ds[0]["metadata"]] == SCHEMA, ds
    ends = [m for body in batch.of("/log/metrics") for m in body["metrics"]
            if m["asset_type"] == "stream" and m["asset_name"] == "ice.db.stream_out"
            and m["metric_type"] == "run_input_rows"]
    assert ends and ends[-1]["value"] == len(EVENTS), ends  # the source's rows, all read
    assert spark.table("ice.db.stream_out").count() == 4  # amounts 20 .. 50
