"""A few real-Spark checks of the extraction room (the broad scenario suite lives in
tests/integration). One SparkSession for the module; determinism through
``SessionObserver.drain`` (listener bus empty + worker idle), never sleeps."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace

import pytest

pyspark = pytest.importorskip("pyspark")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sparkutil import RecordingSink, hive_session  # noqa: E402

from definity_spark._internal import set_strict  # noqa: E402
from definity_spark.settings import defaults  # noqa: E402
from definity_spark.spark.observer import SessionObserver  # noqa: E402

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def env():
    set_strict(True)
    tmp = tempfile.mkdtemp(prefix="definity-smoke-")
    spark = hive_session(tmp)
    sink = RecordingSink()
    obs = SessionObserver(spark, defaults(), sink)
    assert obs.start() is True
    yield spark, sink, obs, tmp
    obs.stop(10)
    spark.stop()
    set_strict(False)


def run(env, fn):
    spark, sink, obs, tmp = env
    sink.clear()
    fn()
    assert obs.drain(60)
    return sink


def test_parquet_write_by_path(env):
    spark, _, _, tmp = env
    run(env, lambda: spark.range(6).selectExpr("id", "cast(id as string) s", "id % 2 p")
        .write.parquet(f"{tmp}/src"))
    sink = run(env, lambda: spark.read.parquet(f"{tmp}/src").where("p = 0").select("id")
               .write.mode("overwrite").parquet(f"{tmp}/dst/"))
    assert len(sink.writes) == 1 and not sink.failed
    w = sink.writes[0]
    assert w.output.name == f"file:{tmp}/dst"
    assert w.output.schema == (("id", "LONG"),)
    assert [(i.name, i.columns) for i in w.inputs] == [(f"file:{tmp}/src", ("id", "p"))]
    assert w.metrics["cnt"] == 3
    assert w.query_str == f"DataFrameWriter.parquet(file:{tmp}/dst) mode=overwrite"


def test_ctas_one_tf_outer_name_inner_metrics(env):
    spark = env[0]
    sink = run(env, lambda: spark.sql("CREATE TABLE smoke_ctas USING parquet AS "
                                      "SELECT id, id * 2 AS d FROM range(4)"))
    assert len(sink.writes) == 1
    w = sink.writes[0]
    assert w.output.name == "default.smoke_ctas" and w.output.ds_type == "table"
    assert w.output.schema == (("id", "LONG"), ("d", "LONG"))
    assert w.inputs == ()  # range() is not a dataset
    assert w.metrics["cnt"] == 4


def test_failed_write_is_counted_not_a_tf(env):
    spark, _, _, tmp = env

    def fail():
        with pytest.raises(Exception):  # noqa: B017 - pyspark's error class differs by version
            spark.range(3).selectExpr("if(id > 1, raise_error('boom'), id) AS a") \
                .write.mode("overwrite").parquet(f"{tmp}/fail")

    sink = run(env, fail)
    assert sink.writes == []
    assert len(sink.failed) == 1 and sink.failed[0][0] == "command"


def test_register_twice_reports_once(env):
    spark, sink, obs, tmp = env
    second = SessionObserver(spark, defaults(), RecordingSink())
    assert second.start() is False  # same JVM session: not registered again
    run(env, lambda: spark.range(2).write.mode("overwrite").parquet(f"{tmp}/twice"))
    assert len(sink.writes) == 1


def test_unregister_stops_reports(env):
    spark, _, _, tmp = env
    # obs is registered on this session; a second session object of the same JVM session
    # is refused; after stop() a new observer can register and the old one hears nothing
    other_sink = RecordingSink()
    obs2 = SessionObserver(spark.newSession(), defaults(), other_sink)
    assert obs2.start() is True  # a different JVM session
    assert obs2.stop(10)
    other = spark.newSession()
    obs3 = SessionObserver(other, defaults(), RecordingSink())
    assert obs3.start() is True  # unregistered: the session can be observed again
    obs3.stop(10)
    other.range(1).write.mode("overwrite").parquet(f"{tmp}/after")
    env[2].drain(30)
    assert other_sink.writes == []


def test_the_jvm_listener_takes_the_callbacks(env):
    spark, sink, obs, tmp = env
    for _i in range(5):
        run(env, lambda: spark.range(3).write.mode("overwrite").parquet(f"{tmp}/jvm"))
        assert len(sink.writes) == 1
    assert obs.listener == "jvm" and obs.bus_queue == "executorManagement"
    assert obs.py_listener is None  # nothing crosses to a Python listener
    assert obs.worker.reader.fallbacks == 0 and obs.worker.reader.gathered >= 10
    assert obs.dropped == 0


def test_a_plain_write_is_read_with_its_callback(env):
    # the pump's call that takes the callback answers both reading phases; a CTAS's outer
    # command is read after its nested write (light), and that write's plan later too
    spark, sink, obs, tmp = env
    reader = obs.worker.reader
    before = reader.eager_phases
    for _i in range(3):
        run(env, lambda: spark.range(3).write.mode("overwrite").parquet(f"{tmp}/eager"))
        assert sink.writes[0].metrics["cnt"] == 3
    assert reader.eager_phases - before == 6
    before = reader.eager_phases
    sink = run(env, lambda: spark.sql("CREATE TABLE smoke_eager USING parquet AS "
                                      "SELECT id FROM range(5)"))
    assert len(sink.writes) == 1 and sink.writes[0].metrics["cnt"] == 5
    assert sink.writes[0].output.name == "default.smoke_eager"
    assert reader.eager_phases - before == 1  # the nested write's first phase only


def test_python_listener_bus_time_per_callback(env):
    spark, _, _, tmp = env
    other = spark.newSession()
    sink = RecordingSink()
    obs = SessionObserver(other, replace(defaults(), jvm_listener=False), sink)
    assert obs.start() is True
    try:
        for _i in range(20):
            other.range(3).write.mode("overwrite").parquet(f"{tmp}/many")
        assert obs.drain(60)
        assert obs.listener == "python" and len(sink.writes) == 20
        assert obs.worker.reader.gathered == 0
        samples = obs.py_listener.busy_ns_samples
        median_ms = statistics.median(samples) / 1e6
        print(f"python-side callback median {median_ms:.3f} ms over {len(samples)}")
        assert median_ms <= 1.0
    finally:
        obs.stop(10)
    # Spark's own timer of the listener that calls ours (includes the py4j round trip)
    timers = spark.sparkContext._jsc.sc().listenerBus().metrics().metricRegistry().getTimers()
    for name in list(timers.keySet().toArray()):
        if "ExecutionListenerBus" in str(name):
            snap = timers.get(name).getSnapshot()
            print(f"{name}: median {snap.getMedian() / 1e6:.3f} ms "
                  f"p95 {snap.get95thPercentile() / 1e6:.3f} ms")


class _SlowSink(RecordingSink):
    def on_write(self, lineage):  # noqa: ANN001 - RecordingSink's signature
        time.sleep(1.5)  # the worker is behind: the hand-off queues fill
        super().on_write(lineage)


def test_a_full_jvm_hand_off_drops_and_counts(env):
    """Queues of one: while the worker is stuck, later callbacks are dropped in the JVM,
    counted, and the writes themselves are not held up."""
    spark, _, _, tmp = env
    other = spark.newSession()
    sink = _SlowSink()
    obs = SessionObserver(other, defaults(), sink, handoff_size=1)
    assert obs.start() is True
    try:
        other.range(1).write.mode("overwrite").parquet(f"{tmp}/full0")
        assert obs.drain(60) and obs.listener == "jvm"
        started = time.monotonic()
        for i in range(8):
            other.range(1).write.mode("overwrite").parquet(f"{tmp}/full{i}")
        writing = time.monotonic() - started
        assert obs.drain(60)
    finally:
        obs.stop(10)
    assert obs.dropped >= 2
    assert len(sink.writes) + obs.dropped == 9
    assert writing < 8 * 1.5  # the writes did not wait for the slow worker
