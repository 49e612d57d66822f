"""Issue 5: the plugin prints nothing to stdout, even at DEBUG, even when things go wrong.

A real PySpark application (tests/fault_apps/app.py, mode ``writes``) with the plugin
active at ``DEFINITY_LOG_LEVEL=DEBUG``, against a loopback server that answers 500 to the
first requests (retries) and refuses after a few (spooling): every path that logs is
taken. Its stdout must be exactly what the application prints itself (the same app
without the plugin prints ``t_c rows 13`` and ``done``: tests/test_fault_suite.py compares
that baseline run too), while the plugin's DEBUG records did go somewhere else.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pyspark")
pytestmark = [pytest.mark.spark, pytest.mark.slow]

from fault_apps.harness import TOKEN, plugin_env, run_app  # noqa: E402
from faulty_server import FaultyServer  # noqa: E402

APP_STDOUT = "t_c rows 13\ndone\n"  # what app.py prints in mode "writes", by itself


def test_plugin_at_debug_prints_nothing_to_stdout(tmp_path: Path) -> None:
    server = FaultyServer(token=TOKEN)
    log_file = tmp_path / "definity.log"
    try:
        server.fail_first(2, 500)  # retried
        server.accept_only(4)  # then 503: the rest goes to the spool
        run = run_app(tmp_path / "app", "writes", plugin_env(
            server.url, str(tmp_path / "spool"), DEFINITY_LOG_LEVEL="DEBUG",
            FAULT_APP_LOG_FILE=str(log_file)))
    finally:
        server.close()
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout == APP_STDOUT
    # not vacuous: the plugin was active and logged at DEBUG (to the app's log handler)
    log_text = log_file.read_text()
    assert " DEBUG definity_spark" in log_text
    assert server.requests_seen >= 3


def test_plugin_without_any_log_handler_prints_nothing_to_stdout(tmp_path: Path) -> None:
    """No handler configured by the app (FAULT_APP_LOG_FILE empty), a 401 that the plugin
    logs at ERROR: still nothing on stdout."""
    server = FaultyServer(token=TOKEN)
    try:
        server.reject(401)
        run = run_app(tmp_path / "app", "writes", plugin_env(
            server.url, str(tmp_path / "spool"), DEFINITY_LOG_LEVEL="DEBUG",
            FAULT_APP_LOG_FILE=""))
    finally:
        server.close()
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout == APP_STDOUT
    assert server.requests_seen >= 1  # the plugin was active and met the 401
