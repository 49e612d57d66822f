"""Issue 20, item 15: a blip must not cost the rest of the application.

Once a task's report is spooled (the server failed ``server_attempts`` times), its later
reports follow it into the spool to keep the order. The delivery then probes the server in
the background; once it answers, it sends the task's spool in order and goes back to live
delivery, all before the application ends. Real loopback HTTP servers
(tests/faulty_server.py, the local collector), real spool files, and the helper process
(``HelperProcess``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from collector_util import running_collector

from definity_spark.delivery import make_delivery
from definity_spark.delivery.replay import replay
from definity_spark.delivery.spool_format import read_records, spool_files
from definity_spark.helper.client import HelperProcess

try:
    from faulty_server import FaultyServer
    from test_delivery import TOKEN, make_settings, task_payloads
except ImportError:  # tests/ imported as a package
    from tests.faulty_server import FaultyServer
    from tests.test_delivery import TOKEN, make_settings, task_payloads

ATTEMPTS = 3


def wait_until(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


@pytest.fixture()
def server() -> Any:
    srv = FaultyServer(token=TOKEN)
    yield srv
    srv.close()


def test_500_for_the_first_attempts_requests_then_everything_arrives_live(
        server: FaultyServer, tmp_path: Path) -> None:
    """The issue's test: 500 to the first N requests, N = attempts, then healthy. The task
    start is spooled, and with it every later report; all of them reach the server while
    the application still runs, once each, in order."""
    server.fail_first(ATTEMPTS, 500)
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=ATTEMPTS,
                             server_attempt_sleep=0.05, replay_spool=False)
    delivery = HelperProcess(settings)  # the helper process, as in an application
    payloads = task_payloads(task_id="blip", n_tf=4)
    for p in payloads[:-1]:
        delivery.submit(p)
        time.sleep(0.05)  # an application between writes
    # every report so far arrives without the application ending
    assert wait_until(lambda: len(server.records) == len(payloads) - 1, 15), server.bodies()
    delivery.submit(payloads[-1])
    assert delivery.close(5.0)
    stats = delivery.stats()
    assert server.bodies() == [p.to_json() for p in payloads]  # once each, in order
    assert server.requests_seen == ATTEMPTS + len(payloads)  # no request sent twice
    assert spool_files(settings.spool_dir) == []  # nothing left for a replay
    assert stats["spooled"] >= 1 and stats["recovered"] >= 1 and stats["lost"] == 0


def test_an_outage_in_the_middle_of_the_run_ends_in_live_delivery(
        server: FaultyServer, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=2,
                             server_attempt_sleep=0.05, replay_spool=False)
    delivery = make_delivery(settings)
    payloads = task_payloads(task_id="outage", n_tf=6)
    for p in payloads[:3]:
        delivery.submit(p)
    assert delivery.flush(5.0)
    server.fail_first(10 ** 6, 503)  # two seconds of outage
    for p in payloads[3:8]:
        delivery.submit(p)
        time.sleep(0.1)
    assert delivery.flush(5.0)
    assert len(server.records) == 3
    assert spool_files(settings.spool_dir)  # the outage went to the spool
    time.sleep(1.5)
    server.clear()
    assert wait_until(lambda: len(server.records) == 8, 10), server.bodies()
    # drained: the task's spool file is gone, its next reports go out live again
    assert wait_until(lambda: not spool_files(settings.spool_dir), 5)
    for p in payloads[8:]:
        delivery.submit(p)
    assert delivery.flush(5.0)
    assert delivery.close(5.0)
    assert server.bodies() == [p.to_json() for p in payloads]
    stats = delivery.stats()
    assert stats["recovered"] == 5 and stats["sent"] == len(payloads) - 5
    assert stats["lost"] == 0 and not spool_files(settings.spool_dir)


def test_overflow_to_the_spool_is_recovered_in_submission_order(
        server: FaultyServer, tmp_path: Path) -> None:
    """The queue overflows while the worker waits on a slow answer: the overflow goes to
    the spool on the caller's thread, payloads still queued follow it there, and the
    recovery sends them all in submission order."""
    server.slow(0.8, n=1, accept=True)
    settings = make_settings(tmp_path, server_url=server.url, queue_size=2,
                             server_timeout=3.0, replay_spool=False)
    delivery = make_delivery(settings)
    payloads = task_payloads(task_id="overflow", n_tf=8)
    for p in payloads:
        delivery.submit(p)
    assert delivery.stats()["queue_full"] > 0
    assert wait_until(lambda: len(server.records) == len(payloads), 10), server.paths()
    assert delivery.close(5.0)
    assert server.bodies() == [p.to_json() for p in payloads]
    assert spool_files(settings.spool_dir) == []


def test_what_is_left_at_close_stays_for_replay_without_what_was_recovered(
        server: FaultyServer, tmp_path: Path) -> None:
    server.down()
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=1,
                             server_attempt_sleep=0.05, replay_spool=False)
    delivery = make_delivery(settings)
    payloads = task_payloads(task_id="partial", n_tf=3)
    for p in payloads:
        delivery.submit(p)
    assert delivery.flush(5.0)
    server.accept_only(3)  # back, but for three reports only, then 503
    server.up()
    assert wait_until(lambda: len(server.records) == 3, 10)
    assert delivery.close(3.0)
    [path] = spool_files(settings.spool_dir)
    with open(path, "rb") as fh:
        left, _ = read_records(fh.read())
    assert [r["body"] for r in left] == [p.to_json() for p in payloads[3:]]
    server.clear()
    report = replay(settings.spool_dir, server.url, TOKEN, timeout=2.0, attempts=1)
    assert report.complete and report.sent == len(payloads) - 3
    assert server.bodies() == [p.to_json() for p in payloads]


def test_probes_back_off_and_honour_retry_after(server: FaultyServer, tmp_path: Path) -> None:
    server.rate_limit(10 ** 6, retry_after="1")
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=1,
                             server_attempt_sleep=0.05, replay_spool=False)
    delivery = make_delivery(settings)
    delivery.submit(task_payloads(task_id="limited", n_tf=0)[0])
    time.sleep(3.2)
    times = list(server.request_times)
    delivery.close(1.0)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 2 <= len(times) <= 4, gaps  # the live try, then a probe about every second
    assert all(gap >= 0.9 for gap in gaps), gaps


def test_probes_stop_when_the_server_refuses_the_token(server: FaultyServer, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    server.fail_first(1, 500)
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=1,
                             server_attempt_sleep=0.05, replay_spool=False)
    delivery = make_delivery(settings)
    with caplog.at_level(logging.ERROR, logger="definity_spark.delivery"):
        delivery.submit(task_payloads(task_id="refused", n_tf=0)[0])
        assert wait_until(lambda: server.requests_seen == 1, 5)
        server.reject(401)
        assert wait_until(lambda: server.requests_seen == 2, 5)
        time.sleep(1.5)
        seen = server.requests_seen
        delivery.close(1.0)
    assert seen == 2  # the probe got 401: no more probes
    rejected = [r for r in caplog.records if "rejected the token" in r.getMessage()]
    assert len(rejected) == 1
    assert spool_files(settings.spool_dir)  # kept for a replay with the right token


def test_recovery_through_the_collector_holds_each_payload_once(tmp_path: Path) -> None:
    payloads = task_payloads(task_id="to-collector", n_tf=3)
    with running_collector(str(tmp_path / "c.db"), token=TOKEN) as collector:
        collector.fail_next(ATTEMPTS, status=500)
        settings = make_settings(tmp_path, server_url=collector.url, server_attempts=ATTEMPTS,
                                 server_attempt_sleep=0.05, replay_spool=False)
        delivery = HelperProcess(settings)
        for p in payloads:
            delivery.submit(p)
        assert collector.wait_for_payloads(len(payloads), timeout=15)
        assert delivery.close(5.0)
        held = [(p["endpoint"], p["body"]) for p in collector.store.payloads()]
    assert held == [(p.endpoint, p.to_json()) for p in payloads]


# -------------------------------------------------------------------------- delivery.replay
def _spooled_for(tmp_path: Path, server: FaultyServer, task_id: str) -> list[Any]:
    """A task spooled for ``server`` (down at the time), by an earlier application."""
    server.down()
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=1,
                             replay_spool=False)
    delivery = make_delivery(settings)
    payloads = task_payloads(task_id=task_id, n_tf=1)
    for p in payloads:
        delivery.submit(p)
    delivery.close(3.0)
    server.up()
    return payloads


def test_a_new_activation_sends_older_spool_files_of_its_server_by_default(
        tmp_path: Path) -> None:
    ours, other = FaultyServer(token=TOKEN), FaultyServer(token=TOKEN)
    try:
        old = _spooled_for(tmp_path, ours, "earlier-run")
        elsewhere = _spooled_for(tmp_path, other, "dev-run")  # the same spool dir
        assert len(spool_files(str(tmp_path / "spool"))) == 2
        settings = make_settings(tmp_path, server_url=ours.url)  # replay_spool: default
        assert settings.replay_spool is True
        delivery = HelperProcess(settings)  # the next application starts
        assert wait_until(lambda: len(spool_files(settings.spool_dir)) == 1, 10)
        delivery.close(3.0)
        left = spool_files(settings.spool_dir)
    finally:
        ours.close()
        other.close()
    assert ours.bodies() == [p.to_json() for p in old]
    assert other.requests_seen == 0  # never sent to another server...
    assert len(left) == 1 and "dev-run" in left[0]  # ...and kept for its own
    assert len(elsewhere) == len(old)
