"""Harness of the issue-3 integration suite: real PySpark, real collector, real databases.

Cost model (2 cores): ONE SparkSession for the whole pytest process (a JVM start is
~5-10 s), local[2], Hive support on an embedded Derby metastore in a temp dir, with the
SQLite and PostgreSQL JDBC drivers and the format jars of this Spark line (spark-avro;
Delta Lake with the session catalog as Delta's ``DeltaCatalog``; the Iceberg runtime
with a Hadoop catalog ``ice``: .ci/fetch-jars.sh) on the driver classpath. Each test
module is one Definity task (``activate`` at module start, ``deactivate`` at module
end); each scenario captures the payloads its actions produced
(``task.run(action)``), after ``handle.flush()`` has waited for the listener bus, the
extraction and the delivery: no sleeping anywhere.

Payloads go over real HTTP on loopback to the project's local collector
(``definity_spark.collector.Collector``, token-checked); the suite reads them back with
``GET /api/payloads``.

Module data (tables, files, databases) is created by a module-level ``module_data``
fixture BEFORE the module's task is activated, so setup writes never show up as
transformations.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import pyspark  # noqa: F401
except ImportError:  # no pyspark here (e.g. the pure suites' venv): collect nothing
    collect_ignore_glob = ["test_it_*.py"]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import kafka_broker  # noqa: E402  (tests/kafka_broker.py)
from it_helpers import (  # noqa: E402
    TOKEN,
    CollectorReader,
    Task,
    avro_jar,
    delta_jars,
    iceberg_jar,
    jars_dir,
    spark_version,
)

# IT_FALLBACK=1 (.ci/run, on a subset of the modules): the fallback path, the py4j Python
# listener read in the driver, instead of what users get by default (the JVM listener,
# read in the helper process, where every callback is also read through py4j alone and
# the two readings must agree: observer.CROSS_CHECK)
FALLBACK = ({"jvm_listener": False, "helper_process": False}
            if os.environ.get("IT_FALLBACK") == "1" else {})
SQLITE_JAR = "/usr/share/java/sqlite-jdbc.jar"
POSTGRES_JAR = "/usr/share/java/postgresql.jar"


# --------------------------------------------------------------------------- session
@pytest.fixture(scope="session")
def it_base() -> Iterator[Path]:
    """One temp dir for everything the suite writes (warehouse, Derby, files, spool)."""
    base = Path(tempfile.mkdtemp(prefix="definity-it-"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def _clean_definity_environment() -> Iterator[None]:
    """No DEFINITY_* variable of the developer's shell may steer the suite."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("DEFINITY_")}
    for key in saved:
        del os.environ[key]
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def collector(it_base: Path) -> Iterator[CollectorReader]:
    from definity_spark.collector import Collector

    server = Collector(db_path=str(it_base / "collector.db"), host="127.0.0.1", port=0,
                       token=TOKEN)
    url = server.start()
    try:
        yield CollectorReader(url)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def spark(it_base: Path) -> Iterator[Any]:
    from pyspark.sql import SparkSession

    jars = [j for j in (SQLITE_JAR, POSTGRES_JAR) if os.path.exists(j)]
    ice = iceberg_jar()
    delta = delta_jars()
    avro = avro_jar()
    jars += [j for j in [ice, avro, *delta, *kafka_broker.spark_jars()] if j]
    derby = it_base / "derby"
    derby.mkdir()
    builder = (
        SparkSession.builder.master("local[2]").appName("definity-it")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.warehouse.dir", str(it_base / "warehouse"))
        .config("spark.driver.extraJavaOptions", f"-Dderby.system.home={derby}")
        .config("spark.hadoop.javax.jdo.option.ConnectionURL",
                f"jdbc:derby:;databaseName={derby}/metastore_db;create=true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.showConsoleProgress", "false")
        .enableHiveSupport()
    )
    if jars:
        builder = (builder.config("spark.jars", ",".join(jars))
                   .config("spark.driver.extraClassPath", ":".join(jars)))
    extensions = []
    if delta:
        # as Delta's docs configure a session: its extension and its session catalog
        extensions.append("io.delta.sql.DeltaSparkSessionExtension")
        builder = builder.config("spark.sql.catalog.spark_catalog",
                                 "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        # Delta's Python API (delta.tables) is inside the delta-spark jar
        if delta[0] not in sys.path:
            sys.path.append(delta[0])
    if ice:
        extensions.append("org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
        builder = (
            builder.config("spark.sql.catalog.ice", "org.apache.iceberg.spark.SparkCatalog")
            .config("spark.sql.catalog.ice.type", "hadoop")
            .config("spark.sql.catalog.ice.warehouse", "file:" + str(it_base / "iceberg"))
        )
    if extensions:
        builder = builder.config("spark.sql.extensions", ",".join(extensions))
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        # another in-process test left a context: ours needs its own static confs
        SparkContext._active_spark_context.stop()
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    from definity_spark.spark import observer

    observer.CROSS_CHECK = True
    # Hive CTAS/INSERT with dynamic partitions (a common production setting)
    session.conf.set("hive.exec.dynamic.partition.mode", "nonstrict")
    _STARTED.append(session)
    try:
        yield session
    finally:
        _stop_spark()


_STARTED: list[Any] = []


def _stop_spark() -> None:
    """End the suite's task and stop its SparkSession (idempotent)."""
    while _STARTED:
        session = _STARTED.pop()
        import definity_spark

        definity_spark.deactivate(session)
        session.stop()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: Any, nextitem: Any) -> None:
    # Stop our SparkSession as soon as the last test of this directory ran, not at the
    # end of the whole pytest session: later in-process Spark tests must not inherit it.
    here = os.path.dirname(os.path.abspath(__file__))
    if nextitem is None or not str(nextitem.fspath).startswith(here + os.sep):
        _stop_spark()


# --------------------------------------------------------------------------- per module
@pytest.fixture(scope="module")
def module_data() -> Any:
    """Overridden by modules that create data before their task starts."""
    return None


@pytest.fixture(scope="module")
def module_dir(it_base: Path, request: Any) -> Path:
    path = it_base / request.module.__name__.rsplit(".", 1)[-1]
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def task(spark: Any, collector: CollectorReader, module_data: Any, module_dir: Path,
         it_base: Path, request: Any) -> Iterator[Task]:
    """One Definity task per module: activated after the module's data exists (with the
    module's ``TASK_SETTINGS``, if any)."""
    import definity_spark

    definity_spark.deactivate(spark)  # a previous module's task, if any, ends first
    handle = definity_spark.activate(
        spark, server_url=collector.url, token=TOKEN, pipeline_name="it",
        task_name=os.path.basename(str(module_dir)), spool_dir=str(it_base / "spool"),
        flush_timeout=60.0, **{**getattr(request.module, "TASK_SETTINGS", {}), **FALLBACK})
    assert handle is not None, "definity_spark.activate returned None"
    current = Task(handle, collector, spark)
    current.check_started()
    try:
        yield current
    finally:
        definity_spark.deactivate(spark, timeout=60)
        current.check_ended()


# --------------------------------------------------------------------------- PostgreSQL
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """A throwaway PostgreSQL server on loopback, run as the ``postgres`` user."""

    user = "etl"
    password = "pg-S3cret-pw"  # the suite asserts it never appears in a payload
    database = "shop"

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.dir = tempfile.mkdtemp(prefix="definity-it-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = _free_port()
        self.url = f"jdbc:postgresql://127.0.0.1:{self.port}/{self.database}"

    def _as_postgres(self, *argv: str, **kw: Any) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                              capture_output=True, text=True, timeout=120, **kw)

    def start(self) -> None:
        shutil.chown(self.dir, "postgres")
        os.chmod(self.dir, 0o700)
        self._as_postgres(os.path.join(self.bindir, "initdb"), "-D", self.data, "-U",
                          "postgres", "--auth-local=trust", "--auth-host=md5", "-E", "UTF8")
        self._as_postgres(
            os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-w", "-t", "60",
            "-l", os.path.join(self.dir, "server.log"), "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start")
        self.psql(f"CREATE USER {self.user} PASSWORD '{self.password}'", db="postgres")
        self.psql(f"CREATE DATABASE {self.database} OWNER {self.user}", db="postgres")

    def psql(self, sql: str, db: str | None = None) -> str:
        """Run SQL over the Unix socket (trust auth) as the owner of the shop database."""
        user = "postgres" if db == "postgres" else self.user
        out = self._as_postgres(os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t",
                                "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-p", str(self.port),
                                "-U", user, "-d", db or self.database, "-c", sql)
        return out.stdout

    def stop(self) -> None:
        try:
            self._as_postgres(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m",
                              "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bindirs or not shutil.which("runuser") or not os.path.exists(POSTGRES_JAR):
        pytest.skip("PostgreSQL server / JDBC driver not installed (run .ci/setup-deps.sh)")
    if os.geteuid() != 0:
        pytest.skip("the PostgreSQL fixture runs the server as the postgres user: needs root")
    server = Postgres(bindirs[-1])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def pytest_report_header(config: Any) -> list[str]:
    try:
        delta = delta_jars()
        return [f"definity-spark integration: pyspark {spark_version()}, "
                f"iceberg: {iceberg_jar() or 'none'}, "
                f"delta: {', '.join(os.path.basename(j) for j in delta) or 'none'}, "
                f"avro: {avro_jar() or 'none'} (format jars: {jars_dir()}), "
                f"path: {'fallback (py4j listener)' if FALLBACK else 'default'}"]
    except Exception:  # noqa: BLE001
        return []

