"""TLS: certificates are verified by default; ``ca_bundle`` trusts a private CA.

A real https server on loopback with a self-signed certificate made by ``openssl``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from definity_spark.delivery.replay import replay

try:
    from faulty_server import FaultyServer
    from test_delivery import TOKEN, make_settings, spooled_bodies, submit_all
except ImportError:  # tests/ imported as a package
    from tests.faulty_server import FaultyServer
    from tests.test_delivery import TOKEN, make_settings, spooled_bodies, submit_all

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: Any) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture()
def https_server(certificate: tuple[str, str]) -> Iterator[FaultyServer]:
    srv = FaultyServer(token=TOKEN, tls=certificate)
    yield srv
    srv.close()


def test_untrusted_certificate_is_refused_once_and_spooled(https_server: FaultyServer,
                                                           tmp_path: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="definity_spark")
    settings = make_settings(tmp_path, server_url=https_server.url, server_attempts=3)
    delivery, payloads = submit_all(settings)
    assert delivery.close(5.0)
    assert https_server.records == []  # verification is on by default: nothing went out
    assert sum("could not be verified" in r.getMessage() for r in caplog.records) == 1
    assert delivery.stats()["spooled"] == len(payloads)
    assert spooled_bodies(settings.spool_dir) == [p.to_json() for p in payloads]
    assert TOKEN not in caplog.text


def test_ca_bundle_trusts_the_private_ca(https_server: FaultyServer, tmp_path: Any,
                                         certificate: tuple[str, str]) -> None:
    settings = make_settings(tmp_path, server_url=https_server.url, ca_bundle=certificate[0])
    delivery, payloads = submit_all(settings)
    assert delivery.close(5.0)
    assert https_server.bodies() == [p.to_json() for p in payloads]


def test_replay_with_the_ca_bundle_after_a_tls_refusal(https_server: FaultyServer,
                                                       tmp_path: Any,
                                                       certificate: tuple[str, str]) -> None:
    settings = make_settings(tmp_path, server_url=https_server.url)
    delivery, payloads = submit_all(settings)
    delivery.close(5.0)
    refused = replay(settings.spool_dir, https_server.url, TOKEN, attempts=1)
    assert refused.stopped_by == "tls" and refused.sent == 0
    fixed = replay(settings.spool_dir, https_server.url, TOKEN, attempts=1,
                   ca_bundle=certificate[0])
    assert fixed.complete and https_server.bodies() == [p.to_json() for p in payloads]


def test_verification_off_sends_without_a_warning_per_request(
        https_server: FaultyServer, tmp_path: Any, recwarn: Any) -> None:
    settings = make_settings(tmp_path, server_url=https_server.url, verify_tls=False)
    delivery, payloads = submit_all(settings)
    assert delivery.close(5.0)
    assert https_server.bodies() == [p.to_json() for p in payloads]
    assert not [w for w in recwarn if "Unverified HTTPS" in str(w.message)]


def test_a_ca_bundle_variable_of_the_environment_is_trusted(
        https_server: FaultyServer, tmp_path: Any, certificate: tuple[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As requests would: without a configured CA bundle, REQUESTS_CA_BUNDLE (or
    CURL_CA_BUNDLE) replaces the default CAs."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.setenv("CURL_CA_BUNDLE", certificate[0])
    settings = make_settings(tmp_path, server_url=https_server.url)
    delivery, payloads = submit_all(settings)
    assert delivery.close(5.0)
    assert https_server.bodies() == [p.to_json() for p in payloads]


def test_a_certificate_for_another_host_name_is_refused(tmp_path: Any, caplog: Any) -> None:
    """A certificate the CA bundle trusts, but issued for another name than the server's
    URL has: refused like an untrusted one (the host name is checked, not only the CA)."""
    caplog.set_level(logging.DEBUG, logger="definity_spark")
    cert, key = str(tmp_path / "other.pem"), str(tmp_path / "other-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", key, "-out", cert, "-subj", "/CN=definity.example",
                    "-addext", "subjectAltName=DNS:definity.example"],
                   check=True, capture_output=True)
    srv = FaultyServer(token=TOKEN, tls=(cert, key))
    try:
        settings = make_settings(tmp_path, server_url=srv.url, ca_bundle=cert)
        delivery, payloads = submit_all(settings)
        assert delivery.close(5.0)
        assert srv.records == []
        assert sum("could not be verified" in r.getMessage() for r in caplog.records) == 1
        assert delivery.stats()["spooled"] == len(payloads)
    finally:
        srv.close()


def test_the_cas_are_loaded_once_however_often_the_server_closes_the_connection(
        https_server: FaultyServer, certificate: tuple[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a proxy, no urllib3 pool is made, and a new connection (the server closed
    the idle one) reuses the SSL context: loading a CA bundle costs ~18 ms of CPU."""
    from urllib3.util.wait import wait_for_read

    from definity_spark.delivery.http import HttpTransport

    loads = []
    original = HttpTransport._tls_options

    def counted(self: HttpTransport) -> dict[str, Any]:
        loads.append(1)
        return original(self)

    monkeypatch.setattr(HttpTransport, "_tls_options", counted)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    https_server.idle_timeout = 0.2
    transport = HttpTransport(https_server.url, token=TOKEN, ca_bundle=certificate[0],
                              attempts=1)
    try:
        results = []
        for i in range(3):
            results.append(transport.send("/log/task", {"task_id": f"t-{i}"}))
            assert wait_for_read(transport._direct.sock, 10.0)  # the server closed it
        assert transport._pool is None
    finally:
        transport.close()
    assert [r.outcome for r in results] == ["sent"] * 3
    assert len({r.client_port for r in https_server.records}) == 3  # three connections
    assert len(loads) == 1
