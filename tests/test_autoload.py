"""Activation by configuration only (issue 4, mode 1): the .pth hook, spark-submit, env, defaults.

The applications here never import definity_spark: the plugin must come in through
``definity_spark.pth`` (installed with the package) and attach when the SparkSession is
created, because ``spark.definity.enabled`` is true in the Spark conf (``--conf``, or
``spark-defaults.conf``) or ``DEFINITY_ENABLED`` in the environment. Everything runs for
real: ``spark-submit`` from the pyspark wheel, a JVM per application, the local collector
over loopback.

The helpers at the top are shared with test_standalone_cluster.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from collector_util import collector_fixture  # noqa: F401 - fixture "collector"

from definity_spark import autoload

# An application that knows nothing about definity: two writes, the second reads the first.
APP = textwrap.dedent("""
    import sys
    from pyspark.sql import SparkSession

    out = sys.argv[1]
    spark = SparkSession.builder.appName("activation-app").getOrCreate()
    df = spark.range(0, 100, numPartitions=4).selectExpr("id", "id % 7 AS k")
    df.write.mode("overwrite").parquet(out + "/numbers")
    (spark.read.parquet(out + "/numbers").groupBy("k").count()
         .write.mode("overwrite").parquet(out + "/counts"))
    print("PLUGIN_IMPORTED", "definity_spark" in sys.modules, flush=True)
    spark.stop()
""")


def spark_bin(name: str) -> str:
    """A launcher shipped with the pyspark wheel of this interpreter's venv."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / name)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any DEFINITY_* or SPARK_* leftovers."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DEFINITY_", "SPARK_", "PYSPARK_"))}
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env.update(extra)
    return env


def spark_submit(app: Path, args: list[str], conf: Mapping[str, str] | None = None,
                 env: Mapping[str, str] | None = None, master: str = "local[2]",
                 timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [spark_bin("spark-submit"), "--master", master,
           "--conf", "spark.ui.enabled=false",
           "--conf", "spark.sql.shuffle.partitions=2"]
    for key, value in (conf or {}).items():
        cmd += ["--conf", f"{key}={value}"]
    cmd += [str(app), *args]
    result = subprocess.run(cmd, env=dict(env or clean_env()), cwd=str(app.parent),
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"spark-submit failed ({result.returncode})\nSTDOUT:\n{result.stdout[-4000:]}\n"
        f"STDERR:\n{result.stderr[-6000:]}")
    return result


def summarize(client: Any, out_dir: str) -> list[dict[str, Any]]:
    """What the collector holds, per task, with the run's output dir replaced by <out>."""
    def norm(name: str | None) -> str | None:
        if name is None:
            return None
        for prefix in ("file://" + out_dir, "file:" + out_dir, out_dir):
            name = name.replace(prefix, "<out>")
        return name

    tasks = []
    for task in client.tasks():
        detail = client.task(task["task_id"])
        raw = [(p["endpoint"], p["body"]) for p in detail["raw"]]
        statuses = [b.get("status") for e, b in raw if e.endswith("/task")]
        tfs = [(tf["tf_id"], sorted(norm(n) for n in tf["input_datasets"]),
                norm(tf["output"]["name"])) for tf in detail["transformations"]]
        cnt = sorted((norm(m["asset_name"]), m["value"]) for m in detail["metrics"]
                     if m["metric_type"] == "cnt")
        tasks.append({"task_id": task["task_id"], "app_name": task["app_name"],
                      "task_name": task["task_name"], "statuses": statuses, "tfs": tfs,
                      "cnt": cnt})
    return tasks


def expected_tfs() -> list[tuple[int, list[str], str]]:
    return [(1, [], "<out>/numbers"), (2, ["<out>/numbers"], "<out>/counts")]


def assert_one_full_task(tasks: list[dict[str, Any]], app_name: str = "activation-app") -> dict:
    assert len(tasks) == 1, tasks
    task = tasks[0]
    assert task["statuses"][0] == "start" and task["statuses"][-1] == "end", task
    assert task["app_name"] == app_name and task["task_name"] == app_name, task
    assert task["tfs"] == expected_tfs(), task
    return task


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(APP)
    return path


# ------------------------------------------------------------------- pure: the gate
@pytest.mark.parametrize("conf_value, env_value, expected", [
    (None, None, False),
    ("true", None, True),
    (None, "true", True),
    (None, "1", True),
    ("false", "true", False),   # conf wins over the environment
    ("true", "false", True),
    (" TRUE ", None, True),
    ("no", None, False),
    ("off", None, True),        # not a settings boolean: settings warns and stays off
    ("", "true", False),        # present but empty: treated as false, like settings
    ("maybe", None, True),      # unrecognised: handed on so settings can warn by key
])
def test_gate_precedence(conf_value: str | None, env_value: str | None,
                         expected: bool) -> None:
    assert autoload.enabled_by_configuration(conf_value, env_value) is expected


# ------------------------------------------------------------------- interpreter start
def _start_probe(env: Mapping[str, str]) -> str:
    code = ("import sys; print(sorted(m for m in sys.modules if m.startswith(("
            "'pyspark', 'py4j', 'definity_spark', 'logging', 'requests', 'typing'))), "
            "'armed' if any(type(f).__name__ == '_SessionModuleFinder' for f in sys.meta_path) "
            "else 'not armed')")
    return subprocess.run([sys.executable, "-c", code], env=dict(env), capture_output=True,
                          text=True, check=True).stdout.strip()


def test_pth_arms_hook_without_importing_pyspark_or_plugin() -> None:
    out = _start_probe(clean_env())
    # only the tiny hook module: not the plugin package, pyspark, logging or typing
    assert out == "['definity_spark.autoload'] armed", out


def test_autoload_zero_disarms() -> None:
    out = _start_probe(clean_env(DEFINITY_AUTOLOAD="0"))
    assert out == "[] not armed", out


def test_import_of_package_binds_preloaded_autoload() -> None:
    code = ("import sys; pre = sys.modules['definity_spark.autoload']; "
            "import definity_spark.autoload; import definity_spark; "
            "print(definity_spark.autoload is pre)")
    out = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "True"


def test_hook_status_for_doctor() -> None:
    code = ("import json, sys; from definity_spark.autoload import hook_status; "
            "print(json.dumps(hook_status()))")
    import json

    armed = json.loads(subprocess.run([sys.executable, "-c", code], env=clean_env(),
                                      capture_output=True, text=True, check=True).stdout)
    assert armed["armed"] is True and armed["pth"].endswith("definity_spark.pth"), armed
    off = json.loads(subprocess.run([sys.executable, "-c", code],
                                    env=clean_env(DEFINITY_AUTOLOAD="0"),
                                    capture_output=True, text=True, check=True).stdout)
    assert off["armed"] is False and "DEFINITY_AUTOLOAD=0" in off["reason"], off


def test_wrapping_is_idempotent_and_uninstall_restores() -> None:
    # importing pyspark starts no JVM: this checks the class surgery alone
    code = textwrap.dedent("""
        import sys
        autoload = sys.modules["definity_spark.autoload"]
        from pyspark.sql import session as m
        S = m.SparkSession
        init, goc = S.__init__, S.Builder.getOrCreate
        orig_init = init.__definity_original__
        orig_goc = goc.__definity_original__
        assert not hasattr(orig_init, "__definity_original__")
        autoload.install(); autoload.install()            # no double wrapping
        assert S.__init__ is init and S.Builder.getOrCreate is goc
        autoload.uninstall()
        assert S.__init__ is orig_init and S.Builder.getOrCreate is orig_goc
        assert not autoload.is_armed()
        autoload.install()                                # pyspark already imported
        assert S.__init__.__definity_original__ is orig_init
        print("OK")
    """)
    result = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True,
                            text=True)
    assert result.stdout.strip() == "OK", result.stderr


def test_doctor_reports_the_start_hook() -> None:
    code = "import sys; from definity_spark.cli import main; sys.exit(main(['doctor']))"
    armed = subprocess.run([sys.executable, "-c", code], env=clean_env(), capture_output=True,
                           text=True)
    assert "start hook: armed" in armed.stdout and "definity_spark.pth" in armed.stdout, \
        armed.stdout + armed.stderr
    off = subprocess.run([sys.executable, "-c", code], env=clean_env(DEFINITY_AUTOLOAD="0"),
                         capture_output=True, text=True)
    assert "start hook: disarmed by DEFINITY_AUTOLOAD=0" in off.stdout, off.stdout


# ------------------------------------------------------------------- spark-submit
@pytest.mark.spark
def test_spark_submit_conf_only(app: Path, tmp_path: Path, collector: Any) -> None:
    from collector_util import CollectorClient

    out = str(tmp_path / "out")
    result = spark_submit(app, [out], conf={
        "spark.definity.enabled": "true",
        "spark.definity.server": collector.url,
        "spark.definity.token": "conf-token-123",
    })
    assert "PLUGIN_IMPORTED True" in result.stdout
    assert "conf-token-123" not in result.stdout + result.stderr
    assert_one_full_task(summarize(CollectorClient(collector.url), out))


@pytest.mark.spark
def test_spark_submit_env_only(app: Path, tmp_path: Path, collector: Any) -> None:
    from collector_util import CollectorClient

    out = str(tmp_path / "out")
    env = clean_env(DEFINITY_ENABLED="true", DEFINITY_SERVER_URL=collector.url,
                    DEFINITY_TOKEN="env-token-456", DEFINITY_PIPELINE_NAME="env-pipeline")
    result = spark_submit(app, [out], env=env)
    assert "env-token-456" not in result.stdout + result.stderr
    tasks = summarize(CollectorClient(collector.url), out)
    assert len(tasks) == 1 and tasks[0]["app_name"] == "env-pipeline", tasks
    assert tasks[0]["task_name"] == "activation-app"
    assert tasks[0]["tfs"] == expected_tfs()
    assert tasks[0]["statuses"] == ["start", "end"]


@pytest.mark.spark
def test_spark_defaults_conf(app: Path, tmp_path: Path, collector: Any) -> None:
    from collector_util import CollectorClient

    conf_dir = tmp_path / "spark-conf"
    conf_dir.mkdir()
    (conf_dir / "spark-defaults.conf").write_text(
        "spark.definity.enabled      true\n"
        f"spark.definity.server       {collector.url}\n"
        "spark.definity.token        defaults-token-789\n"
        "spark.definity.task.name    nightly-numbers\n")
    out = str(tmp_path / "out")
    result = spark_submit(app, [out], env=clean_env(SPARK_CONF_DIR=str(conf_dir)))
    assert "defaults-token-789" not in result.stdout + result.stderr
    tasks = summarize(CollectorClient(collector.url), out)
    assert len(tasks) == 1, tasks
    assert tasks[0]["task_name"] == "nightly-numbers" and tasks[0]["app_name"] == "activation-app"
    assert tasks[0]["tfs"] == expected_tfs()


@pytest.mark.spark
def test_not_enabled_reports_nothing_and_never_imports_plugin(
        app: Path, tmp_path: Path, collector: Any) -> None:
    from collector_util import CollectorClient

    out = str(tmp_path / "out")
    # server configured but not enabled, and an explicit false in conf beating env true
    env = clean_env(DEFINITY_ENABLED="true", DEFINITY_SERVER_URL=collector.url)
    result = spark_submit(app, [out], env=env, conf={"spark.definity.enabled": "false"})
    assert "PLUGIN_IMPORTED False" in result.stdout
    assert CollectorClient(collector.url).payloads() == []


# Every way a Python SparkSession comes to exist, in one application (one JVM start).
SESSIONS_APP = textwrap.dedent("""
    import logging, sys
    from pyspark import SparkConf, SparkContext
    from pyspark.sql import SparkSession

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = sys.argv[1]
    conf = (SparkConf().setMaster("local[1]").setAppName("sessions-app")
            .set("spark.ui.enabled", "false").set("spark.definity.enabled", "true"))
    sc = SparkContext(conf=conf)
    spark = SparkSession(sc)                                   # SparkSession(sc)
    spark.range(3).write.mode("overwrite").parquet(out + "/direct")
    other = spark.newSession()                                 # spark.newSession()
    other.range(4).write.mode("overwrite").parquet(out + "/newsession")
    jvm_only = spark._jsparkSession.newSession()               # a JVM session, then
    wrapped = SparkSession(sc, jvm_only)                       # wrapped like a shell does
    wrapped.range(5).write.mode("overwrite").parquet(out + "/wrapped")
    again = SparkSession.builder.getOrCreate()                 # returns an existing one
    again.range(6).write.mode("overwrite").parquet(out + "/again")

    # A broken plugin must never break session creation.
    import definity_spark
    def broken(session):
        raise RuntimeError("plugin exploded")
    definity_spark.autoattach = broken
    survivor = spark.newSession()
    survivor.range(7).write.mode("overwrite").parquet(out + "/survivor")
    print("SURVIVOR_ROWS", survivor.read.parquet(out + "/survivor").count(), flush=True)
    sc.stop()
""")


@pytest.mark.spark
def test_every_kind_of_session_is_attached(tmp_path: Path, collector: Any) -> None:
    from collector_util import CollectorClient

    app = tmp_path / "sessions_app.py"
    app.write_text(SESSIONS_APP)
    out = str(tmp_path / "out")
    env = clean_env(DEFINITY_SERVER_URL=collector.url)
    result = subprocess.run([sys.executable, str(app), out], env=env, capture_output=True,
                            text=True, timeout=240, cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    assert "SURVIVOR_ROWS 7" in result.stdout
    assert "plugin exploded" in result.stderr  # contained and logged, not raised
    tasks = summarize(CollectorClient(collector.url), out)
    assert len(tasks) == 1, tasks      # one application, one task, all its sessions
    outputs = [tf[2] for tf in tasks[0]["tfs"]]
    # the session made while the plugin was broken was not attached; all others were
    assert outputs == ["<out>/direct", "<out>/newsession", "<out>/wrapped", "<out>/again"], \
        tasks[0]
    assert tasks[0]["statuses"] == ["start", "end"]


# ------------------------------------------------------------------- --py-files, no pip
PY_FILES_APP = "import definity_spark.autoload  # the one line: arms the hook\n" + APP


@pytest.mark.spark
def test_py_files_zip_without_pip(tmp_path: Path, collector: Any) -> None:
    """Deployment without pip: the package as a zip in --py-files, one import line."""
    import zipfile

    import pyspark
    from collector_util import CollectorClient

    repo = Path(__file__).resolve().parents[1]
    archive = tmp_path / "definity_spark.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in (repo / "definity_spark").rglob("*.py"):
            zf.write(path, path.relative_to(repo).as_posix())
    # A Python without definity-spark installed (no .pth): a bare venv that sees only the
    # cluster's packages (pyspark, py4j, requests ...) through PYTHONPATH.
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv",
                    "--without-pip", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    cluster_site = tmp_path / "cluster-site"
    cluster_site.mkdir()
    site = Path(pyspark.__file__).resolve().parents[1]
    for name in ("pyspark", "py4j", "requests", "urllib3", "idna", "charset_normalizer",
                 "certifi"):
        if (site / name).exists():
            (cluster_site / name).symlink_to(site / name)
    app = tmp_path / "app.py"
    app.write_text(PY_FILES_APP)
    out = str(tmp_path / "out")
    env = clean_env(PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python,
                    PYTHONPATH=str(cluster_site))
    probe = subprocess.run([python, "-c", "import definity_spark"], env=env,
                           capture_output=True, text=True, cwd=str(tmp_path))
    assert probe.returncode != 0  # really not installed there
    cmd_conf = {"spark.definity.enabled": "true", "spark.definity.server": collector.url,
                "spark.submit.pyFiles": str(archive)}
    spark_submit(app, [out], conf=cmd_conf, env=env)
    assert_one_full_task(summarize(CollectorClient(collector.url), out))


# ------------------------------------------------------------------- the pyspark shell
@pytest.mark.spark
def test_pyspark_shell_by_environment(tmp_path: Path, collector: Any) -> None:
    """The `pyspark` shell (its startup script builds the session) under a real pty."""
    import shutil

    from collector_util import CollectorClient

    script = shutil.which("script")  # util-linux: the shell only starts on a terminal
    if script is None:
        pytest.skip("util-linux `script` not available")
    out = str(tmp_path / "out")
    commands = tmp_path / "commands.txt"
    commands.write_text(f'spark.range(3).write.mode("overwrite").parquet({out + "/shell"!r})\n'
                        "exit()\n")
    env = clean_env(DEFINITY_ENABLED="true", DEFINITY_SERVER_URL=collector.url,
                    PATH=str(Path(spark_bin("pyspark")).parent) + os.pathsep
                    + os.environ.get("PATH", ""))
    with open(commands) as stdin:
        result = subprocess.run([script, "-q", "-c",
                                 f"{spark_bin('pyspark')} --conf spark.ui.enabled=false",
                                 os.devnull], stdin=stdin, env=env, capture_output=True,
                                text=True, timeout=240, cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:]
    tasks = summarize(CollectorClient(collector.url), out)
    assert len(tasks) == 1, (tasks, result.stdout[-3000:])
    assert tasks[0]["app_name"] == "PySparkShell" and tasks[0]["statuses"] == ["start", "end"]
    assert tasks[0]["tfs"] == [(1, [], "<out>/shell")]
