"""The JVM listener on one of Spark's own listener-bus queues (``spark.definity.listener.onBus``).

A real SparkSession, the real collector over HTTP. By default the plugin takes query ends
with its compiled Java class as a SparkListener on a queue Spark runs anyway, instead of a
QueryExecutionListener, for which Spark would start its ``shared`` queue: a thread woken for
every event of the application. The reports must be the same either way; other sessions'
queries are not taken; deactivation takes it off the bus.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from typing import Any

import pytest

pytest.importorskip("pyspark")
pytestmark = pytest.mark.spark

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the same module-scoped session and collector, and the same scenario and report helpers
from test_extraction_process import (  # noqa: E402
    TOKEN,
    comparable,
    env_fixture,  # noqa: F401 - the `env` fixture
    payloads,
    scenario,
    task_metrics,
)

import definity_spark  # noqa: E402
from definity_spark.spark import gatherer  # noqa: E402


def activate(env: Any, on_bus: bool) -> tuple[Any, Any]:
    spark, url, _ = env
    definity_spark.deactivate(spark)
    handle = definity_spark.activate(spark, server_url=url, token=TOKEN, pipeline_name="bus",
                                     jvm_listener=on_bus, helper_process=False)
    assert handle is not None
    return handle, next(iter(handle._runtime.observers.values()))


def bus(spark: Any) -> Any:
    return spark._jsparkSession.sparkContext().listenerBus()


def gatherers_on_bus(spark: Any) -> int:
    return sum(1 for listener in bus(spark).listeners()
               if listener.getClass().getName() == gatherer.CLASS_NAME)


def test_the_same_reports_as_a_query_execution_listener(env: Any) -> None:
    spark = env[0]
    # first, so that no QueryExecutionListener of this module made Spark start the queue
    shared_before = bool(bus(spark).activeQueues().contains("shared"))
    runs = {}
    for on_bus in (True, False):
        handle, observer = activate(env, on_bus)
        assert handle.flush(30)
        before = len(payloads(env, handle.task_id))
        scenario(env)
        assert handle.flush(60)
        if on_bus:
            assert observer.bus_queue == "executorManagement"
            assert observer.listener == "jvm"
            assert gatherers_on_bus(spark) == 1
            # no QueryExecutionListener: Spark started no shared queue for the plugin
            assert bool(bus(spark).activeQueues().contains("shared")) == shared_before
        else:  # the fallback: the Python listener, read through py4j
            assert observer.bus_queue is None and observer.listener == "python"
        assert observer.stats["writes"] >= 6 and observer.stats["failed_queries"] == 1
        definity_spark.deactivate(spark)
        bodies = payloads(env, handle.task_id)
        runs[on_bus] = [(e, {**b, "metrics": [m for m in b["metrics"]
                                              if not GATHERER_ONLY.search(m[1])]})
                        if "metrics" in b else (e, b) for e, b in comparable(bodies[before:])]
        assert task_metrics(bodies)["failed_queries"] == 1
    on, off = ([repr(x) for x in runs[flag]] for flag in (True, False))
    assert on == off, "\n".join(difflib.unified_diff(off, on, "fallback", "on the bus",
                                                     lineterm=""))
    outputs = [b["output"]["name"] for e, b in runs[True] if e == "/log/tf"]
    tmp = env[2]
    assert outputs == [f"file:{tmp}/src"] + [f"file:{tmp}/out{i}" for i in range(3)] \
        + ["default.xp_ctas", "default.xp_saved", "default.xp_ctas"]


# how a query ran and what it read come from the JVM gatherer only (docs/metrics.md)
GATHERER_ONLY = re.compile(
    r"^(read_|jobs$|stages$|tasks$|failed_tasks$|executor|jvm_gc|peak_execution|memory_spill"
    r"|disk_spill|shuffle_|skew_|task_time|utilization)")


def test_another_sessions_queries_are_not_taken(env: Any) -> None:
    spark, _, tmp = env
    handle, observer = activate(env, True)
    other = spark.newSession()  # not activated
    other.range(3).write.mode("overwrite").parquet(f"{tmp}/other")
    spark.range(3).write.mode("overwrite").parquet(f"{tmp}/mine")
    other.range(3).write.mode("overwrite").parquet(f"{tmp}/other2")
    assert handle.flush(60)
    definity_spark.deactivate(spark)
    outputs = [b["output"]["name"] for e, b in payloads(env, handle.task_id) if e == "/log/tf"]
    assert f"file:{tmp}/mine" in outputs
    assert not any("other" in o for o in outputs), outputs


def test_deactivation_takes_it_off_the_bus(env: Any) -> None:
    spark, _, tmp = env
    handle, observer = activate(env, True)
    assert gatherers_on_bus(spark) == 1
    definity_spark.deactivate(spark)
    assert gatherers_on_bus(spark) == 0
    assert observer.bus_queue is None
    # activated again: on the bus again, once, and reporting
    handle, observer = activate(env, True)
    assert gatherers_on_bus(spark) == 1 and observer.bus_queue == "executorManagement"
    spark.range(2).write.mode("overwrite").parquet(f"{tmp}/again")
    assert handle.flush(60)
    definity_spark.deactivate(spark)
    outputs = [b["output"]["name"] for e, b in payloads(env, handle.task_id) if e == "/log/tf"]
    assert outputs == [f"file:{tmp}/again"]
