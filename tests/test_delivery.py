"""Delivery against a real HTTP server on loopback (tests/faulty_server.py).

Each test builds settings through ``definity_spark.settings.resolve`` with small timeouts,
so the whole module runs in a few seconds. Bounds on flush/close are asserted with a
small slack for a loaded CI machine.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from definity_spark import wire
from definity_spark.delivery import Delivery, make_delivery
from definity_spark.delivery.spool_format import read_records, spool_files
from definity_spark.delivery.transport import SENT, SendResult, Transport
from definity_spark.settings import resolve

try:
    from faulty_server import FaultyServer
except ImportError:  # tests/ imported as a package
    from tests.faulty_server import FaultyServer

TOKEN = "tok-SECRET-5f2b9c"
SLACK = 0.6  # seconds of scheduling slack on top of a promised bound


@pytest.fixture()
def server() -> Iterator[FaultyServer]:
    srv = FaultyServer(token=TOKEN)
    yield srv
    srv.close()


@pytest.fixture()
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="definity_spark")
    return caplog


def make_settings(tmp_path: Any, **overrides: Any) -> Any:
    base: dict[str, Any] = {
        "token": TOKEN,
        "spool_dir": str(tmp_path / "spool"),
        "server_timeout": 1.0,
        "server_attempts": 3,
        "server_attempt_sleep": 0.01,
        "flush_timeout": 2.0,
    }
    base.update(overrides)
    return resolve(overrides=base, spark_conf={}, environ={})


def task_payloads(task_id: str = "app-1-abc", n_tf: int = 3) -> list[Any]:
    out: list[Any] = [wire.TaskStart(task_id=task_id, app_name="pipe", task_name="job",
                                     env="dev")]
    for i in range(1, n_tf + 1):
        out.append(wire.Transformation(task_id=task_id, tf_id=i, output_name=f"db.t{i}",
                                       inputs={"db.src": ["id", "name"]},
                                       query_str=f"INSERT INTO db.t{i} SELECT * FROM db.src"))
        out.append(wire.DatasetSchema(task_id=task_id, tf_id=i, ds_name=f"db.t{i}",
                                      fields=[("id", "INTEGER"), ("name", "STRING")]))
    out.append(wire.TaskEnd(task_id=task_id))
    return out


def submit_all(settings: Any, n_tf: int = 1) -> tuple[Delivery, list[Any]]:
    """A delivery made from ``settings`` with one task's payloads submitted (not closed)."""
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=n_tf)
    for p in payloads:
        delivery.submit(p)
    return delivery, payloads


def spooled_bodies(spool_dir: str) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    for path in spool_files(spool_dir):
        with open(path, "rb") as fh:
            records, _ = read_records(fh.read())
        bodies.extend(r["body"] for r in records)
    return bodies


def assert_no_token(logs: pytest.LogCaptureFixture, spool_dir: str) -> None:
    assert TOKEN not in logs.text
    for record in logs.records:
        assert TOKEN not in record.getMessage()
    for root, _, files in os.walk(spool_dir):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                assert TOKEN.encode() not in fh.read(), name


# --------------------------------------------------------------------------- happy path
def test_sends_in_order_over_one_keepalive_connection(server: FaultyServer, tmp_path: Any,
                                                       logs: Any) -> None:
    settings = make_settings(tmp_path, server_url=server.url)
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=10)
    for p in payloads:
        assert delivery.submit(p) is True
    assert delivery.flush(5.0) is True
    assert delivery.close(2.0) is True

    assert server.bodies() == [p.to_json() for p in payloads]
    assert server.paths() == [p.endpoint for p in payloads]
    first = server.records[0]
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.headers["content-type"] == "application/json"
    # keep-alive: every request on one connection (one client port)
    assert len({r.client_port for r in server.records}) == 1
    stats = delivery.stats()
    assert stats["sent"] == len(payloads) and stats["submitted"] == len(payloads)
    assert stats["lost"] == 0 and stats["spooled"] == 0
    assert spool_files(settings.spool_dir) == []
    assert_no_token(logs, settings.spool_dir)


def test_a_base_url_with_a_path_prefixes_every_endpoint(server: FaultyServer,
                                                       tmp_path: Any) -> None:
    # a server behind a reverse proxy at a path: the requests go straight to the server's
    # connection pool, with the base path kept
    settings = make_settings(tmp_path, server_url=server.url + "/definity/")
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=2)
    for p in payloads:
        delivery.submit(p)
    assert delivery.close(3.0) is True
    assert server.paths() == ["/definity" + p.endpoint for p in payloads]
    assert len({r.client_port for r in server.records}) == 1


def test_a_keepalive_connection_the_server_closed_costs_no_attempt(server: FaultyServer
                                                                     ) -> None:
    # the server closes an idle connection (as a keep-alive timeout would) between two
    # reports: the second goes out at its first attempt, on a new connection
    from definity_spark.delivery.http import HttpTransport

    server.idle_timeout = 0.2
    transport = HttpTransport(server.url, token=TOKEN, attempts=3, attempt_sleep=0.01)
    try:
        first = transport.send("/log/task", {"task_id": "t-1"})
        # until the server's end of the idle connection arrives (0.2 s, more on a busy
        # machine)
        from urllib3.util.wait import wait_for_read

        assert wait_for_read(transport._direct.sock, 10.0)
        second = transport.send("/log/task", {"task_id": "t-2"})
    finally:
        transport.close()
    assert (first.outcome, first.attempts) == (SENT, 1)
    assert (second.outcome, second.attempts) == (SENT, 1)
    assert [b["task_id"] for b in server.bodies()] == ["t-1", "t-2"]
    assert len({r.client_port for r in server.records}) == 2


def test_body_is_exactly_the_wire_json(server: FaultyServer, tmp_path: Any) -> None:
    delivery = make_delivery(make_settings(tmp_path, server_url=server.url))
    tf = wire.Transformation(task_id="t-1", tf_id=4, output_name="db.out",
                             inputs={"db.a": ["x"], "db.b": None}, query_str="é ünïcode")
    delivery.submit(tf)
    assert delivery.close(3.0)
    assert json.loads(server.records[0].body) == tf.to_json()


class _RecordingTransport(Transport):
    kind = "recording"

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.threads: list[str] = []
        self.bodies: list[dict[str, Any]] = []

    def send(self, endpoint: str, body: Any, key: str | None = None) -> SendResult:
        self.gate.wait(5)
        self.threads.append(threading.current_thread().name)
        self.bodies.append(dict(body))
        return SendResult(SENT)


def test_submit_never_sends_on_the_callers_thread_and_never_blocks() -> None:
    gate = threading.Event()  # the transport blocks until the test opens it
    transport = _RecordingTransport(gate)
    delivery = Delivery(transport, spool=None, queue_size=100)
    started = time.monotonic()
    for p in task_payloads(n_tf=20):
        assert delivery.submit(p)
    assert time.monotonic() - started < 0.5  # nothing waited for the blocked transport
    gate.set()
    assert delivery.close(5.0)
    assert set(transport.threads) == {"definity-spark.delivery"}
    assert threading.current_thread().name not in transport.threads
    assert [b.get("tf_id") for b in transport.bodies][1:-1:2] == list(range(1, 21))


def test_queue_full_without_spool_drops_newest_and_counts() -> None:
    gate = threading.Event()
    transport = _RecordingTransport(gate)
    delivery = Delivery(transport, spool=None, queue_size=3)
    payloads = task_payloads(n_tf=5)  # 12 payloads
    accepted = [delivery.submit(p) for p in payloads]
    gate.set()
    delivery.close(5.0)
    stats = delivery.stats()
    # one in flight (maybe) + 3 queued; the rest found the queue full
    assert stats["queue_full"] == accepted.count(False) >= len(payloads) - 4
    assert stats["lost"] == stats["queue_full"]
    assert stats["sent"] == accepted.count(True)
    # what was sent is a prefix of what was submitted: the newest were dropped
    assert transport.bodies == [p.to_json() for p in payloads[:stats["sent"]]]


# --------------------------------------------------------------------------- retries
def test_500_for_the_first_n_requests_then_success(server: FaultyServer, tmp_path: Any) -> None:
    server.fail_first(2, status=500)
    delivery = make_delivery(make_settings(tmp_path, server_url=server.url,
                                           server_attempts=3))
    payload = task_payloads()[0]
    delivery.submit(payload)
    assert delivery.flush(5.0)
    assert server.requests_seen == 3  # 2 failures + the success, nothing more
    assert server.bodies() == [payload.to_json()]
    assert delivery.stats()["sent"] == 1 and delivery.stats()["network"] == 0
    delivery.close(1.0)


def test_500_beyond_the_attempts_spools_the_task_in_order(server: FaultyServer, tmp_path: Any,
                                                          logs: Any) -> None:
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=3)
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=2)
    delivery.submit(payloads[0])
    assert delivery.flush(5.0)
    assert server.bodies() == [payloads[0].to_json()]
    server.fail_first(100, status=503)
    for p in payloads[1:]:
        delivery.submit(p)
    assert delivery.close(5.0)
    # exactly the attempts for the first failing payload; later ones of the task were
    # spooled without a try (order is kept for the replay)
    assert server.requests_seen == 1 + 3
    stats = delivery.stats()
    assert stats["network"] == 1 and stats["spooled"] == len(payloads) - 1
    assert stats["lost"] == 0
    assert spooled_bodies(settings.spool_dir) == [p.to_json() for p in payloads[1:]]
    assert sum("go to the spool" in r.getMessage() for r in logs.records) == 1
    assert_no_token(logs, settings.spool_dir)


def test_429_retry_after_is_honoured(server: FaultyServer, tmp_path: Any) -> None:
    server.rate_limit(1, retry_after="1")
    delivery = make_delivery(make_settings(tmp_path, server_url=server.url,
                                           server_attempt_sleep=0.01))
    delivery.submit(task_payloads()[0])
    assert delivery.flush(5.0)
    assert server.requests_seen == 2 and len(server.records) == 1
    gap = server.request_times[1] - server.request_times[0]
    assert 0.9 <= gap < 1.0 + SLACK  # the server's 1 s, not the 0.01 s backoff
    delivery.close(1.0)


def test_connection_reset_is_retried(server: FaultyServer, tmp_path: Any) -> None:
    server.reset(2)
    delivery = make_delivery(make_settings(tmp_path, server_url=server.url,
                                           server_attempts=3))
    payloads = task_payloads(n_tf=1)
    for p in payloads:
        delivery.submit(p)
    assert delivery.close(5.0)
    assert server.bodies() == [p.to_json() for p in payloads]
    assert server.requests_seen == len(payloads) + 2
    assert delivery.stats()["sent"] == len(payloads)


# --------------------------------------------------------------------------- rejections
def test_401_no_retry_one_log_line_and_spooled(server: FaultyServer, tmp_path: Any,
                                               logs: Any) -> None:
    server.reject(401)
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=5)
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=3)
    for p in payloads:
        delivery.submit(p)
    assert delivery.close(5.0)
    assert server.requests_seen == 1  # no retry, and no request for the later payloads
    rejected_lines = [r for r in logs.records
                      if "rejected the token (HTTP 401)" in r.getMessage()]
    assert len(rejected_lines) == 1 and rejected_lines[0].levelno >= logging.ERROR
    stats = delivery.stats()
    assert stats["rejected"] == 1 and stats["spooled"] == len(payloads)
    assert stats["lost"] == 0
    assert spooled_bodies(settings.spool_dir) == [p.to_json() for p in payloads]
    assert_no_token(logs, settings.spool_dir)


def test_wrong_token_is_a_401_too(server: FaultyServer, tmp_path: Any, logs: Any) -> None:
    settings = make_settings(tmp_path, server_url=server.url, token="wrong-token")
    delivery = make_delivery(settings)
    delivery.submit(task_payloads()[0])
    delivery.close(3.0)
    assert delivery.stats()["rejected"] == 1 and delivery.stats()["spooled"] == 1
    assert "wrong-token" not in logs.text


def test_other_4xx_is_not_retried_logged_once_and_counted_lost(server: FaultyServer,
                                                               tmp_path: Any,
                                                               logs: Any) -> None:
    server.reject(400)
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=4)
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=1)
    for p in payloads:
        delivery.submit(p)
    assert delivery.close(5.0)
    assert server.requests_seen == len(payloads)  # one try each
    stats = delivery.stats()
    assert stats["rejected"] == len(payloads) == stats["lost"]
    assert stats["spooled"] == 0
    assert sum("HTTP 400" in r.getMessage() for r in logs.records) == 1


@pytest.mark.parametrize("status", [404, 307])
def test_wrong_url_is_not_retried_logged_once_and_spooled(server: FaultyServer, tmp_path: Any,
                                                          logs: Any, status: int) -> None:
    server.reject(status)
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=4)
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=1)
    for p in payloads:
        delivery.submit(p)
    assert delivery.close(5.0)
    assert server.requests_seen == 1  # the same answer would come for every payload
    assert sum("base URL of the Definity server" in r.getMessage()
               for r in logs.records) == 1
    assert delivery.stats()["spooled"] == len(payloads) and delivery.stats()["lost"] == 0


# --------------------------------------------------------------------------- slow / down
def test_slow_server_times_out_retries_then_spools(server: FaultyServer, tmp_path: Any) -> None:
    server.slow(3.0)
    settings = make_settings(tmp_path, server_url=server.url, server_timeout=0.2,
                             server_attempts=2)
    delivery = make_delivery(settings)
    payload = task_payloads()[0]
    started = time.monotonic()
    delivery.submit(payload)
    assert delivery.flush(3.0)
    elapsed = time.monotonic() - started
    assert elapsed < 2 * 0.2 + 0.02 + SLACK
    assert server.requests_seen == 2
    stats = delivery.stats()
    assert stats["network"] == 1 and stats["spooled"] == 1
    assert spooled_bodies(settings.spool_dir) == [payload.to_json()]
    delivery.close(1.0)


def test_server_down_spools_everything_and_close_is_bounded(server: FaultyServer,
                                                            tmp_path: Any) -> None:
    server.down()
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=3,
                             server_attempt_sleep=0.05)
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=4)
    for p in payloads:
        delivery.submit(p)
    started = time.monotonic()
    delivery.close(2.0)
    assert time.monotonic() - started < 2.0 + SLACK
    stats = delivery.stats()
    assert stats["spooled"] == len(payloads) and stats["lost"] == 0
    assert spooled_bodies(settings.spool_dir) == [p.to_json() for p in payloads]


def test_close_cuts_a_long_backoff_short(server: FaultyServer, tmp_path: Any) -> None:
    server.down()
    settings = make_settings(tmp_path, server_url=server.url, server_attempts=5,
                             server_attempt_sleep=30.0)
    delivery = make_delivery(settings)
    delivery.submit(task_payloads()[0])
    time.sleep(0.2)  # the worker is now sleeping between attempts
    started = time.monotonic()
    assert delivery.close(0.5) is True  # the worker spooled it when woken
    assert time.monotonic() - started < 0.5 + SLACK
    assert delivery.stats()["spooled"] == 1


def test_flush_and_close_are_bounded_when_the_server_hangs(server: FaultyServer,
                                                            tmp_path: Any) -> None:
    server.slow(30.0)
    settings = make_settings(tmp_path, server_url=server.url, server_timeout=10.0,
                             server_attempts=3)
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=3)
    for p in payloads:
        delivery.submit(p)
    started = time.monotonic()
    assert delivery.flush(0.3) is False
    assert time.monotonic() - started < 0.3 + SLACK
    started = time.monotonic()
    assert delivery.close(0.5) is False  # it had to cut the request in flight short
    assert time.monotonic() - started < 0.5 + SLACK
    # the payload stuck in flight and the queued ones are all in the spool, in order
    assert spooled_bodies(settings.spool_dir) == [p.to_json() for p in payloads]
    assert delivery.stats()["spooled"] == len(payloads)


def test_queue_overflow_goes_to_the_spool_and_is_counted(server: FaultyServer,
                                                        tmp_path: Any) -> None:
    server.slow(0.5, n=1)  # the first request hangs while the caller submits
    settings = make_settings(tmp_path, server_url=server.url, server_timeout=2.0,
                             queue_size=2)
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=5)
    for p in payloads:
        assert delivery.submit(p) is True  # spooled, not dropped
    assert delivery.close(5.0)
    stats = delivery.stats()
    assert stats["queue_full"] >= len(payloads) - 3
    assert stats["lost"] == 0
    assert stats["sent"] + stats["spooled"] == len(payloads)
    # nothing overtook: the server has a prefix, the spool the rest, in order
    delivered = server.bodies()
    assert delivered + spooled_bodies(settings.spool_dir) == [p.to_json() for p in payloads]


# --------------------------------------------------------------------------- file transport
def test_no_server_writes_the_events_file(tmp_path: Any, logs: Any) -> None:
    events = tmp_path / "out" / "events.jsonl"
    settings = make_settings(tmp_path, server_url=None, events_file=str(events))
    delivery = make_delivery(settings)
    payloads = task_payloads(n_tf=2)
    for p in payloads:
        delivery.submit(p)
    assert delivery.close(3.0)
    lines = events.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [wire.envelope(p) for p in payloads]
    assert stat.S_IMODE(os.stat(events).st_mode) == 0o600
    announced = [r for r in logs.records if "no server configured, writing events to" in
                 r.getMessage()]
    assert len(announced) == 1 and str(events) in announced[0].getMessage()
    assert delivery.stats()["sent"] == len(payloads)
    # round trip into the wire model (what `collector --load` does)
    assert wire.from_envelope(json.loads(lines[1])).to_json() == payloads[1].to_json()


def test_no_server_default_events_file_is_named_by_task(tmp_path: Any) -> None:
    settings = make_settings(tmp_path, server_url=None)
    delivery = make_delivery(settings)
    delivery.submit(wire.TaskStart(task_id="app/42 x", app_name="a", task_name="b"))
    assert delivery.close(3.0)
    path = tmp_path / "spool" / "events" / "app_42_x.jsonl"
    assert json.loads(path.read_text())["body"]["task_id"] == "app/42 x"


def test_submit_after_close_is_counted(server: FaultyServer, tmp_path: Any) -> None:
    delivery = make_delivery(make_settings(tmp_path, server_url=server.url))
    assert delivery.close(1.0)
    assert delivery.submit(task_payloads()[0]) is False
    assert delivery.stats()["closed"] == 1 and delivery.stats()["lost"] == 1
    assert delivery.close(1.0) is True  # idempotent


# --------------------------------------------------------------------------- pure logic
def test_retry_after_parsing_and_cap() -> None:
    from email.utils import formatdate

    from definity_spark.delivery.http import MAX_RETRY_AFTER, parse_retry_after

    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("99999") == MAX_RETRY_AFTER
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 10, usegmt=True), now=now) == pytest.approx(10)
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_backoff_is_exponential_with_jitter() -> None:
    import random

    from definity_spark.delivery.http import MAX_BACKOFF, backoff_delay

    rng = random.Random(7)
    for attempt, step in ((1, 1.0), (2, 2.0), (3, 4.0)):
        delays = [backoff_delay(attempt, 1.0, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step / 4  # really jittered
    assert backoff_delay(30, 1.0, rng) <= MAX_BACKOFF


def test_a_body_that_is_not_json_is_counted_and_does_not_stop_the_rest(
        server: FaultyServer, tmp_path: Any) -> None:
    import datetime

    bad = wire.RawPayload(endpoint=wire.TASK, body={"task_id": "t", "at": datetime.date.today()})
    good = task_payloads(task_id="t", n_tf=0)
    delivery = make_delivery(make_settings(tmp_path, server_url=server.url))
    delivery.submit(bad)
    for p in good:
        delivery.submit(p)
    assert delivery.close(3.0)
    assert delivery.stats()["invalid"] == 1 and delivery.stats()["lost"] == 1
    assert server.bodies() == [p.to_json() for p in good]


# --------------------------------------------------------------------------- column lineage
def test_a_400_to_column_lineage_resends_without_it_and_keeps_it_off(
        server: FaultyServer, tmp_path: Any, logs: Any) -> None:
    """A server that does not know the additive ``column_lineage`` field of /log/tf:
    each tf arrives once, without it, in order; the first one was refused once; the
    warning is logged once; nothing is lost."""
    server.refuse_field("column_lineage")
    delivery = make_delivery(make_settings(tmp_path, server_url=server.url))
    lineage = {"version": 1, "columns": [{"name": "id", "direct": {"db.src": ["id"]}}]}
    for i in range(1, 4):
        delivery.submit(wire.Transformation(task_id="app-cl", tf_id=i, output_name=f"db.t{i}",
                                            inputs={"db.src": ["id"]},
                                            column_lineage=lineage))
    assert delivery.close(5.0) is True
    assert [b["tf_id"] for b in server.bodies()] == [1, 2, 3]
    assert all("column_lineage" not in b for b in server.bodies())
    assert [b["tf_id"] for b in server.refused] == [1]  # then never sent again
    warnings = [r for r in logs.records if "column lineage" in r.getMessage()
                and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    stats = delivery.stats()
    assert stats["sent"] == 3 and stats["rejected"] == 0 and stats["lost"] == 0


def test_any_400_to_a_tf_with_column_lineage_turns_it_off(server: FaultyServer,
                                                          tmp_path: Any) -> None:
    # a 400 does not say which field the server refused: any 400 to a tf that carries
    # column lineage is taken as its refusal (the tf is not lost for it)
    server.fail_first(1, status=400)
    delivery = make_delivery(make_settings(tmp_path, server_url=server.url))
    delivery.submit(wire.Transformation(task_id="app-cl", tf_id=1, output_name="db.t1",
                                        column_lineage={"version": 1, "columns": []}))
    delivery.submit(wire.Transformation(task_id="app-cl", tf_id=2, output_name="db.t2",
                                        column_lineage={"version": 1, "columns": []}))
    assert delivery.close(5.0) is True
    # the refused tf was sent again without the field and arrives; the next one goes
    # without it too
    bodies = server.bodies()
    assert [b["tf_id"] for b in bodies] == [1, 2]
    assert "column_lineage" not in bodies[0]
    assert "column_lineage" not in bodies[1]
