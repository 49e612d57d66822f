"""The console script: doctor's verdicts against a real collector, and the demo end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from definity_spark.collector import Collector

TOKEN = "doctor-s3cret-token"


def _doctor(env_extra: dict, *args: str, cwd: Path | None = None
            ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFINITY_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-m", "definity_spark.cli", "doctor", *args],
                          env=env, capture_output=True, text=True, timeout=300, cwd=cwd)


def test_doctor_verdicts(tmp_path: Path) -> None:
    with Collector(db_path=str(tmp_path / "c.db"), token=TOKEN) as collector:
        good = _doctor({"DEFINITY_SERVER_URL": collector.url, "DEFINITY_TOKEN": TOKEN})
        bad = _doctor({"DEFINITY_SERVER_URL": collector.url, "DEFINITY_TOKEN": "wrong"})
    down = _doctor({"DEFINITY_SERVER_URL": "http://127.0.0.1:9", "DEFINITY_TOKEN": TOKEN})
    assert good.returncode == 0 and "token accepted" in good.stdout, good.stdout
    assert bad.returncode == 1 and "token REJECTED (HTTP 401)" in bad.stdout, bad.stdout
    assert down.returncode == 1 and "NOT reachable" in down.stdout, down.stdout
    for proc in (good, bad, down):
        assert TOKEN not in proc.stdout + proc.stderr
        assert "spark.definity.token" in proc.stdout and "***" in proc.stdout


@pytest.mark.spark
def test_doctor_spark_shows_the_listener_and_its_fallback(tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    default = _doctor({}, "--spark", cwd=tmp_path)
    assert default.returncode == 0, default.stdout + default.stderr[-2000:]
    assert "listener: the Java listener (FactGatherer, " in default.stdout, default.stdout
    assert "queue of the listener bus" in default.stdout
    assert "a test write reported: yes" in default.stdout
    off = _doctor({"DEFINITY_INTERNAL_JVM_LISTENER": "false"}, "--spark", cwd=tmp_path)
    assert "listener: the Python listener (py4j); why: turned off" in off.stdout, off.stdout
    assert "queries read in the driver; a test write reported: yes" in off.stdout
    assert off.returncode == 1  # the fallback is a finding


@pytest.mark.spark
@pytest.mark.slow
def test_demo_prints_the_lineage_tree() -> None:
    pytest.importorskip("pyspark")
    proc = subprocess.run([sys.executable, "-m", "definity_spark.cli", "demo"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "pipeline 'demo-pipeline', task 'definity-demo'" in out
    assert "tf 5: shop.revenue_by_country  (2 rows)" in out
    assert "<- shop.orders [customer_id, amount]" in out
    assert "<- shop.customers [customer_id, country]" in out
    assert "tf 7" not in out  # the count at the end is not a transformation
    assert "lineage page: http://127.0.0.1:" in out
