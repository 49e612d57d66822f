"""The Databricks init script (conf/databricks/init.sh) against a temporary root.

``DEFINITY_ROOT`` points every path the script writes (``/databricks/python``,
``/databricks/driver/conf``, ``/etc/environment``) into a temp dir. The "cluster's
Python" there is a real virtualenv with a real pip; the plugin is a wheel built from this
checkout. pyspark is the cluster's (here: this venv's pyspark, put on PYTHONPATH), never
installed by the script. Finally a Python started with the environment the script wrote
creates a SparkSession and the collector receives the task: activation with no code change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_util import CollectorClient, collector_fixture  # noqa: F401 - fixture "collector"

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "conf" / "databricks" / "init.sh"
# What a Databricks runtime provides itself (the plugin must not install or replace these).
CLUSTER_PACKAGES = ("pyspark", "py4j", "requests", "urllib3", "idna", "charset_normalizer",
                    "certifi")


def test_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, text=True)
    (built,) = out.glob("definity_spark-*.whl")
    return built


@pytest.fixture(scope="module")
def cluster_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the cluster-provided packages (links into this venv)."""
    import pyspark

    site = Path(pyspark.__file__).resolve().parents[1]
    target = tmp_path_factory.mktemp("cluster-site")
    for name in CLUSTER_PACKAGES:
        if (site / name).exists():
            (target / name).symlink_to(site / name)
    return target


def make_root(base: Path) -> Path:
    """A temp root whose /databricks/python is a real virtualenv (with pip)."""
    root = base / "root"
    python_dir = root / "databricks" / "python"
    python_dir.parent.mkdir(parents=True)
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(python_dir)], check=True)
    return root


def run_init(root: Path, **env_vars: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFINITY_", "PIP_"))}
    env.update(DEFINITY_ROOT=str(root), PIP_CONFIG_FILE=os.devnull)
    env.update(env_vars)
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=300)


def site_packages(root: Path) -> Path:
    (site,) = (root / "databricks" / "python" / "lib").glob("python3*/site-packages")
    return site


@pytest.fixture(scope="module")
def installed_root(tmp_path_factory: pytest.TempPathFactory,
                   wheel: Path) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("dbx")
    root = make_root(base)
    # pre-existing content of /etc/environment must survive
    (root / "etc").mkdir()
    (root / "etc" / "environment").write_text('PATH="/usr/bin:/bin"\nDEFINITY_ENABLED=false\n')
    result = run_init(root, DEFINITY_WHEEL=str(wheel), DEFINITY_PIP_ARGS="--no-deps --no-index",
                      DEFINITY_SERVER_URL="http://127.0.0.1:9/definity", DEFINITY_ENV="prod",
                      DEFINITY_TOKEN="dbx-secret-token", DB_IS_DRIVER="TRUE")
    yield {"root": root, "result": result}


def test_installs_wheel_and_writes_driver_conf(installed_root: dict[str, Any]) -> None:
    root, result = installed_root["root"], installed_root["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr
    assert "installed and enabled for the driver" in result.stdout
    site = site_packages(root)
    # the package, the start hook, and nothing of the cluster's own stack
    assert (site / "definity_spark" / "autoload.py").exists()
    assert (site / "definity_spark.pth").exists()
    assert (site / "_definity_spark_boot.py").exists()
    assert not (site / "pyspark").exists() and not (site / "requests").exists()
    conf = (root / "databricks" / "driver" / "conf" / "00-definity.conf").read_text()
    assert conf.splitlines()[1:] == [
        "[driver] {",
        '  "spark.definity.enabled" = "true"',
        '  "spark.definity.server" = "http://127.0.0.1:9/definity"',
        '  "spark.definity.env.name" = "prod"',
        "}",
    ]
    environment = (root / "etc" / "environment").read_text().splitlines()
    assert environment == ['PATH="/usr/bin:/bin"', "DEFINITY_ENABLED=true",
                           "DEFINITY_SERVER_URL=http://127.0.0.1:9/definity",
                           "DEFINITY_ENV=prod"]
    # the token is never written to a file or the log
    for path in (root / "databricks" / "driver").rglob("*"):
        if path.is_file():
            assert "dbx-secret-token" not in path.read_text()
    assert "dbx-secret-token" not in (root / "etc" / "environment").read_text()
    assert "dbx-secret-token" not in result.stdout + result.stderr


def test_rerun_is_idempotent(installed_root: dict[str, Any], wheel: Path) -> None:
    root = installed_root["root"]
    before = (root / "etc" / "environment").read_text()
    result = run_init(root, DEFINITY_WHEEL=str(wheel), DEFINITY_PIP_ARGS="--no-deps --no-index",
                      DEFINITY_SERVER_URL="http://127.0.0.1:9/definity", DEFINITY_ENV="prod")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (root / "etc" / "environment").read_text() == before  # no duplicated lines


APP = textwrap.dedent("""
    import logging, sys
    from pyspark.sql import SparkSession

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = sys.argv[1]
    # The keys a Databricks job cluster carries (what the driver conf would hold), and
    # the notebook of the job's task as a local property of the thread, as the REPL sets it.
    from pyspark import SparkConf, SparkContext
    conf = (SparkConf().setMaster("local[1]").setAppName("Databricks Shell")
            .set("spark.ui.enabled", "false")
            .set("spark.databricks.clusterUsageTags.clusterId", "0926-101010-abcd1234")
            .set("spark.databricks.clusterUsageTags.clusterName", "job-123-run-456")
            .set("spark.databricks.job.id", "123")
            .set("spark.databricks.job.runId", "456"))
    sc = SparkContext(conf=conf)
    sc.setLocalProperty("spark.databricks.notebook.path", "/Repos/etl/daily/orders_nb")
    spark = SparkSession(sc)
    spark.range(10).write.mode("overwrite").parquet(out + "/orders")
    print("PLUGIN_IMPORTED", "definity_spark" in sys.modules, flush=True)
    spark.stop()
    # Then a second application in the same JVM, on a cluster in shared access mode: one
    # log line, no task. (It comes second because a JVM keeps the conf of the first
    # application as system properties, and later SparkConfs inherit them.)
    shared = (SparkSession.builder.master("local[1]").appName("Databricks Shell")
              .config("spark.ui.enabled", "false")
              .config("spark.databricks.clusterUsageTags.dataSecurityMode", "USER_ISOLATION")
              .getOrCreate())
    shared.range(3).write.mode("overwrite").parquet(out + "/shared")
    shared.stop()
""")



@pytest.mark.spark
def test_python_with_resulting_environment_activates(
        installed_root: dict[str, Any], cluster_site: Path, tmp_path: Path,
        collector: Any) -> None:
    root = installed_root["root"]
    python = root / "databricks" / "python" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEFINITY_", "PYSPARK_"))}
    for line in (root / "etc" / "environment").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value.strip('"')
    # the cluster's own variables: the token from a secret, and where the server is
    env.update(DEFINITY_TOKEN="dbx-secret-token", DEFINITY_SERVER_URL=collector.url,
               PYTHONPATH=str(cluster_site), PYSPARK_PYTHON=str(python))
    app = tmp_path / "job.py"
    app.write_text(APP)
    out = str(tmp_path / "out")
    result = subprocess.run([str(python), str(app), out], env=env, capture_output=True,
                            text=True, timeout=240, cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "PLUGIN_IMPORTED True" in result.stdout
    assert result.stderr.count("shared access mode") == 1, result.stderr[-3000:]
    client = CollectorClient(collector.url)
    tasks = client.tasks()
    assert len(tasks) == 1, tasks  # the job's; nothing from the shared-mode application
    task = tasks[0]
    assert (task["app_name"], task["task_name"]) == ("databricks-job-123", "orders_nb"), task
    assert task["tags"] == {"databricks_job_id": "123", "databricks_run_id": "456",
                            "definity_spark.listener": "jvm",
                            "databricks_notebook_path": "/Repos/etl/daily/orders_nb",
                            "databricks_cluster": "job-123-run-456"}, task
    assert task["env"] == "prod"
    assert task["status"] == "end"
    detail = client.task(task["task_id"])
    assert [tf["output"]["name"].rsplit("/", 1)[-1] for tf in detail["transformations"]] == \
        ["orders"], detail["transformations"]


def test_failing_install_is_loud_and_harmless(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    result = run_init(root, DEFINITY_PIP_SPEC="definity-spark-no-such-package==9.9",
                      DEFINITY_PIP_INDEX_URL="http://user:hunter2@127.0.0.1:9/simple",
                      DEFINITY_PIP_ARGS="--retries 0 --timeout 2")
    assert result.returncode == 0  # the cluster must start anyway
    assert "[definity-spark init] ERROR: installing definity-spark-no-such-package==9.9" \
        in result.stderr, result.stderr
    assert "WITHOUT definity-spark" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr  # index credentials not logged
    assert not (root / "databricks" / "driver" / "conf" / "00-definity.conf").exists()
    assert not (root / "etc" / "environment").exists()
    # and a wheel path that does not exist
    missing = run_init(root, DEFINITY_WHEEL=str(tmp_path / "nope.whl"))
    assert missing.returncode == 0 and "does not exist" in missing.stderr


def test_worker_nodes_do_nothing(tmp_path: Path) -> None:
    result = run_init(tmp_path / "root", DB_IS_DRIVER="FALSE", DEFINITY_WHEEL="/nope.whl")
    assert result.returncode == 0 and "worker node" in result.stdout
    assert not (tmp_path / "root").exists()


def test_install_from_package_index(tmp_path: Path, wheel: Path) -> None:
    # a PEP 503 simple index on disk, as a private index would serve it
    index = tmp_path / "simple"
    (index / "definity-spark").mkdir(parents=True)
    shutil.copy(wheel, index / "definity-spark" / wheel.name)
    (index / "definity-spark" / "index.html").write_text(
        f'<html><body><a href="{wheel.name}">{wheel.name}</a></body></html>')
    root = make_root(tmp_path)
    result = run_init(root, DEFINITY_PIP_INDEX_URL=index.as_uri(),
                      DEFINITY_PIP_SPEC="definity-spark==0.1.0", DEFINITY_PIP_ARGS="--no-deps")
    assert result.returncode == 0 and "ERROR" not in result.stderr, result.stdout + result.stderr
    assert (site_packages(root) / "definity_spark.pth").exists()
    assert "DEFINITY_ENABLED=true" in (root / "etc" / "environment").read_text()
