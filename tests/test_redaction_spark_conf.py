"""Spark's own ``spark.redaction.regex`` redacts the reports too (issue 20, item 1).

A fresh application (its own JVM: the regex is a Spark conf of the context) with
``spark.redaction.regex`` naming an option the plugin's defaults do not know, a CTAS whose
OPTIONS carry a value under that name: the value reaches neither the collector (its
payloads and its database file), nor the spool, nor the events.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("pyspark")
pytestmark = pytest.mark.spark

from collector_util import CollectorClient, running_collector  # noqa: E402

TOKEN = "t0k-redaction-conf"
VALUE = "mycred-VALUE-7f3a"


def test_spark_redaction_regex_reaches_the_payloads(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    spool = tmp_path / "spool"
    with running_collector(str(db), token=TOKEN) as collector:
        script = textwrap.dedent(f"""
            import sys
            from pyspark.sql import SparkSession
            import definity_spark
            spark = (SparkSession.builder.master("local[1]")
                     .config("spark.ui.enabled", "false")
                     .config("spark.sql.warehouse.dir", {str(tmp_path / "wh")!r})
                     .config("spark.redaction.regex", "(?i)secret|password|mycred")
                     .getOrCreate())
            handle = definity_spark.activate(spark, server_url={collector.url!r},
                                             token={TOKEN!r}, spool_dir={str(spool)!r})
            spark.sql("CREATE TABLE t USING parquet OPTIONS (mycred '{VALUE}') "
                      "AS SELECT 1 AS a")
            assert handle.flush(60)
            definity_spark.deactivate(spark)
            spark.stop()
        """)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=300, cwd=str(tmp_path),
                             env={k: v for k, v in os.environ.items()
                                  if not k.startswith("DEFINITY_")})
        assert out.returncode == 0, out.stderr[-3000:]
        payloads = CollectorClient(collector.url, token=TOKEN).payloads()
    tfs = [p["body"] for p in payloads if p["endpoint"] == "/log/tf"]
    assert len(tfs) == 1 and tfs[0]["output"]["name"] == "default.t"
    assert tfs[0]["query_str"].startswith("CREATE TABLE t USING parquet OPTIONS (")
    assert VALUE not in str(payloads)
    assert VALUE.encode() not in db.read_bytes()
    for root, _, files in os.walk(tmp_path):
        for name in files:
            if "wh" in Path(root).parts:  # the table's own data files
                continue
            assert VALUE.encode() not in (Path(root) / name).read_bytes(), name
    assert VALUE not in out.stdout + out.stderr
