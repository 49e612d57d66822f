"""A real Spark standalone cluster on loopback (issue 4, "a real cluster").

Starts a master and one worker with the launchers shipped in the pyspark wheel
(``spark-class org.apache.spark.deploy.master.Master`` / ``...worker.Worker``), runs the
same definity-free application through ``spark-submit --master spark://127.0.0.1:<port>``
activated by configuration only, and compares what the collector received with a
local-mode run of that application: same task and pipeline names, same transformations,
same row counts. Executors are separate JVMs started by the worker, so this proves the
plugin needs nothing on executors. The cluster is stopped by its PIDs, also on failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_util import CollectorClient, running_collector
from test_autoload import APP, assert_one_full_task, clean_env, spark_bin, spark_submit, summarize

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM the daemon (its own process group, by id), then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _master_state(ui_port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as resp:
        return json.loads(resp.read().decode("utf-8"))


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("standalone")
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
    env = clean_env(SPARK_LOG_DIR=str(base / "logs"), SPARK_WORKER_DIR=str(base / "work"),
                    SPARK_LOCAL_IP="127.0.0.1", SPARK_NO_DAEMONIZE="1")
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        master_log = open(base / "master.log", "w")
        logs.append(master_log)
        procs.append(subprocess.Popen(
            [spark_bin("spark-class"), "org.apache.spark.deploy.master.Master",
             "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui_port)],
            env=env, stdout=master_log, stderr=subprocess.STDOUT, start_new_session=True))
        worker_log = open(base / "worker.log", "w")
        logs.append(worker_log)
        procs.append(subprocess.Popen(
            [spark_bin("spark-class"), "org.apache.spark.deploy.worker.Worker",
             f"spark://127.0.0.1:{port}", "--host", "127.0.0.1", "--webui-port",
             str(worker_ui), "--cores", "2", "--memory", "1g",
             "--work-dir", str(base / "work")],
            env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 120
        while True:
            try:
                state = _master_state(ui_port)
                if any(w.get("state") == "ALIVE" for w in state.get("workers", [])):
                    break
            except OSError:
                pass
            for proc in procs:
                assert proc.poll() is None, (base / "master.log").read_text()[-3000:] + \
                    (base / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "standalone worker did not register in time"
            time.sleep(0.5)
        yield f"spark://127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):  # worker first (it stops its executors), then master
            _stop(proc)
        for handle in logs:
            handle.close()


def test_cluster_payloads_equal_local_mode(standalone_cluster: str, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    results = {}
    for mode, master in (("local", "local[2]"), ("cluster", standalone_cluster)):
        out = str(tmp_path / f"out-{mode}")
        with running_collector(str(tmp_path / f"{mode}.db")) as collector:
            conf = {"spark.definity.enabled": "true",
                    "spark.definity.server": collector.url,
                    "spark.definity.token": "cluster-token"}
            if mode == "cluster":
                conf.update({"spark.executor.memory": "512m", "spark.cores.max": "2"})
            result = spark_submit(app, [out], conf=conf, master=master)
            assert "PLUGIN_IMPORTED True" in result.stdout
            tasks = summarize(CollectorClient(collector.url), out)
        task = assert_one_full_task(tasks)
        results[mode] = {k: task[k] for k in ("app_name", "task_name", "statuses", "tfs", "cnt")}
    assert results["cluster"] == results["local"]
    # the row counts are real: 100 rows written, then 7 groups
    assert results["cluster"]["cnt"] == [("<out>/counts", 7), ("<out>/numbers", 100)], results
