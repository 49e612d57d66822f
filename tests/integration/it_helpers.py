"""Helpers of the integration suite: read payloads back and assert them exactly.

``Task.run(action)`` runs one scenario: it remembers how many payloads the task had,
runs the action (user code: writes, reads, SQL), waits with ``handle.flush()`` (listener
bus drained, extraction done, payloads delivered) and returns a ``Batch`` of the new
payloads of this task. Every batch is checked for the invariants that hold for any
scenario (tf_id continues the task's numbering by +1, each schema/metrics payload belongs
to a tf of the batch, no internal error was contained by the plugin meanwhile).

``expect_write(batch, ...)`` asserts one transformation exactly: the /log/tf (output
name, input names and their columns, query_str when given), the /log/dataset of the
output (ds_type, schema_field entries in order) and the ``cnt`` metric of the output.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import requests

TOKEN = "t0k-integration"
ICEBERG_RUNTIME = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
FLUSH_TIMEOUT = 60.0

Body = dict[str, Any]


def spark_version() -> str:
    import pyspark

    return str(pyspark.__version__)


def spark_line() -> str:
    """``3.5``, ``4.2``...: the Spark minor version, which decides the format jars."""
    return ".".join(spark_version().split(".")[:2])


def is_spark35() -> bool:
    return spark_line() == "3.5"


# Spark lines that have a release of each format (the jars .ci/fetch-jars.sh fetches;
# Iceberg on 3.5 from the PyPI wheel). On these lines a missing jar is a set-up error,
# not a skip; on other lines the format's tests skip.
DELTA_LINES = ("3.5", "4.2")  # Delta 3.3.3 (Spark 3.5), 4.4.0 (delta-spark_4.2_2.13)
ICEBERG_LINES = ("3.5", "4.1")  # Iceberg 1.10.2 (wheel), 1.12.0 (runtime-4.1_2.13)
AVRO_LINES = ("3.5", "4.1", "4.2", "4.3")


def jars_dir() -> str:
    """Where tests/setup.sh (.ci/fetch-jars.sh) put this venv's format jars."""
    return os.path.join(sys.prefix, "share", "definity-jars")


def _jars(*prefixes: str) -> list[str]:
    """This venv's format jars whose names start with ``prefixes`` (one each, in order),
    or [] when any is missing."""
    folder = jars_dir()
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    found = []
    for prefix in prefixes:
        hits = [n for n in names if n.startswith(prefix) and n.endswith(".jar")]
        if len(hits) != 1:
            return []
        found.append(os.path.join(folder, hits[0]))
    return found


def iceberg_jar() -> str | None:
    """The Iceberg Spark runtime: on 3.5 from the PyPI wheel
    snowpark-connect-deps-iceberg==1.0.2, on 4.x from Maven Central."""
    if not is_spark35():
        found = _jars("iceberg-spark-runtime-")
        return found[0] if found else None
    try:
        import snowpark_connect_deps_iceberg as deps  # type: ignore[import-not-found]

        return str(deps.get_jar_path(ICEBERG_RUNTIME))
    except Exception:  # noqa: BLE001 - not installed / other version
        return None


def delta_jars() -> list[str]:
    """delta-spark and delta-storage for this Spark line ([] when not fetched)."""
    return _jars("delta-spark_", "delta-storage-")


def avro_jar() -> str | None:
    found = _jars("spark-avro_")
    return found[0] if found else None


def require_format(name: str, lines: Sequence[str], present: bool) -> None:
    """Skip when ``name`` has no release for this Spark line; fail when it has one
    and its jar was not fetched (tests/setup.sh), so that a format never skips silently
    where it can run."""
    import pytest

    if spark_line() not in lines:
        pytest.skip(f"{name} has no release for Spark {spark_line()} "
                    f"(supported lines here: {', '.join(lines)})")
    if not present:
        pytest.fail(f"{name} jar missing for Spark {spark_version()} in {jars_dir()}: "
                    "run tests/setup.sh (.ci/fetch-jars.sh)")


class CollectorReader:
    """Reads what the collector accepted, in arrival order (``GET /api/payloads``)."""

    def __init__(self, url: str, token: str | None = TOKEN) -> None:
        self.url = url.rstrip("/")
        # the suite's collector has a token: it answers reads only with it
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def bodies(self, task_id: str) -> list[tuple[str, Body]]:
        response = requests.get(self.url + "/api/payloads", params={"task_id": task_id},
                                timeout=30, headers=self.headers)
        response.raise_for_status()
        return [(p["endpoint"], p["body"]) for p in response.json()]


class Batch:
    """The payloads a scenario produced (one task), with accessors by endpoint."""

    def __init__(self, task_id: str, payloads: list[tuple[str, Body]]) -> None:
        self.task_id = task_id
        self.payloads = payloads

    def of(self, endpoint: str) -> list[Body]:
        return [body for ep, body in self.payloads if ep == endpoint]

    @property
    def tfs(self) -> list[Body]:
        return self.of("/log/tf")

    @property
    def datasets(self) -> list[Body]:
        return self.of("/log/dataset")

    @property
    def metrics(self) -> list[Body]:
        """Every metric entry of every /log/metrics payload of the batch, flattened."""
        return [m for body in self.of("/log/metrics") for m in body.get("metrics", [])]

    def text(self) -> str:
        return json.dumps(self.payloads, sort_keys=True)

    def summary(self) -> list[dict[str, Any]]:
        """A compact view of the tfs for assertion messages."""
        return [{"tf_id": t.get("tf_id"), "output": t.get("output", {}).get("name"),
                 "inputs": t.get("input_datasets"), "query_str": t.get("query_str")}
                for t in self.tfs]

    def __repr__(self) -> str:
        return f"Batch({json.dumps(self.payloads, indent=1, sort_keys=True)[:6000]})"


class Task:
    """One Definity task (one module): runs scenarios and checks the task's invariants."""

    def __init__(self, handle: Any, reader: CollectorReader, spark: Any) -> None:
        self.handle = handle
        self.reader = reader
        self.spark = spark
        self.task_id = handle.task_id
        self.seen = 0       # payloads of this task already handed to a scenario
        self.last_tf_id = 0
        self._checked: dict[int, tuple[Any, ...]] = {}  # cross-check counters seen

    def observers(self) -> list[Any]:
        return list(self.handle._runtime.observers.values())

    def flush(self) -> None:
        assert self.handle.flush(timeout=FLUSH_TIMEOUT), "handle.flush() timed out"

    def check_started(self) -> None:
        self.flush()
        bodies = self.reader.bodies(self.task_id)
        assert bodies and bodies[0][0] == "/log/task" and bodies[0][1]["status"] == "start", \
            bodies[:3]
        self.seen = len(bodies)

    def check_ended(self) -> None:
        bodies = self.reader.bodies(self.task_id)
        assert bodies[-1] == ("/log/task", {"task_id": self.task_id, "status": "end"}), \
            bodies[-3:]

    def run(self, action: Callable[[], Any]) -> Batch:
        """Run user code, wait for the plugin, return the task's new payloads."""
        from definity_spark._internal import internal_error_counts

        errors_before = internal_error_counts()
        action()
        return self.collect(errors_before)

    def run_failing(self, action: Callable[[], Any], exc_type: type) -> tuple[Batch, BaseException]:
        """Run user code that must raise ``exc_type`` (the plugin must not change it)."""
        from definity_spark._internal import internal_error_counts

        errors_before = internal_error_counts()
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - checked below
            assert isinstance(exc, exc_type), f"expected {exc_type.__name__}, got {exc!r}"
            raised = exc
        else:
            raise AssertionError(f"expected {exc_type.__name__}, nothing raised")
        return self.collect(errors_before), raised

    def collect(self, errors_before: Mapping[str, int]) -> Batch:
        from definity_spark._internal import internal_error_counts

        self.flush()
        bodies = self.reader.bodies(self.task_id)
        new = bodies[self.seen:]
        self.seen = len(bodies)
        batch = Batch(self.task_id, new)
        self._check_invariants(batch)
        errors_after = internal_error_counts()
        assert errors_after == dict(errors_before), (
            f"the plugin contained internal errors: before {errors_before}, after {errors_after}")
        self._checked: dict[int, tuple[Any, ...]] = {}  # cross-check counters seen
        return batch

    def _check_invariants(self, batch: Batch) -> None:
        for endpoint, body in batch.payloads:
            assert body.get("task_id") == self.task_id, (endpoint, body)
            assert endpoint != "/log/task" or body.get("status") != "start", \
                f"a second task start inside task {self.task_id}: {body}"
        tf_ids = [t["tf_id"] for t in batch.tfs]
        expected = list(range(self.last_tf_id + 1, self.last_tf_id + 1 + len(tf_ids)))
        assert tf_ids == expected, f"tf_id must increment by 1 from {self.last_tf_id}: {tf_ids}"
        for tf in batch.tfs:
            assert tf["status"] == "end", tf
        if tf_ids:
            self.last_tf_id = tf_ids[-1]
        for ds in batch.datasets:
            assert ds.get("tf_id") in tf_ids, f"/log/dataset of no tf of this batch: {ds}"


def file_name(path: Any) -> str:
    """The name Spark's qualified local path gets: ``file:/abs/path``, no trailing slash."""
    text = str(path).rstrip("/")
    assert text.startswith("/"), text
    return "file:" + text


def expect_write(
    batch: Batch,
    *,
    output: str,
    inputs: Mapping[str, Sequence[str] | None],
    schema: Sequence[str],
    cnt: int | None,
    ds_type: str | None = None,
    query_str: str | None = None,
) -> Body:
    """Assert the batch holds exactly ONE transformation, exactly as expected.

    ``inputs``: dataset name -> columns read, in the input's schema order (None: the
    payload must leave ``columns`` out). ``schema``: ``"col-TYPE"`` entries in order.
    ``cnt``: rows written (None: not asserted, only for cases documented as unknown).

    Every part is compared and ALL differences are reported together (expected vs
    actual), so that one failure message says everything that is wrong with the write.
    """
    assert len(batch.tfs) == 1, f"expected exactly one tf, got {batch.summary()}"
    tf = batch.tfs[0]
    problems: list[str] = []

    def check(what: str, expected: Any, actual: Any) -> None:
        if expected != actual:
            problems.append(f"{what}: expected {expected!r}, actual {actual!r}")

    check("output", {"name": output}, tf.get("output"))
    expected_inputs = {name: ({} if cols is None else {"columns": list(cols)})
                       for name, cols in inputs.items()}
    check("input_datasets", expected_inputs, tf.get("input_datasets"))
    if query_str is not None:
        check("query_str", query_str, tf.get("query_str"))
    matching = [d for d in batch.datasets if d.get("ds_name") == output]
    if len(matching) != 1:
        problems.append(f"/log/dataset for {output}: expected one, actual {batch.datasets!r}")
    else:
        ds = matching[0]
        check("/log/dataset tf_id", tf.get("tf_id"), ds.get("tf_id"))
        if ds_type is not None:
            check("ds_type", ds_type, ds.get("ds_type"))
        check("schema_field entries", list(schema),
              [m.get("info_value") for m in ds.get("metadata", [])])
        expected_meta = [{"info_type": "schema_field", "info_value": entry, "info_num": i}
                         for i, entry in enumerate(schema)]
        if [m.get("info_value") for m in ds.get("metadata", [])] == list(schema):
            check("metadata", expected_meta, ds.get("metadata"))
    if cnt is not None:
        values = [m["value"] for m in batch.metrics
                  if m.get("asset_name") == output and m.get("metric_type") == "cnt"]
        check(f"cnt metric of {output}", [cnt], values)
    assert not problems, "\n".join(problems + [f"tf: {tf!r}", f"metrics: {batch.metrics!r}"])
    return tf


def expect_schema(batch: Batch, name: str, schema: Sequence[str], tf_id: int | None = None,
                  ds_type: str | None = None) -> Body:
    matching = [d for d in batch.datasets if d.get("ds_name") == name]
    assert len(matching) == 1, f"expected one /log/dataset for {name}: {batch.datasets}"
    ds = matching[0]
    if tf_id is not None:
        assert ds.get("tf_id") == tf_id, ds
    if ds_type is not None:
        assert ds.get("ds_type") == ds_type, ds
    expected = [{"info_type": "schema_field", "info_value": entry, "info_num": i}
                for i, entry in enumerate(schema)]
    assert ds["metadata"] == expected, ds["metadata"]
    return ds


def output_metric(batch: Batch, asset: str, metric_type: str) -> Any:
    values = [m["value"] for m in batch.metrics
              if m.get("asset_name") == asset and m.get("metric_type") == metric_type]
    assert len(values) == 1, f"expected one {metric_type} metric for {asset}: {batch.metrics}"
    return values[0]


def expect_no_tf(batch: Batch) -> None:
    assert batch.tfs == [], f"expected no transformation, got {batch.summary()}"
    assert batch.datasets == [], batch.datasets


# --------------------------------------------------------------------------- shared data
PEOPLE_DDL = "id INT, name STRING, age INT, city STRING"
PEOPLE_SCHEMA = ["id-INTEGER", "name-STRING", "age-INTEGER", "city-STRING"]
PEOPLE = [(1, "Ann", 34, "Paris"), (2, "Bob", 25, "Oslo"), (3, "Cid", 41, "Paris"),
          (4, "Dee", 29, "Rome")]
PEOPLE_COLS = ["id", "name", "age", "city"]

ORDERS_DDL = "order_id INT, person_id INT, amount DECIMAL(10,2), status STRING"
ORDERS_COLS = ["order_id", "person_id", "amount", "status"]


def orders_rows() -> list[tuple[int, int, Any, str]]:
    from decimal import Decimal

    return [(101, 1, Decimal("120.50"), "shipped"), (102, 1, Decimal("30.00"), "open"),
            (103, 3, Decimal("250.00"), "shipped"), (104, 4, Decimal("80.00"), "shipped"),
            (105, 2, Decimal("15.25"), "open")]


def people_df(spark: Any) -> Any:
    return spark.createDataFrame(PEOPLE, PEOPLE_DDL)


def orders_df(spark: Any) -> Any:
    return spark.createDataFrame(orders_rows(), ORDERS_DDL)
