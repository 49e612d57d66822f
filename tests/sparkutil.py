"""Shared helpers for the extraction room's real-Spark tests and the fixture recorder."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any


def hive_session(tmp: str | None = None, extra_conf: dict | None = None,
                 jars: Sequence[str] = ()) -> Any:
    """A local[2] SparkSession with Hive support on an embedded Derby in ``tmp``."""
    from pyspark.sql import SparkSession

    tmp = tmp or tempfile.mkdtemp(prefix="definity-spark-")
    b = (SparkSession.builder.master("local[2]").appName("definity-spark-tests")
         .config("spark.sql.warehouse.dir", os.path.join(tmp, "warehouse"))
         .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={tmp}/derby")
         .config("spark.hadoop.javax.jdo.option.ConnectionURL",
                 f"jdbc:derby:;databaseName={tmp}/metastore_db;create=true")
         .config("spark.ui.enabled", "false")
         .config("spark.sql.shuffle.partitions", "2"))
    if jars:
        b = b.config("spark.jars", ",".join(jars))
    for k, v in (extra_conf or {}).items():
        b = b.config(k, v)
    spark = b.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class RecordingSink:
    """A sink that keeps what it receives (the real TaskReporter lives in task.py)."""

    def __init__(self) -> None:
        self.writes: list[Any] = []
        self.failed: list[Any] = []
        self.reads: list[Any] = []

    def on_write(self, lineage: Any) -> None:
        self.writes.append(lineage)

    def on_query_failed(self, func_name: str, error: str) -> None:
        self.failed.append((func_name, error))

    def on_read(self, func_name: str, inputs: Any) -> None:
        self.reads.append((func_name, inputs))

    def clear(self) -> None:
        self.writes.clear()
        self.failed.clear()
        self.reads.clear()
