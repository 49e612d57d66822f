"""Issue 5's fault-injection suite: whatever the server does, the job runs as without the
plugin, and every report arrives exactly once after recovery.

Each case runs the real PySpark application tests/fault_apps/app.py as its own process
(``python app.py``, local[1], explicit ``definity_spark.activate(spark)`` configured by
``DEFINITY_*``: 1 s request timeout, 3 attempts, 0.2 s backoff base, 3 s flush bound, a
spool dir in tmp) against tests/faulty_server.py, a real HTTP server on loopback that is
told to misbehave for the whole run of the application. Then the fault is lifted and
``definity-spark replay --spool DIR --server URL`` is run (twice: the second must send
nothing). Checked per fault:

* exit code and stdout equal to the run without the plugin;
* the plugin's extra wall time, in two measures. (1) The time the application's own thread
  spends where the plugin can hold it, ``activate()`` plus the shutdown phase
  (``spark.stop()`` to the end of atexit): at most the baseline's + the flush bound +
  ``SHUTDOWN_SLACK`` (1.5 s). Everything else the plugin does runs on other threads.
  (2) The whole process: at most the baseline's + the flush bound + max(6 s, 25% of the
  baseline), asserted only when the machine is not overloaded (1-minute load average
  <= CPU count during both runs): on an overloaded 2-core machine two identical runs
  differ by 10-25 s, which says nothing about the plugin; the table reports it anyway;
* after recovery the server holds exactly the payloads of the fault-free run with the
  plugin, in the same order (normalised: task id, base dir, timing metric values);
* no "internal error" of the plugin in the application's stderr.

Plus: an application whose own code raises (same exit code, stdout and traceback), and a
JDBC/SQLite application with a password (option, URL parameter, SQL OPTIONS) whose
payloads, log lines (DEBUG) and spool files are searched for the password and the token.

Measured numbers go to ``$FAULT_SUITE_REPORT`` (a markdown table) when that is set;
docs/reliability.md "Fault-injection suite" has the table of a recorded run.
Run: ``FAULT_SUITE_REPORT=/tmp/faults.md python -m pytest tests/test_fault_suite.py -v``
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

pytest.importorskip("pyspark")
pytestmark = [pytest.mark.spark, pytest.mark.slow]

from fault_apps import harness  # noqa: E402
from fault_apps.harness import (  # noqa: E402
    FLUSH_TIMEOUT,
    INTERNAL_ERROR,
    PASSWORD,
    TOKEN,
    URL_PASSWORD,
    AppRun,
    normalise,
    plugin_env,
    replay_cli,
    run_app,
    server_records,
)
from faulty_server import FaultyServer  # noqa: E402

SHUTDOWN_SLACK = 1.5  # seconds over the flush bound for activate() + the shutdown phase
# Seconds over the flush bound for the whole process (quiet machine only): identical runs
# differ by seconds (JVM start, JIT, GC), so the larger of 6 s and a quarter of the
# baseline's wall time. The app-thread measure above is the tight check.
TOTAL_SLACK = 6.0
TOTAL_SLACK_FRACTION = 0.25

RESULTS: list[dict[str, Any]] = []


@dataclass
class Fault:
    name: str
    describe: str
    apply: Callable[[FaultyServer], None]
    lift: Callable[[FaultyServer], None]
    # True: nothing can be delivered during the run, so the payloads must be in the spool
    # before replay; False: retries recover during the run and the spool stays empty.
    spooled: bool
    # True: every payload reached the server during the run (before replay), once, in order
    live: bool = False


FAULTS = [
    Fault("down", "server down (connection refused)",
          lambda s: s.down(), lambda s: s.up(), True),
    Fault("500-first-2", "HTTP 500 for the first 2 requests (recovered by retry)",
          lambda s: s.fail_first(2, 500), lambda s: s.clear(), False, live=True),
    # issue 20, item 15: N = attempts, so the task start is spooled, and with it every later
    # report, until the background probe finds the server back and drains the spool
    Fault(f"500-first-{harness.SERVER_ATTEMPTS}",
          f"HTTP 500 for the first {harness.SERVER_ATTEMPTS} requests (= attempts; recovered "
          "live from the spool)",
          lambda s: s.fail_first(harness.SERVER_ATTEMPTS, 500), lambda s: s.clear(), False,
          live=True),
    Fault("500-always", "HTTP 500 for every request during the run",
          lambda s: s.fail_first(10 ** 6, 500), lambda s: s.clear(), True),
    Fault("429-retry-after-30", "HTTP 429 with Retry-After: 30 for every request",
          lambda s: s.rate_limit(10 ** 6, "30"), lambda s: s.clear(), True),
    Fault("401", "HTTP 401 (token rejected) for every request",
          lambda s: s.reject(401), lambda s: s.clear(), True),
    Fault("slow", "answers after 2.5 s, request timeout 1 s",
          lambda s: s.slow(2.5, None), lambda s: s.clear(), True),
    Fault("reset", "every connection reset (RST) after the request is read",
          lambda s: s.reset(10 ** 6), lambda s: s.clear(), True),
]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def workroot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def baseline(workroot: Path) -> AppRun:
    """The application without the plugin."""
    run = run_app(workroot / "baseline", "writes")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "t_c rows 13" in run.stdout and run.stdout.rstrip().endswith("done")
    _record("no plugin (baseline)", run, None, None, "-")
    return run


@pytest.fixture(scope="module")
def reference(workroot: Path, baseline: AppRun) -> dict[str, Any]:
    """The application with the plugin and a healthy server: the payloads to expect."""
    server = FaultyServer(token=TOKEN)
    try:
        spool = str(workroot / "reference" / "spool")
        run = run_app(workroot / "reference", "writes", plugin_env(server.url, spool))
        records = server_records(server)
    finally:
        server.close()
    payloads = normalise(records, run.base)
    _record("none (plugin, healthy server)", run, baseline, len(payloads),
            f"{len(payloads)} live")
    return {"run": run, "payloads": payloads}


@pytest.fixture(scope="module", autouse=True)
def _report() -> Any:
    yield
    path = os.environ.get("FAULT_SUITE_REPORT")
    if not path or not RESULTS:
        return
    lines = [
        "| fault | exit code (without plugin) | stdout same | app thread held s (extra) | "
        "process wall s (extra) | load avg | delivered after recovery |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in RESULTS:
        lines.append("| {fault} | {rc} ({rc0}) | {same} | {held:.2f} ({hextra}) | "
                     "{wall:.1f} ({extra}) | {load:.1f} | {delivered} |".format(**r))
    Path(path).write_text("\n".join(lines) + "\n")


def _record(fault: str, run: AppRun, baseline: AppRun | None, n: int | None,
            delivered: str) -> None:
    RESULTS.append({
        "fault": fault, "rc": run.returncode,
        "rc0": baseline.returncode if baseline else run.returncode,
        "same": "yes" if baseline is None or baseline.stdout == run.stdout else "NO",
        "wall": run.wall, "held": run.held if "exit" in run.marks else float("nan"),
        "extra": f"{run.wall - baseline.wall:+.1f}" if baseline else "-",
        "hextra": f"{run.held - baseline.held:+.2f}" if baseline else "-",
        "load": run.load,
        "delivered": delivered,
    })


# ----------------------------------------------------------------------------- checks
def _assert_same_job(run: AppRun, baseline: AppRun) -> None:
    assert run.returncode == baseline.returncode, run.stderr[-3000:]
    assert run.stdout == baseline.stdout
    assert INTERNAL_ERROR not in run.stderr, run.stderr[-3000:]
    assert INTERNAL_ERROR not in run.log_text, run.log_text[-3000:]


def _assert_time_bound(run: AppRun, baseline: AppRun) -> None:
    held_extra = run.held - baseline.held
    assert held_extra <= FLUSH_TIMEOUT + SHUTDOWN_SLACK, (
        f"activate + shutdown held the app {run.held:.2f}s vs {baseline.held:.2f}s without "
        f"the plugin; flush bound {FLUSH_TIMEOUT}s")
    cores = os.cpu_count() or 1
    if max(run.load, baseline.load) > cores:
        return  # overloaded machine: whole-process wall time is noise (reported only)
    total_extra = run.wall - baseline.wall
    slack = max(TOTAL_SLACK, TOTAL_SLACK_FRACTION * baseline.wall)
    assert total_extra <= FLUSH_TIMEOUT + slack, (
        f"the run took {run.wall:.1f}s vs {baseline.wall:.1f}s without the plugin "
        f"(bound: flush {FLUSH_TIMEOUT}s + slack {slack:.1f}s)")


def test_reference_run_reports_every_write(reference: dict[str, Any], baseline: AppRun) -> None:
    run: AppRun = reference["run"]
    _assert_same_job(run, baseline)
    _assert_time_bound(run, baseline)
    payloads = reference["payloads"]
    assert payloads, "the healthy server received nothing"
    assert payloads[0][0] == "/log/task" and payloads[0][1]["status"] == "start"
    assert payloads[-1] == ("/log/task", {"task_id": "<task>", "status": "end"})
    tfs = [b for p, b in payloads if p == "/log/tf"]
    outputs = {tf["output"]["name"] for tf in tfs}
    # parquet a, csv b, CTAS t_c, INSERT INTO t_c: four logical writes
    assert len(tfs) >= 4, tfs
    assert any(name.endswith("/out/a") for name in outputs), outputs
    assert any(name.endswith("/out/b") for name in outputs), outputs
    assert any(name.endswith("t_c") for name in outputs), outputs
    assert [tf["tf_id"] for tf in tfs] == list(range(1, len(tfs) + 1))
    assert not run.spool_files(), "a healthy server must not leave anything in the spool"


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_fault(fault: Fault, workroot: Path, baseline: AppRun,
               reference: dict[str, Any]) -> None:
    server = FaultyServer(token=TOKEN)
    workdir = workroot / fault.name
    spool = str(workdir / "spool")
    try:
        fault.apply(server)
        run = run_app(workdir, "writes", plugin_env(server.url, spool))
        seen_during_run = server.requests_seen
        delivered_live = normalise(server_records(server), run.base)
        spooled_files = run.spool_files()
        fault.lift(server)
        first = replay_cli(spool, server.url)
        seen_after_replay = server.requests_seen
        second = replay_cli(spool, server.url)
        seen_after_second = server.requests_seen
        delivered = normalise(server_records(server), run.base)
    finally:
        server.close()
    expected = reference["payloads"]
    n_ok = sum(1 for p in delivered if p in expected)
    _record(fault.describe, run, baseline, len(delivered),
            f"{len(delivered)}/{len(expected)}"
            + (" exactly once, same order" if delivered == expected else " MISMATCH"))

    _assert_same_job(run, baseline)
    _assert_time_bound(run, baseline)
    if fault.spooled:
        assert spooled_files, "nothing was spooled although the server accepted nothing"
    else:
        assert not spooled_files, "retries should have delivered everything during the run"
    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    assert seen_after_second == seen_after_replay, "the second replay sent something again"
    assert not run.spool_files(), "replay left files in the spool"
    assert TOKEN not in first.stdout + first.stderr
    # every payload exactly once, same content and order as the fault-free run
    assert delivered == expected, (
        f"{len(delivered)} delivered, {len(expected)} expected, {n_ok} of them as "
        f"expected:\n{harness.diff(delivered, expected)}")
    if fault.live:
        # before the application ended, without a replay: every report, once, in order
        assert delivered_live == expected, harness.diff(delivered_live, expected)
    if fault.name == "401":
        # no retry storm: the first rejection switches the delivery to the spool
        assert seen_during_run <= 2, f"{seen_during_run} requests against a 401"
        rejections = [line for line in run.log_text.splitlines()
                      if re.search(r"(?i)rejected the token", line)]
        assert len(rejections) == 1, run.log_text[-3000:]


# ----------------------------------------------------------------------------- raising app
def test_app_that_raises_keeps_its_exit_code_and_traceback(workroot: Path) -> None:
    base_run = run_app(workroot / "raise-baseline", "raise")
    server = FaultyServer(token=TOKEN)
    try:
        run = run_app(workroot / "raise-plugin", "raise",
                      plugin_env(server.url, str(workroot / "raise-plugin" / "spool")))
        payloads = normalise(server_records(server), run.base)
    finally:
        server.close()
    _record("none; the app's own code raises ValueError", run, base_run, len(payloads),
            f"{len(payloads)} live")
    assert base_run.returncode == 1
    assert "ValueError: the application's own check failed" in base_run.traceback
    _assert_same_job(run, base_run)
    assert run.traceback == base_run.traceback
    _assert_time_bound(run, base_run)
    # the task still ends (interpreter exit), after the two writes
    assert payloads[0][1].get("status") == "start"
    assert payloads[-1] == ("/log/task", {"task_id": "<task>", "status": "end"})
    assert len([b for p, b in payloads if p == "/log/tf"]) == 2


# ----------------------------------------------------------------------------- redaction
def test_jdbc_password_and_token_never_leave_the_process(workroot: Path) -> None:
    """A JDBC (SQLite) write, read and CTAS with a password option, a ``password=`` URL
    parameter and ``OPTIONS (password '...')`` in SQL, DEBUG logging, and a server that
    accepts only the first 3 requests (so the rest goes to the spool): the secrets appear
    in no payload, no log line, no spool file; the token only in Authorization headers."""
    if not Path("/usr/share/java/sqlite-jdbc.jar").exists():
        pytest.skip("Debian's libxerial-sqlite-jdbc-java is not installed")
    workdir = workroot / "jdbc"
    spool = str(workdir / "spool")
    log_file = str(workdir / "definity.log")
    server = FaultyServer(token=TOKEN)
    try:
        server.accept_only(3)
        run = run_app(workdir, "jdbc", plugin_env(
            server.url, spool, DEFINITY_LOG_LEVEL="DEBUG", FAULT_APP_LOG_FILE=log_file))
        spool_texts = {str(p): p.read_text() for p in run.spool_files()}
        server.clear()
        replay = replay_cli(spool, server.url)
        with server.lock:
            records = list(server.records)
    finally:
        server.close()
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == ["jdbc rows 3", "copy rows 3", "done"]
    assert replay.returncode == 0, replay.stdout + replay.stderr
    log_text = Path(log_file).read_text() if Path(log_file).exists() else ""

    # not vacuous: there were payloads about the JDBC table, DEBUG logs and spool files
    bodies = [r.body.decode("utf-8") for r in records]
    tf_bodies = [r.body.decode("utf-8") for r in records if r.path == "/log/tf"]
    assert any("people" in b for b in tf_bodies), tf_bodies  # the JDBC table was reported
    assert " DEBUG definity_spark" in log_text, "the plugin logged nothing at DEBUG"
    assert spool_texts, "nothing was spooled (the server refused after 3 requests)"

    for secret in (PASSWORD, URL_PASSWORD, TOKEN):
        for body in bodies:
            assert secret not in body, (secret, body)
        for path, text in spool_texts.items():
            assert secret not in text, (secret, path)
        assert secret not in log_text, secret
        assert secret not in run.stderr, secret
        assert secret not in run.stdout, secret
        assert secret not in replay.stdout + replay.stderr, secret
        for r in records:
            for name, value in r.headers.items():
                if name != "authorization":
                    assert secret not in value, (name, value)
    assert {r.headers.get("authorization") for r in records} == {f"Bearer {TOKEN}"}
    # every file the plugin may have left in the work dir (spool cursors, events files)
    for path in Path(workdir).rglob("*"):
        if path.is_file() and path.suffix in (".jsonl", ".cursor", ".log", ".json"):
            text = path.read_text(errors="replace")
            for secret in (PASSWORD, URL_PASSWORD, TOKEN):
                assert secret not in text, (secret, str(path))
