"""Reading the queries in the helper process (the default), for real.

A real SparkSession, the real collector over HTTP, the real helper process connected to
the driver's JVM through py4j. The reports must be the same as when the driver reads
(``spark.definity.internal.helperProcess=false``); the driver's interpreter reads no
query; a killed helper leaves the driver reading, with transformation numbers that never
repeat; the py4j secret goes down the socket only.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import pytest
import requests

pytest.importorskip("pyspark")
pytestmark = pytest.mark.spark

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fault_apps.harness import TIMING_METRIC  # noqa: E402
from sparkutil import hive_session  # noqa: E402

import definity_spark  # noqa: E402
from definity_spark.collector import Collector  # noqa: E402
from definity_spark.helper import client  # noqa: E402
from definity_spark.spark.observer import State  # noqa: E402

if not client.available():
    pytest.skip("the helper process needs Linux", allow_module_level=True)

TOKEN = "t0k-extraction-process"


@pytest.fixture(scope="module", name="env")
def env_fixture(tmp_path_factory: Any) -> Any:
    tmp = str(tmp_path_factory.mktemp("xp"))
    collector = Collector(db_path=os.path.join(tmp, "c.db"), host="127.0.0.1", port=0,
                          token=TOKEN)
    url = collector.start()
    spark = hive_session(tmp)
    yield spark, url, tmp
    definity_spark.deactivate(spark)
    spark.stop()
    collector.stop()


def activate(env: Any, helper: bool, **overrides: Any) -> tuple[Any, Any]:
    spark, url, _ = env
    definity_spark.deactivate(spark)  # a task a failed test left active
    handle = definity_spark.activate(spark, server_url=url, token=TOKEN,
                                     helper_process=helper, pipeline_name="xp",
                                     **overrides)
    assert handle is not None
    observer = next(iter(handle._runtime.observers.values()))
    assert observer.listener == "jvm"
    if helper:  # the helper attached: it takes the callbacks from the JVM itself, the
        # driver's interpreter does nothing per query
        assert wait_for(observer, State.IN_HELPER), observer.state
        assert observer.worker is None
    else:
        assert observer.state is State.IN_DRIVER and handle._runtime.helper is None
    return handle, observer


def wait_for(observer: Any, state: State, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while observer.state is not state and time.monotonic() < deadline:
        time.sleep(0.02)
    return observer.state is state


def payloads(env: Any, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    response = requests.get(env[1] + "/api/payloads", params={"task_id": task_id},
                            timeout=30, headers={"Authorization": f"Bearer {TOKEN}"})
    response.raise_for_status()
    return [(p["endpoint"], p["body"]) for p in response.json()]


def scenario(env: Any) -> None:
    """Plain writes with inputs, a CTAS, a saveAsTable, an insert, a read, a failure."""
    spark, _, tmp = env
    spark.range(20).selectExpr("id", "id % 3 AS k").write.mode("overwrite") \
        .parquet(f"{tmp}/src")
    for i in range(3):
        spark.read.parquet(f"{tmp}/src").where(f"k = {i}").select("id") \
            .write.mode("overwrite").parquet(f"{tmp}/out{i}")
    spark.sql(f"CREATE TABLE xp_ctas USING parquet AS SELECT id, k FROM parquet.`{tmp}/src`")
    spark.read.parquet(f"{tmp}/src").groupBy("k").count().write.saveAsTable("xp_saved")
    spark.range(5).selectExpr("id", "id % 3 AS k").write.insertInto("xp_ctas")
    assert spark.table("xp_ctas").count() == 25
    with pytest.raises(Exception, match="definity-boom"):  # noqa: B017 - py4j or pyspark
        spark.range(3).selectExpr("if(id >= 0, raise_error('definity-boom'), id) AS x") \
            .write.mode("overwrite").parquet(f"{tmp}/never")
    spark.sql("DROP TABLE xp_ctas")
    spark.sql("DROP TABLE xp_saved")


def comparable(bodies: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """The reports without what differs between two runs (task id, timings, the numbers
    and read actions of the warm-up)."""
    out = []
    for endpoint, body in bodies:
        body = {k: v for k, v in body.items() if k not in ("task_id", "tf_id")}
        if "metrics" in body:
            body["metrics"] = sorted(
                (m["asset_name"], m["metric_type"],
                 "<timing>" if TIMING_METRIC.search(m["metric_type"]) else m["value"])
                for m in body["metrics"] if m["metric_type"] != "read_actions")
        out.append((endpoint, body))
    return out


def test_the_same_reports_as_extraction_in_the_driver(env: Any) -> None:
    runs = {}
    for helper in (False, True):
        handle, observer = activate(env, helper)
        assert handle.flush(30)  # the task start, and the warm-up, before the scenario
        before = len(payloads(env, handle.task_id))
        scenario(env)
        assert handle.flush(60)
        if helper:
            # the driver's interpreter read none of them: the helper did
            assert observer.worker is None
            assert observer.remote["stats"]["writes"] >= 6, observer.remote
            assert observer.remote["stats"]["failed_queries"] == 1
        definity_spark.deactivate(env[0])
        bodies = payloads(env, handle.task_id)
        tfs = [b["tf_id"] for e, b in bodies if e == "/log/tf"]
        assert tfs == list(range(1, len(tfs) + 1))  # one sequence, whoever read them
        runs[helper] = comparable(bodies[before:])
        assert bodies[-1] == ("/log/task", {"task_id": handle.task_id, "status": "end"})
        assert task_metrics(bodies)["failed_queries"] == 1
        assert task_metrics(bodies)["transformations"] == tfs[-1]
    assert runs[True] == runs[False]
    outputs = [b["output"]["name"] for e, b in runs[True] if e == "/log/tf"]
    tmp = env[2]
    assert outputs == [f"file:{tmp}/src"] + [f"file:{tmp}/out{i}" for i in range(3)] \
        + ["default.xp_ctas", "default.xp_saved", "default.xp_ctas"]


def task_metrics(bodies: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return {m["metric_type"]: m["value"] for e, b in bodies if e == "/log/metrics"
            for m in b["metrics"] if m.get("asset_type") == "task"}


def test_a_killed_helper_leaves_the_driver_reading(env: Any) -> None:
    spark, _, tmp = env
    handle, observer = activate(env, True)
    for i in range(2):
        spark.range(3).write.mode("overwrite").parquet(f"{tmp}/k{i}")
    assert handle.flush(60)
    pid = handle._runtime.delivery.helper_pid
    assert pid is not None
    os.kill(pid, 9)
    deadline = time.monotonic() + 30
    while handle._runtime.delivery.helper_pid is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    for i in range(2, 5):
        spark.range(3).write.mode("overwrite").parquet(f"{tmp}/k{i}")
    assert handle.flush(60)
    assert observer.state is State.IN_DRIVER and observer.worker.alive  # reading here
    assert observer.worker.stats["writes"] == 3
    definity_spark.deactivate(spark)
    bodies = payloads(env, handle.task_id)
    tf_ids = [b["tf_id"] for e, b in bodies if e == "/log/tf"]
    outputs = [b["output"]["name"] for e, b in bodies if e == "/log/tf"]
    assert tf_ids == sorted(set(tf_ids)), tf_ids  # never the same number twice
    assert outputs[-3:] == [f"file:{tmp}/k{i}" for i in range(2, 5)]
    assert f"file:{tmp}/k0" in outputs and f"file:{tmp}/k1" in outputs
    assert bodies[-1] == ("/log/task", {"task_id": handle.task_id, "status": "end"})
    assert task_metrics(bodies)["transformations"] >= max(tf_ids)


def test_the_py4j_secret_goes_down_the_socket_only(env: Any, caplog: Any) -> None:
    spark = env[0]
    secret = spark.sparkContext._gateway.gateway_parameters.auth_token
    assert secret
    caplog.set_level(logging.DEBUG, logger="definity_spark")
    handle, observer = activate(env, True, log_level="DEBUG")
    spark.range(3).write.mode("overwrite").parquet(f"{env[2]}/secret")
    assert handle.flush(60)
    pid = handle._runtime.delivery.helper_pid
    for part in ("cmdline", "environ"):
        with open(f"/proc/{pid}/{part}", "rb") as f:
            assert secret.encode() not in f.read()
    definity_spark.deactivate(spark)
    assert observer.remote["stats"]["writes"] >= 1
    assert any("attaching -> in_helper" in r.getMessage() for r in caplog.records)
    assert not any(secret in r.getMessage() for r in caplog.records)
    assert secret not in str(payloads(env, handle.task_id))


def test_two_sessions_one_sequence(env: Any) -> None:
    spark, url, tmp = env
    handle, first = activate(env, True)
    other = spark.newSession()
    definity_spark.activate(other, server_url=url, token=TOKEN, helper_process=True)
    observers = list(handle._runtime.observers.values())
    assert len(observers) == 2 and first in observers  # one task, two sessions
    second = next(o for o in observers if o is not first)
    assert wait_for(second, State.IN_HELPER) and first.state is State.IN_HELPER
    for i in range(3):
        spark.range(2).write.mode("overwrite").parquet(f"{tmp}/s1_{i}")
        other.range(2).write.mode("overwrite").parquet(f"{tmp}/s2_{i}")
    assert handle.flush(60)
    definity_spark.deactivate(spark)
    bodies = payloads(env, handle.task_id)
    tf_ids = [b["tf_id"] for e, b in bodies if e == "/log/tf"]
    outputs = [b["output"]["name"] for e, b in bodies if e == "/log/tf"]
    assert tf_ids == list(range(1, len(tf_ids) + 1))
    assert sorted(o.rsplit("/", 1)[-1] for o in outputs if "/s" in o) == \
        sorted([f"s1_{i}" for i in range(3)] + [f"s2_{i}" for i in range(3)])
