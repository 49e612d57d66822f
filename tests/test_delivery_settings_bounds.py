"""Issue 20, item 17: settings without upper bounds broke delivery; a server URL with a
query string was posted to as ``/base?tenant=1/log/task``.

The settings go through ``settings.resolve`` from the Spark conf, as in an application,
and the delivery faces a real HTTP server on loopback (tests/faulty_server.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from definity_spark.delivery import make_delivery
from definity_spark.delivery.replay import replay
from definity_spark.delivery.spool_format import spool_files
from definity_spark.settings import resolve

try:
    from faulty_server import FaultyServer
    from test_delivery import TOKEN, task_payloads
except ImportError:  # tests/ imported as a package
    from tests.faulty_server import FaultyServer
    from tests.test_delivery import TOKEN, task_payloads


def _settings(tmp_path: Any, conf: dict[str, str]) -> Any:
    base = {"spark.definity.token": TOKEN, "spark.definity.spool.dir": str(tmp_path / "spool"),
            "spark.definity.server.attempt.sleep": "0.01"}
    base.update(conf)
    return resolve(None, base, {})


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "definity_spark.settings" and r.levelno >= logging.WARNING]


def test_an_enormous_request_timeout_is_bounded_and_reports_arrive(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    server = FaultyServer(token=TOKEN)
    try:
        with caplog.at_level(logging.WARNING, logger="definity_spark.settings"):
            settings = _settings(tmp_path, {"spark.definity.server": server.url,
                                            "spark.definity.server.timeout": "1e308"})
        warned = _warnings(caplog)
        assert len(warned) == 1 and "spark.definity.server.timeout" in warned[0], warned
        assert settings.server_timeout == 600.0
        delivery = make_delivery(settings)
        payloads = task_payloads(n_tf=1)
        for p in payloads:
            delivery.submit(p)
        assert delivery.close(10.0)
        assert server.bodies() == [p.to_json() for p in payloads]
        assert delivery.stats()["sent"] == len(payloads)
    finally:
        server.close()


def test_an_enormous_flush_timeout_is_bounded_and_close_still_spools(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    server = FaultyServer(token=TOKEN)
    try:
        server.down()
        with caplog.at_level(logging.WARNING, logger="definity_spark.settings"):
            settings = _settings(tmp_path, {"spark.definity.server": server.url,
                                            "spark.definity.server.attempts": "1",
                                            "spark.definity.flush.timeout": "1e12"})
        warned = _warnings(caplog)
        assert len(warned) == 1 and "spark.definity.flush.timeout" in warned[0], warned
        assert settings.flush_timeout == 3600.0
        delivery = make_delivery(settings)
        payloads = task_payloads(n_tf=1)
        for p in payloads:
            delivery.submit(p)
        started = time.monotonic()
        assert delivery.close(settings.flush_timeout) is True
        assert time.monotonic() - started < 30
        assert delivery.stats()["spooled"] == len(payloads)
        server.up()
        report = replay(settings.spool_dir, server.url, TOKEN, timeout=2.0, attempts=1)
        assert report.complete and report.sent == len(payloads)
        assert server.bodies() == [p.to_json() for p in payloads]
    finally:
        server.close()


@pytest.mark.parametrize("suffix", ["/base?tenant=1", "/base#frag", "?token=abc"])
def test_a_server_url_with_a_query_string_is_refused_with_one_warning(
        tmp_path: Any, caplog: pytest.LogCaptureFixture, suffix: str) -> None:
    server = FaultyServer(token=TOKEN)
    try:
        with caplog.at_level(logging.WARNING, logger="definity_spark.settings"):
            settings = _settings(tmp_path, {"spark.definity.server": server.url + suffix})
        warned = _warnings(caplog)
        assert len(warned) == 1 and "spark.definity.server" in warned[0], warned
        assert "query string" in warned[0]
        assert "abc" not in warned[0]
        assert settings.server_url is None
        delivery = make_delivery(settings)  # the local events file, not the server
        for p in task_payloads(n_tf=1):
            delivery.submit(p)
        assert delivery.close(5.0)
        assert server.requests_seen == 0
        assert delivery.stats()["sent"] == 4 and not spool_files(settings.spool_dir)
    finally:
        server.close()
