"""Issue 2 end to end: a real PySpark application reports one task to the real collector.

Each test runs an application in its own Python process (as users do), so the task end
at SparkContext stop / interpreter exit is exercised for real.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

pytest.importorskip("pyspark")
pytestmark = pytest.mark.spark

from definity_spark.collector import Collector  # noqa: E402

APP = textwrap.dedent("""
    import sys, time
    from pyspark.sql import SparkSession
    import definity_spark

    out, mode = sys.argv[1], sys.argv[2]
    spark = (SparkSession.builder.master("local[1]").appName("e2e-app")
             .config("spark.ui.enabled", "false").getOrCreate())
    handle = definity_spark.activate(spark, pipeline_name="e2e-pipeline", pit="2025-09-01",
                                     tags={"team": "data"})
    spark.range(10).write.mode("overwrite").parquet(out + "/first")
    if mode == "kill":
        print("READY", flush=True)
        sys.stdin.readline()           # the test kills the collector now
        for i in range(3):
            spark.range(5).write.mode("overwrite").parquet(out + f"/after{i}")
    print("rows", spark.read.parquet(out + "/first").count(), flush=True)
    spark.stop()
""")


def _run_app(tmp_path: Path, url: str, mode: str, **popen):
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = dict(os.environ, DEFINITY_SERVER_URL=url, DEFINITY_TOKEN="s3cr3t-token",
               DEFINITY_SERVER_TIMEOUT="1", DEFINITY_SERVER_ATTEMPTS="2",
               DEFINITY_SERVER_ATTEMPT_SLEEP="0.2", DEFINITY_FLUSH_TIMEOUT="3",
               DEFINITY_SPOOL_DIR=str(tmp_path / "spool"), DEFINITY_LOG_LEVEL="INFO")
    return subprocess.Popen([sys.executable, str(app), str(tmp_path / "out"), mode], env=env,
                            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def test_one_write_reports_start_tf_end(tmp_path: Path) -> None:
    collector = Collector(db_path=str(tmp_path / "c.db"), host="127.0.0.1", port=0,
                         token="s3cr3t-token")
    url = collector.start()
    try:
        proc = _run_app(tmp_path, url, "plain")
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr[-3000:]
        assert stdout.strip().splitlines() == ["rows 10"]  # the app's own output only
        payloads = requests.get(f"{url}/api/payloads", timeout=10,  # reads need the token
                                headers={"Authorization": "Bearer s3cr3t-token"}).json()
    finally:
        collector.stop()
    bodies = [(p["endpoint"], p["body"]) for p in payloads]
    assert bodies[0][0] == "/log/task" and bodies[0][1]["status"] == "start"
    start = bodies[0][1]
    assert start["app_name"] == "e2e-pipeline" and start["task_name"] == "e2e-app"
    assert start["task_type"] == "spark" and start["app_pit"] == "2025-09-01"
    assert start["tags"] == {"team": "data", "definity_spark.listener": "jvm"}
    assert bodies[-1] == ("/log/task", {"task_id": start["task_id"], "status": "end"})
    assert {b["task_id"] for _, b in bodies} == {start["task_id"]}
    tfs = [b for e, b in bodies if e == "/log/tf"]
    assert len(tfs) == 1  # the count and read are not transformations
    assert tfs[0]["tf_id"] == 1 and tfs[0]["input_datasets"] == {}
    assert tfs[0]["output"]["name"] == "file:" + str(tmp_path / "out" / "first")
    assert "s3cr3t-token" not in str(payloads) + stderr


def test_killing_the_collector_never_fails_or_hangs_the_app(tmp_path: Path) -> None:
    collector = Collector(db_path=str(tmp_path / "c.db"), host="127.0.0.1", port=0, token=None)
    url = collector.start()
    proc = _run_app(tmp_path, url, "kill", stdin=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "READY"
        collector.stop()
        t0 = time.monotonic()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        stdout, stderr = proc.communicate(timeout=240)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert stdout.strip().splitlines() == ["rows 10"]
    # 3 writes + a read + stop, with every send failing: bounded by the flush timeout (3 s)
    # plus Spark's own work; without the plugin this part takes a few seconds.
    assert elapsed < 60, elapsed
