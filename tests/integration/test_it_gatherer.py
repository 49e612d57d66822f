"""The JVM-side fact gatherer (spark/FactGatherer.java, compiled at run time by Janino).

Every scenario of the integration suite is read both ways already (the conftest turns on
``observer.CROSS_CHECK``: the gatherer's facts must equal a py4j-only reading of the same
callback). These tests check the gatherer itself: it compiles on this Spark, its class
bytes are cached and loaded again without compiling, a write costs two gatherer calls,
and when it is missing or fails the reader falls back to py4j with the same facts.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from definity_spark.spark import gatherer
from definity_spark.spark import listener as listener_mod
from definity_spark.spark.facts import FactReader, make_gatherer
from definity_spark.spark.worker import GATHERER_ONLY

pytestmark = pytest.mark.spark


def _reader(spark: Any, gather: bool = True) -> FactReader:
    gw, js = spark.sparkContext._gateway, spark._jsparkSession
    g = make_gatherer(gw, js, 100)[0] if gather else None
    assert g is not None or not gather, "FactGatherer.java could not be loaded"
    return FactReader(gw, js, 2000, 20000, gatherer=g)


def _callbacks(spark: Any, action: Any) -> list[Any]:
    """The listener callbacks of ``action``, captured by a real registered listener."""
    import queue

    handoff: queue.Queue = queue.Queue()
    listener = listener_mod.PyQueryExecutionListener(handoff)
    gw, js = spark.sparkContext._gateway, spark._jsparkSession
    owner = object()
    key = listener_mod.session_key(gw, js)
    previous = listener_mod.registered_owner(key)
    assert previous is None, "a task is active on the suite's session"
    assert listener_mod.register(gw, js, listener, owner, key)
    try:
        action()
        spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(30_000)
    finally:
        listener_mod.unregister(js, owner, key)
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
    reader = _reader(spark)
    [cb] = _write(spark, tmp_path)
    facts = reader.read(cb.func_name, cb.qe, cb.duration_ns, cb.exception)
    assert (reader.gathered, reader.fallbacks) == (2, 0)
    plain = _reader(spark, gather=False)
    py4j_only = plain.read(cb.func_name, cb.qe, cb.duration_ns, cb.exception).to_json()
    gathered = facts.to_json()
    for only in GATHERER_ONLY:  # what only the gatherer reads (docs/metrics.md)
        assert not py4j_only.pop(only)
        # data quality measures only where the setting asks (none here)
        assert bool(gathered.pop(only)) == (only != "observed"), only
    assert py4j_only == gathered
    assert plain.gathered == 0
    assert [s.paths for s in facts.scans] == [[p for leaf in facts.leaves for p in leaf.paths]]
    assert facts.scans[0].scan_metrics["read_rows"] == 20  # the source's rows, all read
    assert facts.run["jobs"] >= 1 and facts.run["tasks"] >= 1
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
    reader = FactReader(gw, js, 2000, 20000, gatherer=_Failing())
    facts = reader.read(cb.func_name, cb.qe, cb.duration_ns, cb.exception)
    assert (reader.gathered, reader.fallbacks) == (0, 2)
    assert facts.read_error is None
    expected = _reader(spark, gather=False).read(cb.func_name, cb.qe, cb.duration_ns,
                                                 cb.exception)
    assert facts.to_json() == expected.to_json()


def test_a_source_janino_refuses_leaves_the_reader_on_py4j(
        spark: Any, tmp_path: Any, monkeypatch: Any) -> None:
    broken = tmp_path / "FactGatherer.java"
    broken.write_text("public class FactGatherer { this is not Java }")
    monkeypatch.setattr(gatherer, "SOURCE", str(broken))
    monkeypatch.setattr(gatherer, "_loaded", {})
    gw, js = spark.sparkContext._gateway, spark._jsparkSession
    g, loaded = make_gatherer(gw, js, 100)
    assert g is None and loaded.how == "unavailable" and "CompileException" in loaded.reason
    reader = FactReader(gw, js, 2000, 20000, gatherer=g)
    [cb] = _write(spark, tmp_path)
    facts = reader.read(cb.func_name, cb.qe, cb.duration_ns, cb.exception)
    assert (reader.gathered, reader.fallbacks) == (0, 0)
    assert facts.command is not None and facts.write_metrics["numOutputRows"] == 3
    assert os.path.basename(facts.command.output_path) == "out"


def test_the_compiled_classes_are_cached_and_loaded_without_compiling(
        spark: Any, tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(gatherer, "_loaded", {})
    gw, js = spark.sparkContext._gateway, spark._jsparkSession
    first = gatherer.load(gw, js)
    assert first.how == "compiled" and first.cls is not None
    [cached] = os.listdir(gatherer.cache_dir())
    path = os.path.join(gatherer.cache_dir(), cached)
    assert os.stat(path).st_mode & 0o777 == 0o700
    assert os.stat(gatherer.cache_dir()).st_mode & 0o777 == 0o700
    assert sorted(os.listdir(path)) == ["definity", gatherer.INDEX]
    classes = os.path.join(path, "definity")  # the classes' package
    assert os.stat(classes).st_mode & 0o777 == 0o700
    files = sorted(os.listdir(classes))
    assert "FactGatherer.class" in files and "StreamWatch.class" in files
    for name in files:
        assert os.stat(os.path.join(classes, name)).st_mode & 0o777 == 0o600, name
    assert os.stat(os.path.join(path, gatherer.INDEX)).st_mode & 0o777 == 0o600
    monkeypatch.setattr(gatherer, "_loaded", {})  # as in the next application's JVM
    second = gatherer.load(gw, js)
    # (not instantiated here: py4j caches methods by class name, and this JVM has a
    # FactGatherer already; test_a_new_application_loads_the_cached_classes runs one)
    assert second.how == "cached" and str(second.cls.getName()) == gatherer.CLASS_NAME
    # a class file someone else could have written is not loaded: compiled again
    os.chmod(os.path.join(classes, "FactGatherer.class"), 0o666)
    monkeypatch.setattr(gatherer, "_loaded", {})
    assert gatherer.load(gw, js).how == "compiled"
    # nor a damaged one
    with open(os.path.join(classes, "PlanJson.class"), "r+b") as f:
        f.seek(-10, os.SEEK_END)
        f.write(b"0123456789")
    monkeypatch.setattr(gatherer, "_loaded", {})
    assert gatherer.load(gw, js).how == "compiled"
    monkeypatch.setattr(gatherer, "_loaded", {})
    assert gatherer.load(gw, js).how == "cached"  # written again whole


_APP = """
import json, sys
from pyspark.sql import SparkSession
import definity_spark
spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false") \\
    .getOrCreate()
handle = definity_spark.activate(spark, events_file=sys.argv[2], helper_process=False)
observer = next(iter(handle._runtime.observers.values()))
spark.range(4).write.mode("overwrite").parquet(sys.argv[1])
handle.flush(60)
print(json.dumps({"loaded": observer.gatherer_loaded, "stats": observer.stats}))
definity_spark.deactivate(spark)
spark.stop()
"""


def test_a_new_application_loads_the_cached_classes(tmp_path: Any) -> None:
    """Two applications (fresh JVMs) on one machine: the first compiles and caches, the
    second defines the cached classes, and both read their write with the gatherer."""
    import json
    import subprocess
    import sys

    app = tmp_path / "app.py"
    app.write_text(_APP)
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("DEFINITY_ENABLED", None)
    seen = []
    for run in range(2):
        out = subprocess.run(
            [sys.executable, str(app), str(tmp_path / f"out{run}"),
             str(tmp_path / f"events{run}.jsonl")],
            env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
        assert out.returncode == 0, out.stderr[-3000:]
        seen.append(json.loads(out.stdout.strip().splitlines()[-1]))
        events = (tmp_path / f"events{run}.jsonl").read_text()
        assert f"file:{tmp_path}/out{run}" in events
    assert [s["loaded"] for s in seen] == ["compiled", "cached"]
    for s in seen:
        assert s["stats"]["writes"] == 1 and s["stats"]["fallbacks"] == 0
        assert s["stats"]["gathered"] == 2


# ----------------------------------------------------------------------- PlanJson
# Plans with the node and field kinds TreeNode.toJSON writes case by case: literals of
# every kind (Literal's own jsonFields), CTEs and CASE WHEN (products holding tree nodes),
# windows, subqueries, Like's escape char (a constructor overloaded by arity), hints,
# grouping sets, generators, a Python UDF, catalog tables (CatalogTable, its storage,
# bucket spec, identifiers), a view, unresolved plans (EXPLAIN keeps its command's
# parsed plan), long lists and cached data.
_PARITY_SQL = [
    "SELECT 1 AS a, 'x' AS b, DATE'2024-01-02' AS d, TIMESTAMP'2024-01-02 03:04:05' AS t, "
    "1.5D AS f, CAST(1.5 AS FLOAT) AS g, 12345678901234567890BD AS big, NULL AS n, "
    "X'0102' AS bin, array(1, 2) AS arr, map('k', 1) AS m, named_struct('a', 1) AS s, "
    "INTERVAL '1' DAY AS i, 3Y AS tiny, 4S AS small, 5L AS lng",
    "WITH c AS (SELECT id FROM range(10)) SELECT * FROM c JOIN c c2 ON c.id = c2.id",
    "SELECT id, row_number() OVER (PARTITION BY id % 2 ORDER BY id) AS r, "
    "sum(id) OVER (ORDER BY id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s FROM range(10)",
    "SELECT CASE WHEN id > 1 THEN 'a' WHEN id > 0 THEN 'b' ELSE 'c' END AS c, "
    "(SELECT max(id) FROM range(3)) AS m FROM range(5) "
    "WHERE id IN (SELECT id FROM range(2)) AND EXISTS (SELECT 1)",
    "SELECT CAST(id AS STRING) LIKE '1%' ESCAPE '/' AS l FROM range(10)",
    "SELECT /*+ BROADCAST(b) */ a.id FROM range(5) a JOIN range(5) b ON a.id = b.id",
    "SELECT /*+ REPARTITION(3) */ id FROM range(5)",
    "SELECT id % 2 AS k, id % 3 AS j, count(*) AS n FROM range(10) "
    "GROUP BY GROUPING SETS ((id % 2), (id % 3), ())",
    "SELECT id, x FROM range(3) LATERAL VIEW explode(array(1, 2)) t AS x",
    "SELECT id FROM range(10) UNION SELECT id FROM range(5) INTERSECT SELECT 1 "
    "EXCEPT SELECT 2",
    "SELECT DISTINCT id FROM range(10) ORDER BY id DESC LIMIT 3",
    "SELECT * FROM (SELECT * FROM range(100)) TABLESAMPLE (50 PERCENT)",
    "SELECT * FROM parity_part WHERE p = 'a'",
    "SELECT b.id, h.v FROM parity_bucketed b JOIN parity_hive h ON b.id = h.id",
    "SELECT * FROM parity_view",
    "EXPLAIN CREATE TABLE parity_x USING parquet AS SELECT * FROM parity_part",
    "EXPLAIN INSERT INTO parity_hive SELECT id, 'v' FROM range(3)",
    # long lists: an IN list of 300 literals, a union of 30 children
    "SELECT id FROM range(10) WHERE id IN (" + ", ".join(str(i) for i in range(300)) + ")",
    " UNION ALL ".join(f"SELECT {i} AS n" for i in range(30)),
]


def _parity_tables(spark: Any) -> None:
    spark.sql("CREATE TABLE IF NOT EXISTS parity_part (id INT, v VARCHAR(10), p STRING) "
              "USING parquet PARTITIONED BY (p)")
    spark.sql("CREATE TABLE IF NOT EXISTS parity_bucketed (id INT, v STRING) USING parquet "
              "CLUSTERED BY (id) SORTED BY (id) INTO 4 BUCKETS")
    spark.sql("CREATE TABLE IF NOT EXISTS parity_hive (id INT, v STRING) STORED AS PARQUET "
              "TBLPROPERTIES ('k' = 'v')")
    spark.sql("CREATE OR REPLACE TEMP VIEW parity_view AS "
              "SELECT id, v FROM parity_part WHERE id > 1")


def _same_json(g: Any, plan: Any) -> tuple[Any, Any]:
    import json

    return json.loads(str(g.json(plan))), json.loads(str(plan.toJSON()))


def test_plan_json_is_spark_s_to_json(spark: Any) -> None:
    from pyspark.sql import functions as F

    gw, js = spark.sparkContext._gateway, spark._jsparkSession
    g = make_gatherer(gw, js, 100)[0]
    assert g is not None and g.fastJson(), "PlanJson is off on this Spark"
    _parity_tables(spark)
    frames = [spark.sql(q) for q in _PARITY_SQL]
    plus_one = F.udf(lambda x: x + 1, "long")
    frames.append(spark.range(10).withColumn("y", plus_one("id")).dropDuplicates(["y"]))
    cached = spark.range(7).selectExpr("id * 2 AS d")
    cached.cache()
    try:
        frames.append(cached.where("d > 2"))
        compared = 0
        for df in frames:
            qe = df._jdf.queryExecution()
            for plan in (qe.analyzed(), qe.optimizedPlan()):
                mine, spark_s = _same_json(g, plan)
                assert mine == spark_s, (df, mine, spark_s)
                compared += 1
        # the cached frame's optimized plan reads the cache: that node was written too
        classes = {n["class"].rsplit(".", 1)[-1] for n in
                   _same_json(g, frames[-1]._jdf.queryExecution().optimizedPlan())[0]}
        assert "InMemoryRelation" in classes
    finally:
        cached.unpersist()
    assert compared == 2 * len(frames)
    # no fallback to toJSON, and no constructor names from Scala reflection (whose first
    # use costs ~0.9 s)
    assert (g.jsonFallbacks(), g.jsonReflected()) == (0, "[]")


def test_plan_json_truncates_string_lists_as_spark_does(spark: Any) -> None:
    gw, js = spark.sparkContext._gateway, spark._jsparkSession
    g = make_gatherer(gw, js, 100)[0]
    _parity_tables(spark)
    before = spark.conf.get("spark.sql.debug.maxToStringFields")
    spark.conf.set("spark.sql.debug.maxToStringFields", "2")
    try:
        plan = spark.sql("SELECT * FROM parity_part")._jdf.queryExecution().analyzed()
        mine, spark_s = _same_json(g, plan)
    finally:
        spark.conf.set("spark.sql.debug.maxToStringFields", before)
    assert mine == spark_s
    # an attribute's qualifier (catalog, database, table) is cut short ("[spark_catalog,
    # ... 2 more fields]" on Spark 3.5, "[spark_catalog, default, ... 1 more fields]" on 4)
    assert " more fields]" in str(mine)


def test_plan_json_falls_back_to_to_json_and_counts_it(spark: Any) -> None:
    gw, js = spark.sparkContext._gateway, spark._jsparkSession
    g = make_gatherer(gw, js, 100)[0]
    before = g.jsonFallbacks()
    from py4j.protocol import Py4JJavaError

    # not a plan: PlanJson fails, then toJSON is asked for (the session has none)
    with pytest.raises(Py4JJavaError, match="toJSON"):
        g.json(js)
    assert g.jsonFallbacks() == before + 1
