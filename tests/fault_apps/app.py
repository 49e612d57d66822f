"""A small real PySpark application for the fault-injection suite (tests/test_fault_suite.py).

Usage: ``python app.py BASE_DIR MODE`` with MODE one of

* ``writes``  four writes (parquet, csv, a managed table by CTAS, an INSERT into it) and a
              count; prints it; stops the SparkContext; exit code 0.
* ``raise``   two writes, then the application's own code raises ``ValueError``; the
              interpreter exits with code 1 and a traceback (SparkContext never stopped).
* ``format``  a write in the format FAULT_APP_FORMAT whose jar is missing, or of the wrong
              Scala version (FAULT_APP_JARS, handed to Spark as ``spark.jars``): Spark's
              own error propagates (exit code 1, a traceback), or, where the format
              works after all (avro is built into Spark 4.1+), it prints "format write done".
* ``jdbc``    a JDBC (SQLite) write, read and CTAS with a user, a password option and a
              ``password=`` URL parameter; the secrets come from FAULT_APP_PASSWORD and
              FAULT_APP_URL_PASSWORD.

The plugin is activated explicitly (``definity_spark.activate(spark)``, configured by the
``DEFINITY_*`` environment) only when FAULT_APP_PLUGIN=1: without it this file never
imports definity_spark, which is the "run without the plugin" baseline.

FAULT_APP_TIMING=FILE: JSON of seconds since the start of this script at ``session``
(SparkSession ready), ``activated`` (after the plugin's ``activate()``), ``shutdown``
(just before ``spark.stop()``, or when the app's error propagates) and ``exit`` (the end
of the interpreter's atexit handlers: this one is registered first, so it runs last,
after the plugin's). FAULT_APP_LOG_FILE=FILE: the ``definity_spark`` logger's records
(all levels) are also written to FILE.

Everything printed to stdout is deterministic, so two runs can be compared byte for byte.
"""

import atexit
import os
import sys
import time

T0 = time.monotonic()
MARKS = {}  # name -> seconds since T0


def mark(name: str) -> None:
    MARKS[name] = time.monotonic() - T0


def _write_timing() -> None:
    path = os.environ.get("FAULT_APP_TIMING")
    if path:
        import json

        mark("exit")
        with open(path, "w") as fh:
            json.dump(MARKS, fh)


atexit.register(_write_timing)  # first registered: runs after every later atexit handler

from pyspark.sql import SparkSession  # noqa: E402

BASE, MODE = sys.argv[1], sys.argv[2]
SQLITE_JAR = "/usr/share/java/sqlite-jdbc.jar"


def session() -> SparkSession:
    builder = (
        SparkSession.builder.master("local[1]")
        .appName("fault-suite-app")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.default.parallelism", "1")
        .config("spark.sql.warehouse.dir", os.path.join(BASE, "warehouse"))
        .config("spark.driver.extraJavaOptions", "-Dderby.system.home=" + BASE)
    )
    if MODE == "jdbc":
        builder = builder.config("spark.jars", SQLITE_JAR)
    elif MODE == "format" and os.environ.get("FAULT_APP_JARS"):
        builder = builder.config("spark.jars", os.environ["FAULT_APP_JARS"])
    return builder.getOrCreate()


def activate(spark: SparkSession) -> None:
    if os.environ.get("FAULT_APP_PLUGIN") != "1":
        return
    log_file = os.environ.get("FAULT_APP_LOG_FILE")
    if log_file:
        import logging

        handler = logging.FileHandler(log_file)
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logging.getLogger("definity_spark").addHandler(handler)
    import definity_spark

    definity_spark.activate(spark)


def out(name: str) -> str:
    return os.path.join(BASE, "out", name)


def writes(spark: SparkSession) -> None:
    df = spark.range(20).selectExpr("id", "id % 3 AS k", "concat('name-', id) AS name")
    df.write.mode("overwrite").parquet(out("a"))
    a = spark.read.parquet(out("a"))
    a.groupBy("k").count().write.mode("overwrite").option("header", "true").csv(out("b"))
    a.createOrReplaceTempView("a_view")
    spark.sql("CREATE TABLE t_c USING parquet AS SELECT id, name FROM a_view WHERE k = 1")
    spark.sql("INSERT INTO t_c SELECT id + 100, name FROM a_view WHERE k = 2")
    print("t_c rows", spark.table("t_c").count())


def raising(spark: SparkSession) -> None:
    spark.range(5).write.mode("overwrite").parquet(out("r1"))
    spark.range(7).selectExpr("id * 2 AS v").write.mode("overwrite").parquet(out("r2"))
    print("before the failure", spark.read.parquet(out("r2")).count(), flush=True)
    check_rows(spark.read.parquet(out("r2")).count())


def bad_format(spark: SparkSession) -> None:
    spark.range(5).write.mode("overwrite").parquet(out("before"))
    print("before the format write", spark.read.parquet(out("before")).count(), flush=True)
    spark.range(3).write.format(os.environ["FAULT_APP_FORMAT"]).mode("overwrite").save(
        out("bad"))
    print("format write done")


def check_rows(n: int) -> None:
    if n != 3:
        raise ValueError(f"the application's own check failed: expected 3 rows, got {n}")


def jdbc(spark: SparkSession) -> None:
    password = os.environ["FAULT_APP_PASSWORD"]
    url_password = os.environ["FAULT_APP_URL_PASSWORD"]
    db = os.path.join(BASE, "people.db")
    url = "jdbc:sqlite:" + db + "?password=" + url_password
    # Spark 4.3's JDBC writer cannot create a missing SQLite table (its existence check
    # wrongly says yes, then "no such table"): the tables exist before the app writes
    import sqlite3

    with sqlite3.connect(db) as conn:
        for table in ("people", "people_copy"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"CREATE TABLE {table} (id INTEGER, name TEXT)")
    people = spark.createDataFrame([(1, "ann"), (2, "bob"), (3, "cy")], "id INT, name STRING")
    (people.write.format("jdbc").mode("append")
     .option("url", url).option("dbtable", "people").option("driver", "org.sqlite.JDBC")
     .option("user", "bob").option("password", password).save())
    back = (spark.read.format("jdbc").option("url", url).option("dbtable", "people")
            .option("driver", "org.sqlite.JDBC").option("user", "bob")
            .option("password", password).load())
    back.write.mode("overwrite").parquet(out("from_jdbc"))
    print("jdbc rows", spark.read.parquet(out("from_jdbc")).count())
    spark.sql(
        f"CREATE TEMPORARY VIEW people_src USING org.apache.spark.sql.jdbc OPTIONS ("
        f"url '{url}', dbtable 'people', driver 'org.sqlite.JDBC', user 'bob', "
        f"password '{password}')")
    spark.sql(
        f"CREATE TABLE people_copy USING org.apache.spark.sql.jdbc OPTIONS ("
        f"url '{url}', dbtable 'people_copy', driver 'org.sqlite.JDBC', user 'bob', "
        f"password '{password}') AS SELECT id, upper(name) AS name FROM people_src")
    print("copy rows", spark.table("people_copy").count())


def main() -> None:
    spark = session()
    mark("session")
    activate(spark)
    mark("activated")
    if MODE == "writes":
        writes(spark)
    elif MODE == "raise":
        raising(spark)  # raises: the traceback and exit code 1 are the point
    elif MODE == "jdbc":
        jdbc(spark)
    elif MODE == "format":
        bad_format(spark)  # raises Spark's error for a missing / unusable format
    else:
        raise SystemExit(f"unknown mode {MODE}")
    mark("shutdown")
    spark.stop()
    print("done")


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        mark("shutdown")
        raise
