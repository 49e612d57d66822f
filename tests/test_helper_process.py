"""The helper process, as the task's delivery (definity_spark.helper.client).

Real processes, a real socket pair, a real collector on loopback (HTTP + SQLite) or
tests/faulty_server.py; nothing mocked. The delivery policies themselves (retries, spool,
close bounds) are the helper's own ``Delivery``'s, tested in test_delivery.py and
test_spool.py; the reading of sessions there, in test_extraction_process.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

from definity_spark import wire
from definity_spark.delivery.spool_format import read_records, spool_files
from definity_spark.helper import client as process_mod
from definity_spark.helper.client import HelperProcess
from definity_spark.settings import resolve

try:
    from collector_util import collector_fixture  # noqa: F401 - the `collector` fixture
    from faulty_server import FaultyServer
except ImportError:  # tests/ imported as a package
    from tests.collector_util import collector_fixture  # noqa: F401
    from tests.faulty_server import FaultyServer

pytestmark = pytest.mark.skipif(not process_mod.available(),
                                reason="the helper process needs Linux's socket flags")

TOKEN = "tok-SECRET-helper-7d1e"


def make_settings(tmp_path: Any, url: str, **overrides: Any) -> Any:
    base: dict[str, Any] = {
        "server_url": url, "token": TOKEN, "spool_dir": str(tmp_path / "spool"),
        "server_timeout": 2.0, "server_attempts": 2, "server_attempt_sleep": 0.01,
        "flush_timeout": 3.0,
    }
    base.update(overrides)
    return resolve(overrides=base, spark_conf={}, environ={})


def tfs(n: int, task_id: str = "app-helper", start: int = 1, query: str = "q") -> list[Any]:
    return [wire.Transformation(task_id=task_id, tf_id=i, output_name=f"db.t{i}",
                                inputs={"db.src": ["id"]}, query_str=query)
            for i in range(start, start + n)]


def received_tf_ids(collector: Any, task_id: str = "app-helper") -> list[int]:
    return [int(p["body"]["tf_id"]) for p in collector.store.payloads(task_id=task_id)
            if p["endpoint"] == wire.TF]


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) is not alive
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_reports_are_sent_from_another_process_in_order(collector: Any, tmp_path: Any) -> None:
    settings = make_settings(tmp_path, collector.url)
    delivery = HelperProcess(settings)
    assert isinstance(delivery, HelperProcess)
    payloads = tfs(300)
    for p in payloads:
        assert delivery.submit(p) is True
    assert delivery.flush(10.0) is True
    pid = delivery.helper_pid
    assert pid is not None and pid != os.getpid() and pid_alive(pid)
    # the helper is the one holding the connection to the server, not the driver
    assert received_tf_ids(collector) == list(range(1, 301))
    stats = delivery.stats()
    assert stats["submitted"] == 300 and stats["sent"] == 300 and stats["lost"] == 0
    assert delivery.close(3.0) is True
    assert wait_until(lambda: not pid_alive(pid), 5.0)
    assert delivery.describe() == collector.url
    # nothing of it is left in the driver: its reader and writer threads end too
    assert wait_until(lambda: not [t for t in threading.enumerate()
                                   if t.name.startswith("definity-spark.delivery-")], 5.0)


def test_the_token_is_not_in_the_helpers_command_line_or_environment(
        collector: Any, tmp_path: Any) -> None:
    delivery = HelperProcess(make_settings(tmp_path, collector.url))
    try:
        pid = delivery.helper_pid
        assert pid is not None
        for name in ("cmdline", "environ"):
            with open(f"/proc/{pid}/{name}", "rb") as fh:
                assert TOKEN.encode() not in fh.read(), name
    finally:
        delivery.close(3.0)


def test_a_killed_helper_hands_over_to_the_driver(collector: Any, tmp_path: Any,
                                                  caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="definity_spark")
    delivery = HelperProcess(make_settings(tmp_path, collector.url))
    for p in tfs(5):
        delivery.submit(p)
    assert delivery.flush(5.0) is True
    pid = delivery.helper_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: delivery.helper_pid is None, 5.0)
    for p in tfs(5, start=6):
        assert delivery.submit(p) is True
    assert delivery.close(5.0) is True
    assert received_tf_ids(collector) == list(range(1, 11))
    assert "delivery helper process is not available" in caplog.text
    assert "exited with code -9" in caplog.text
    assert delivery.stats()["sent"] == 10


def test_a_helper_that_cannot_start_leaves_delivery_in_the_driver(
        collector: Any, tmp_path: Any, monkeypatch: Any, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="definity_spark")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    delivery = HelperProcess(make_settings(tmp_path, collector.url))
    for p in tfs(3):
        assert delivery.submit(p) is True
    assert delivery.close(5.0) is True
    assert received_tf_ids(collector) == [1, 2, 3]
    assert "could not start it (FileNotFoundError" in caplog.text


def test_a_helper_that_never_answers_is_replaced_after_the_start_timeout(
        collector: Any, tmp_path: Any, monkeypatch: Any) -> None:
    # a child that starts but never reads: payloads wait in the driver, then go to the
    # driver's own delivery, in order; the child is killed
    monkeypatch.setattr(process_mod, "_command", lambda: ["sleep", "60"])
    delivery = HelperProcess(make_settings(tmp_path, collector.url), start_timeout=0.5)
    child = delivery._proc
    assert child is not None
    for p in tfs(4):
        assert delivery.submit(p) is True
    assert wait_until(lambda: len(received_tf_ids(collector)) == 4, 10.0)
    assert received_tf_ids(collector) == [1, 2, 3, 4]
    assert wait_until(lambda: child.poll() is not None, 5.0)
    assert delivery.close(3.0) is True


def test_a_stopped_helper_makes_payloads_wait_in_the_driver_without_blocking(
        collector: Any, tmp_path: Any) -> None:
    delivery = HelperProcess(make_settings(tmp_path, collector.url))
    assert delivery.submit(tfs(1, task_id="app-first")[0]) is True
    assert delivery.flush(5.0) is True  # started and ready
    pid = delivery.helper_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        # ~4 MB: far more than the socket holds
        for p in tfs(2000, query="x" * 2000):
            assert delivery.submit(p) is True
        assert time.monotonic() - started < 5.0  # submit never waited for the helper
        assert len(delivery._pending) > 0  # the socket was full: frames wait here
    finally:
        os.kill(pid, signal.SIGCONT)
    assert delivery.flush(30.0) is True
    assert received_tf_ids(collector) == list(range(1, 2001))
    assert delivery.close(3.0) is True


def test_the_helper_finishes_the_work_of_a_driver_that_exits_without_closing(
        collector: Any, tmp_path: Any) -> None:
    # A driver process submits and leaves at once (os._exit: no atexit, no close): its
    # helper sees the end of the socket, sends everything, and exits.
    settings = make_settings(tmp_path, collector.url)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path[:0] = {[os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]!r}
        from definity_spark import wire
        from definity_spark.helper.client import HelperProcess
        from definity_spark.settings import resolve
        settings = resolve(overrides={{"server_url": {collector.url!r},
                                       "spool_dir": {settings.spool_dir!r}}},
                           spark_conf={{}}, environ={{}})
        delivery = HelperProcess(settings)
        delivery.submit(wire.TaskStart(task_id="app-first", app_name="a", task_name="t"))
        assert delivery.flush(10.0)  # the helper is ready: what follows goes into the socket
        for i in range(1, 51):
            delivery.submit(wire.Transformation(task_id="app-helper", tf_id=i,
                                                output_name="db.t", inputs={{}}, query_str="q"))
        # a forked process that outlives the driver (a pool worker) holds no copy of the
        # helper's socket: the helper still sees the driver's end
        worker = os.fork()
        if worker == 0:
            import time
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # the test waits for the driver's output to end
                os.dup2(devnull, fd)
            time.sleep(60)
            os._exit(0)
        print(delivery.helper_pid, worker, flush=True)
        os._exit(0)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    helper_pid, worker_pid = (int(x) for x in out.stdout.split())
    try:
        assert wait_until(lambda: len(received_tf_ids(collector)) == 50, 20.0)
        assert received_tf_ids(collector) == list(range(1, 51))
        assert pid_alive(worker_pid)
        assert wait_until(lambda: not pid_alive(helper_pid), 10.0)
    finally:
        os.kill(worker_pid, signal.SIGKILL)


def test_the_helpers_log_lines_reach_the_drivers_logging(tmp_path: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="definity_spark")
    server = FaultyServer(token=TOKEN)
    try:
        server.reject(422)  # a refusal is logged once by the helper's delivery
        delivery = HelperProcess(make_settings(tmp_path, server.url))
        for p in tfs(2):
            delivery.submit(p)
        assert delivery.close(5.0) is True
    finally:
        server.close()
    from_helper = [r for r in caplog.records if r.threadName.startswith("helper:")]
    assert from_helper, caplog.text
    assert all(r.process != os.getpid() for r in from_helper)
    assert any("422" in r.getMessage() for r in from_helper)
    assert all(r.pathname.endswith(".py") and r.lineno > 0 for r in from_helper)
    assert TOKEN not in caplog.text
    assert delivery.stats()["rejected"] == 2


def test_a_forked_process_reports_through_its_own_delivery(collector: Any,
                                                           tmp_path: Any) -> None:
    delivery = HelperProcess(make_settings(tmp_path, collector.url))
    assert delivery.submit(tfs(1, task_id="app-first")[0]) is True
    assert delivery.flush(5.0) is True
    pid = os.fork()
    if pid == 0:  # the child: must not write into the parent's socket
        code = 1
        try:
            delivery.submit(tfs(1, task_id="app-forked")[0])
            code = 0 if delivery.close(5.0) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for p in tfs(3):
        delivery.submit(p)
    assert delivery.close(5.0) is True
    assert received_tf_ids(collector, "app-forked") == [1]
    assert received_tf_ids(collector) == [1, 2, 3]


def test_an_unserialisable_payload_is_counted_and_the_rest_goes_on(
        collector: Any, tmp_path: Any) -> None:
    delivery = HelperProcess(make_settings(tmp_path, collector.url))
    bad = wire.RawPayload(endpoint=wire.TF, body={"task_id": "app-helper", "x": object()})
    assert delivery.submit(bad) is False
    assert delivery.submit(tfs(1)[0]) is True
    assert delivery.close(3.0) is True
    stats = delivery.stats()
    assert stats["invalid"] == 1 and stats["lost"] == 1 and stats["sent"] == 1
    assert json.loads(json.dumps(stats))  # plain ints


def test_payloads_submitted_together_arrive_in_order_and_survive_a_fallback(
        collector: Any, tmp_path: Any, monkeypatch: Any) -> None:
    # the three payloads of a write go in one write to the socket; frames of several
    # payloads that never reached a helper are split again for the driver's own delivery
    delivery = HelperProcess(make_settings(tmp_path, collector.url))
    assert delivery.submit_many(tfs(3)) == 3
    assert delivery.flush(5.0) is True
    monkeypatch.setattr(process_mod, "_command", lambda: ["sleep", "60"])
    stuck = HelperProcess(make_settings(tmp_path, collector.url), start_timeout=0.5)
    assert stuck.submit_many(tfs(3, start=4)) == 3
    assert stuck.submit_many(tfs(2, start=7)) == 2
    assert stuck.close(5.0) is True
    assert delivery.close(3.0) is True
    assert received_tf_ids(collector) == list(range(1, 9))
    assert stuck.stats()["sent"] == 5 and delivery.stats()["sent"] == 3


def test_the_helper_runs_in_the_idle_scheduling_class(collector: Any, tmp_path: Any) -> None:
    delivery = HelperProcess(make_settings(tmp_path, collector.url))
    try:
        assert delivery.submit(tfs(1)[0]) is True
        assert delivery.flush(5.0) is True  # ready: it has set its priority
        pid = delivery.helper_pid
        assert pid is not None
        # the idle scheduling class, for every thread of the helper
        want = os.SCHED_IDLE
        policies = []
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                policies.append(os.sched_getscheduler(int(tid)))
            except ProcessLookupError:  # a short-lived thread (a flush's) ended meanwhile
                continue
        assert policies and set(policies) == {want}
        assert delivery.stats()["sent"] == 1
    finally:
        delivery.close(3.0)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the driver's own: untouched


def test_the_driver_does_not_load_the_http_stack(collector: Any, tmp_path: Any) -> None:
    # the helper sends: the driver's interpreter never imports urllib3 or ssl (~10 MB of
    # resident memory and ~0.1 s at activation)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path[:0] = {[os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]!r}
        from definity_spark import wire
        from definity_spark.helper.client import HelperProcess
        from definity_spark.settings import resolve
        settings = resolve(overrides={{"server_url": {collector.url!r},
                                       "spool_dir": {str(tmp_path / "spool")!r}}},
                           spark_conf={{}}, environ={{}})
        delivery = HelperProcess(settings)
        delivery.submit(wire.TaskStart(task_id="app-helper", app_name="a", task_name="t"))
        assert delivery.flush(10.0) and delivery.close(5.0)
        assert delivery.stats()["sent"] == 1
        print(sorted(m for m in ("urllib3", "ssl", "requests") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_process_group_spools_what_the_helper_holds(
        tmp_path: Any, sig: int) -> None:
    """A closed terminal (SIGHUP) or a kill (SIGTERM) of the driver's process group: the
    helper spools the reports it holds and exits; none is lost."""
    server = FaultyServer(token=TOKEN)
    server.slow(30.0)  # every request hangs: the reports stay with the helper
    try:
        settings = make_settings(tmp_path, server.url, server_timeout=20.0)
        script = textwrap.dedent(f"""
            import os, signal, sys, time
            signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal (not under nohup)
            sys.path[:0] = {[os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]!r}
            from definity_spark import wire
            from definity_spark.helper.client import HelperProcess
            from definity_spark.settings import resolve
            settings = resolve(overrides={{"server_url": {server.url!r}, "token": {TOKEN!r},
                                           "spool_dir": {settings.spool_dir!r},
                                           "server_timeout": 20.0}},
                               spark_conf={{}}, environ={{}})
            delivery = HelperProcess(settings)
            for i in range(1, 6):
                delivery.submit(wire.Transformation(task_id="app-sig", tf_id=i,
                                                    output_name="db.t", query_str="q"))
            time.sleep(1.0)  # the helper has them (one in flight, four queued)
            print(delivery.helper_pid, flush=True)
            time.sleep(60)
        """)
        driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                  text=True, start_new_session=True)
        helper_pid = int(driver.stdout.readline())  # type: ignore[union-attr]
        os.killpg(driver.pid, sig)
        driver.wait(10)
        assert wait_until(lambda: not pid_alive(helper_pid), 10.0)
        spooled = []
        for path in spool_files(settings.spool_dir):
            with open(path, "rb") as fh:
                records, _ = read_records(fh.read())
            spooled.extend(r["body"]["tf_id"] for r in records if "body" in r)
        assert sorted(spooled) == [1, 2, 3, 4, 5]
    finally:
        server.close()


def test_a_close_that_gives_up_on_a_hung_helper_counts_what_may_be_lost(
        collector: Any, tmp_path: Any, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, logger="definity_spark")
    delivery = HelperProcess(make_settings(tmp_path, collector.url))
    assert delivery.submit(tfs(1)[0]) is True
    assert delivery.flush(5.0) is True  # ready, and that one is confirmed sent
    pid = delivery.helper_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # hung from here on
    try:
        for p in tfs(3, start=2):
            assert delivery.submit(p) is True
        assert delivery.close(1.0) is False
        stats = delivery.stats()
        assert stats["unsent_at_close"] == 3 and stats["lost"] >= 3
        assert any("at most 3 report(s) it had accepted may be lost" in r.getMessage()
                   for r in caplog.records)
    finally:
        os.kill(pid, signal.SIGCONT)
