"""Delivery against the real local collector (definity_spark.collector) over loopback.

The collector validates every payload against the API contract (400 on a bad shape) and
stores what it accepts in SQLite, so these tests check that what the delivery sends is
accepted as-is, byte for byte, including after faults, a crash of the server and a replay.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from definity_spark import wire
from definity_spark.delivery import make_delivery
from definity_spark.delivery.replay import replay
from definity_spark.delivery.spool_format import spool_files

try:
    from collector_util import CollectorClient, CollectorProcess, running_collector
    from test_delivery import TOKEN, make_settings, submit_all, task_payloads
except ImportError:  # tests/ imported as a package
    from tests.collector_util import CollectorClient, CollectorProcess, running_collector
    from tests.test_delivery import TOKEN, make_settings, submit_all, task_payloads


def stored(url: str) -> list[Any]:
    return [(p["endpoint"], p["body"]) for p in CollectorClient(url, token=TOKEN).payloads()]


def expected(payloads: list[Any]) -> list[Any]:
    return [(p.endpoint, p.to_json()) for p in payloads]


def test_collector_stores_exactly_what_was_sent_byte_for_byte(tmp_path: Any) -> None:
    with running_collector(str(tmp_path / "c.db"), token=TOKEN) as collector:
        delivery = make_delivery(make_settings(tmp_path, server_url=collector.url))
        payloads = task_payloads(n_tf=3) + [wire.Metrics(task_id="app-1-abc", metrics=[
            wire.Metric(asset_name="db.t1", metric_type="cnt", value=42)])]
        for p in payloads:
            delivery.submit(p)
        assert delivery.close(5.0)
        rows = CollectorClient(collector.url, token=TOKEN).payloads()
        assert [(r["endpoint"], r["body"]) for r in rows] == expected(payloads)
        # the raw bytes the collector received are our compact JSON of the wire object
        for row, p in zip(rows, payloads):
            raw = row["raw"]
            assert raw == json.dumps(p.to_json(), separators=(",", ":"), ensure_ascii=False)
        assert delivery.stats()["sent"] == len(payloads)


def test_collector_failing_first_n_then_ok(tmp_path: Any) -> None:
    with running_collector(str(tmp_path / "c.db"), token=TOKEN) as collector:
        collector.fail_next(2, status=500)
        delivery = make_delivery(make_settings(tmp_path, server_url=collector.url,
                                               server_attempts=3))
        payloads = task_payloads(n_tf=1)
        for p in payloads:
            delivery.submit(p)
        assert delivery.close(5.0)
        posts = [r for r in collector.requests() if r["method"] == "POST"]
        assert [r["status"] for r in posts] == [500, 500] + [200] * len(payloads)
        assert stored(collector.url) == expected(payloads)


def test_wrong_token_is_spooled_and_replayed_with_the_right_one(tmp_path: Any) -> None:
    with running_collector(str(tmp_path / "c.db"), token=TOKEN) as collector:
        settings = make_settings(tmp_path, server_url=collector.url, token="stale-token")
        delivery = make_delivery(settings)
        payloads = task_payloads(n_tf=2)
        for p in payloads:
            delivery.submit(p)
        assert delivery.close(5.0)
        posts = [r for r in collector.requests() if r["method"] == "POST"]
        assert [r["status"] for r in posts] == [401]  # one try, then straight to the spool
        assert stored(collector.url) == []
        report = replay(settings.spool_dir, collector.url, TOKEN, timeout=2.0, attempts=1)
        assert report.complete
        assert stored(collector.url) == expected(payloads)


def test_collector_killed_mid_run_then_replay_holds_everything_once(tmp_path: Any) -> None:
    db = str(tmp_path / "c.db")
    proc = CollectorProcess(db, token=TOKEN)
    try:
        settings = make_settings(tmp_path, server_url=proc.url, server_attempts=2,
                                 server_timeout=0.5, server_attempt_sleep=0.05)
        delivery = make_delivery(settings)
        payloads = task_payloads(n_tf=4)
        for p in payloads[:4]:
            delivery.submit(p)
        assert delivery.flush(5.0)
        proc.kill()  # the server vanishes mid-run
        for p in payloads[4:]:
            delivery.submit(p)
        started = time.monotonic()
        delivery.close(2.0)
        assert time.monotonic() - started < 2.0 + 0.6
        assert delivery.stats()["sent"] == 4
        assert delivery.stats()["spooled"] == len(payloads) - 4
    finally:
        proc.kill()
    # the server comes back (same database, new port); replay completes the task
    with CollectorProcess(db, token=TOKEN) as again:
        report = replay(settings.spool_dir, again.url, TOKEN, timeout=2.0, attempts=2,
                        attempt_sleep=0.05)
        assert report.complete and report.sent == len(payloads) - 4
        assert stored(again.url) == expected(payloads)
        assert replay(settings.spool_dir, again.url, TOKEN).sent == 0
        assert stored(again.url) == expected(payloads)
    assert spool_files(settings.spool_dir) == []


def test_events_file_loads_into_the_collector(tmp_path: Any) -> None:
    events = str(tmp_path / "events.jsonl")
    delivery = make_delivery(make_settings(tmp_path, server_url=None, events_file=events))
    payloads = task_payloads(n_tf=2)
    for p in payloads:
        delivery.submit(p)
    assert delivery.close(3.0)
    assert os.path.exists(events)
    with running_collector(str(tmp_path / "c.db")) as collector:
        loaded, rejected = collector.load_file(events)
        assert (loaded, rejected) == (len(payloads), [])
        assert stored(collector.url) == expected(payloads)


def test_a_netrc_entry_for_the_server_does_not_replace_the_bearer_token(
        tmp_path: Any, monkeypatch: Any) -> None:
    """requests would read ~/.netrc on every POST and send its Basic credentials instead
    of the token; the transport reads the environment once and never consults .netrc."""
    home = tmp_path / "home"
    home.mkdir()
    netrc = home / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password not-the-token\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(netrc))
    with running_collector(str(tmp_path / "c.db"), token=TOKEN) as collector:
        delivery, payloads = submit_all(make_settings(tmp_path, server_url=collector.url))
        assert delivery.flush(30)
        assert delivery.stats()["sent"] == len(payloads)
        assert delivery.stats()["rejected"] == 0
        delivery.close(10)
        monkeypatch.undo()  # the test's own reader is a plain requests client
        assert stored(collector.url) == expected(payloads)
