"""The JVM-side fact gatherer (spark/FactGatherer.java, compiled at run time by Janino).

Every scenario of the integration suite is read both ways already (``Task`` turns on
``SessionObserver.cross_check``: the gatherer's facts must equal a py4j-only reading of
the same callback). These tests check the gatherer itself: it compiles on this Spark,
a write costs two gatherer calls, and when it is missing or fails the reader falls back
to py4j with the same facts.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from definity_spark.spark import gatherer
from definity_spark.spark import listener as listener_mod
from definity_spark.spark.facts import FactReader

pytestmark = pytest.mark.spark


def _callbacks(spark: Any, action: Any) -> list[Any]:
    """The listener callbacks of ``action``, captured by a real registered listener."""
    import queue

    handoff: queue.Queue = queue.Queue()
    listener = listener_mod.PyQueryExecutionListener(handoff)
    gw, js = spark.sparkContext._gateway, spark._jsparkSession
    owner = object()
    previous = listener_mod.registered_owner(gw, js)
    assert previous is None, "a task is active on the suite's session"
    assert listener_mod.register(gw, js, listener, owner)
    try:
        action()
        spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(30_000)
    finally:
        listener_mod.unregister(gw, js, owner)
    out = []
    while not handoff.empty():
        out.append(handoff.get_nowait())
    return out


def _write(spark: Any, tmp_path: Any) -> list[Any]:
    src = str(tmp_path / "src")
    spark.range(20).selectExpr("id", "id % 3 AS k").write.mode("overwrite").parquet(src)
    return _callbacks(spark, lambda: spark.read.parquet(src).groupBy("k").count()
                      .write.mode("overwrite").parquet(str(tmp_path / "out")))


def test_the_gatherer_compiles_and_reads_a_write_in_two_calls(spark: Any, tmp_path: Any) -> None:
    gw, js = spark.sparkContext._gateway, spark._jsparkSession
    reader = FactReader(gw, js)
    assert reader.gatherer() is not None, "Janino did not compile FactGatherer.java"
    [cb] = _write(spark, tmp_path)
    facts = reader.read(cb.func_name, cb.qe, cb.duration_ns, cb.exception)
    assert (reader.gathered, reader.fallbacks) == (2, 0)
    plain = FactReader(gw, js, gather=False)
    assert plain.read(cb.func_name, cb.qe, cb.duration_ns, cb.exception).to_json() == \
        facts.to_json()
    assert plain.gathered == 0
    # what the facts say, so that two empty readings could not agree
    assert facts.command is not None and facts.command.output_path.endswith("/out")
    assert facts.command.mode == "Overwrite" and facts.write_metrics["numOutputRows"] == 3
    assert [p.rsplit("/", 1)[-1] for leaf in facts.leaves for p in leaf.paths] == ["src"]
    assert facts.execution_id is not None and facts.execution_id == facts.root_execution_id


class _Failing:
    """A gatherer whose every call fails (as a JVM exception would)."""

    def begin(self, *args: Any) -> str:
        raise RuntimeError("gatherer down")

    def finish(self, *args: Any) -> str:
        raise RuntimeError("gatherer down")


def test_a_failing_gatherer_falls_back_to_py4j(spark: Any, tmp_path: Any) -> None:
    gw, js = spark.sparkContext._gateway, spark._jsparkSession
    [cb] = _write(spark, tmp_path)
    reader = FactReader(gw, js)
    reader._gatherer = _Failing()
    facts = reader.read(cb.func_name, cb.qe, cb.duration_ns, cb.exception)
    assert (reader.gathered, reader.fallbacks) == (0, 2)
    assert facts.read_error is None
    expected = FactReader(gw, js, gather=False).read(cb.func_name, cb.qe, cb.duration_ns,
                                                     cb.exception)
    assert facts.to_json() == expected.to_json()


def test_a_source_janino_refuses_leaves_the_reader_on_py4j(
        spark: Any, tmp_path: Any, monkeypatch: Any) -> None:
    broken = tmp_path / "FactGatherer.java"
    broken.write_text("public class FactGatherer { this is not Java }")
    monkeypatch.setattr(gatherer, "SOURCE", str(broken))
    monkeypatch.setattr(gatherer, "_classes", {})
    gw, js = spark.sparkContext._gateway, spark._jsparkSession
    reader = FactReader(gw, js)
    assert reader.gatherer() is None
    [cb] = _write(spark, tmp_path)
    facts = reader.read(cb.func_name, cb.qe, cb.duration_ns, cb.exception)
    assert (reader.gathered, reader.fallbacks) == (0, 0)
    assert facts.command is not None and facts.write_metrics["numOutputRows"] == 3
    assert os.path.basename(facts.command.output_path) == "out"
