"""The HTTP transport: POST a payload to the Definity server, with retries.

One keep-alive connection per transport (made again in a forked child), bearer
token, JSON body, a timeout per attempt (to connect, and to read), and at most ``attempts``
tries in total (the first included). Retried: connection errors, timeouts, resets, 5xx and
429; the sleep between tries is exponential with jitter (``attempt_sleep * 2**(n-1)``,
between half and all of it), or the server's ``Retry-After`` for a 429/503 (capped). Not
retried: any other 4xx. A 401/403 is logged once per transport ("the Definity server
rejected the token"), a 404/405/410 or a redirect once too ("is ... the base URL of the
Definity server?"; redirects are not followed), other refusals once per status code. Sleeps
wait on an ``abort`` event, so ``close()`` can cut them short and shutdown stays bounded.

Without a proxy, a report goes through the standard library's ``http.client`` (which urllib3
is built on), on one keep-alive connection checked before each reuse (the server may have
closed it): urllib3's pool, request and response layers cost ~80 us of CPU per report on top
of http.client's ~55 us (loopback, warm; ~3x both in a busy driver), CPU taken from the
Spark driver's cores. Through a proxy, urllib3 (CONNECT tunnels, SOCKS, proxy credentials),
not through requests: requests' own machinery per request (header merging, URL parsing,
adapters, cookies, environment and ``~/.netrc`` look-ups) costs more still. Neither retries
nor follows redirects here: this module's loop does the retrying. What requests read from
the environment is read once per process, at the first report: the proxy for the server's
URL (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, with requests' own rules;
credentials in the proxy URL become a ``Proxy-Authorization`` header; https goes through a
CONNECT tunnel), and, when no CA bundle is configured, ``REQUESTS_CA_BUNDLE`` /
``CURL_CA_BUNDLE``. ``~/.netrc`` is never read (requests would send its credentials in place
of the token).

TLS certificates are verified by default, against the CAs requests would use (certifi's
bundle, else the system store), or ``ca_bundle`` for a private CA; they are loaded once per
transport and process, not at every new connection. Without a proxy the host name is checked
by Python's ``ssl`` (``check_hostname``), through a proxy by urllib3. Plain http to a host
that is not loopback works; the warning about it is given once by the settings room
(``settings.resolve``), where the URL is checked.

The token appears in the ``Authorization`` header and nowhere else: not in log lines,
not in errors (server answers are scrubbed of it before they are logged). The credentials
of a proxy URL appear in the ``Proxy-Authorization`` header only.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any

import urllib3
from urllib3.util import make_headers, parse_url
from urllib3.util.ssl_ import create_urllib3_context
from urllib3.util.wait import wait_for_read

from definity_spark.delivery.transport import (
    ABORTED,
    AUTH,
    INVALID,
    MISDIRECTED,
    NETWORK,
    REJECTED,
    SENT,
    TLS,
    SendResult,
    Transport,
)
from definity_spark.redaction import mask_url
from definity_spark.wire import ENDPOINTS

log = logging.getLogger("definity_spark.delivery")

MAX_RETRY_AFTER = 60.0   # never wait longer than this for one Retry-After
MAX_BACKOFF = 60.0       # nor for one exponential step
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
# Answers that say "wrong URL" rather than "wrong payload": every payload would get the same,
# so they are kept (spooled) for a replay to the right server instead of being dropped.
# Redirects are not followed: an HTTP client would turn a redirected POST into a GET and
# drop the Authorization header on a host change.
_MISDIRECTED_STATUS = frozenset({404, 405, 410}) | frozenset(range(300, 400))
# The payload's idempotency key (IETF draft "The Idempotency-Key HTTP Header Field"): the
# same on every try, replay and recovery of a payload, so a server can drop a duplicate.
IDEMPOTENCY_HEADER = "Idempotency-Key"
# The most of an answer that is read: the server's answers are small JSON; a bigger one
# (a proxy's HTML error page...) is cut, and its connection closed rather than drained.
_ANSWER_LIMIT = 64 * 1024

try:  # the distribution version, for the User-Agent
    from importlib.metadata import version as _dist_version

    _VERSION = _dist_version("definity-spark")
except Exception:  # noqa: BLE001 - running from a checkout
    _VERSION = "0"
USER_AGENT = f"definity-spark/{_VERSION}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def backoff_delay(attempt: int, base: float, rng: random.Random | None = None) -> float:
    """Sleep after failed attempt number ``attempt`` (1-based): exponential, with jitter.

    "Equal jitter": half of the exponential step is fixed, the other half random, so that
    many plugins restarted by one outage do not retry in lockstep but never retry at once.
    """
    step = min(MAX_BACKOFF, max(0.0, base) * (2 ** max(0, attempt - 1)))
    r = (rng or random).random()
    return step / 2 + r * step / 2


class HttpTransport(Transport):
    kind = "http"

    def __init__(
        self,
        server_url: str,
        token: str | None = None,
        timeout: float = 5.0,
        attempts: int = 3,
        attempt_sleep: float = 1.0,
        verify_tls: bool = True,
        ca_bundle: str | None = None,
        abort: threading.Event | None = None,
    ) -> None:
        self.base_url = server_url.rstrip("/")
        # for log lines and describe(): never the URL's user-info or a key parameter
        self._shown_url = mask_url(self.base_url) or ""
        self._token = token or None
        self.timeout = max(0.001, float(timeout))
        self.attempts = max(1, int(attempts))
        self.attempt_sleep = max(0.0, float(attempt_sleep))
        self.abort = abort if abort is not None else threading.Event()
        self._verify: bool | str = ca_bundle if ca_bundle else bool(verify_tls)
        self._urlopen_timeout = urllib3.Timeout(connect=self.timeout, read=self.timeout)
        self._headers = {"User-Agent": USER_AGENT, "Content-Type": "application/json",
                         "Accept": "application/json"}
        if self._token:
            self._headers["Authorization"] = f"Bearer {self._token}"
        self._pool: urllib3.PoolManager | None = None
        self._pool_pid: int | None = None  # the process the route was chosen in
        # Without a proxy: through http.client, on this connection (module docstring),
        # with this SSL context for https (its CAs loaded once per process)
        self._direct: http.client.HTTPConnection | None = None
        self._direct_context: ssl.SSLContext | None = None
        base = parse_url(self.base_url)
        self._base_path = (base.path or "").rstrip("/") if base.query is None else None
        self._token_rejection_logged = False
        self._misdirection_logged = False
        self._tls_failure_logged = False
        self._rejections_logged: set[int] = set()
        self._quiet_insecure_warnings()

    # ------------------------------------------------------------------ setup
    def describe(self) -> str:
        return self._shown_url

    def _quiet_insecure_warnings(self) -> None:
        # The settings room already warned once that verification is off (the user asked
        # for it explicitly); without this, urllib3 would print a warning to stderr on
        # every request.
        if self._verify is False:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def _route(self) -> urllib3.PoolManager | None:
        """Chosen once per process (a forked child must not share the parent's sockets):
        the environment's proxy for the server's URL, if it has one (read here, once),
        through urllib3's pool; else http.client's connection (None), unless the URL has a
        query string (the pool then)."""
        pid = os.getpid()
        if self._pool_pid != pid:
            # requests' rules for the proxy variables (select_proxy: scheme://host, scheme,
            # all://host, all; NO_PROXY: hosts, domains, CIDR blocks). Imported here, once
            # per process, rather than at activation.
            from requests.utils import get_environ_proxies, select_proxy

            proxy = select_proxy(self.base_url, get_environ_proxies(self.base_url))
            direct = not proxy and self._base_path is not None
            self._pool = None if direct else self._make_pool(proxy)
            self._direct = None
            self._direct_context = None
            self._pool_pid = pid
        return self._pool

    def _new_direct(self) -> http.client.HTTPConnection:
        """The connection without a proxy: http.client's, with the timeout for connecting
        and for each read, TCP_NODELAY (http.client sets it), and for https the pool's
        certificate checking plus the host name's (urllib3 checks it itself)."""
        url = parse_url(self.base_url)
        host = (url.host or "").strip("[]")
        if url.scheme == "https":
            context = self._direct_context
            if context is None:
                context = self._tls_options().get("ssl_context")
                if context is None:  # verification off (the settings room warned once)
                    context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
                else:
                    context.check_hostname = True
                self._direct_context = context
            return http.client.HTTPSConnection(host, url.port or 443, timeout=self.timeout,
                                               context=context)
        return http.client.HTTPConnection(host, url.port or 80, timeout=self.timeout)

    def _make_pool(self, proxy: str | None) -> urllib3.PoolManager:
        """A pool of one keep-alive connection to the server, through ``proxy`` if set."""
        from requests.utils import get_auth_from_url, prepend_scheme_if_needed

        options: dict[str, Any] = {"num_pools": 1, "maxsize": 1}
        if self.base_url.lower().startswith("https:"):
            options.update(self._tls_options())
        if not proxy:
            return urllib3.PoolManager(**options)
        proxy = prepend_scheme_if_needed(proxy, "http")
        username, password = get_auth_from_url(proxy)
        # urllib3 gets the proxy URL without its credentials, so that no error message
        # can carry them; they travel in the header only.
        bare = parse_url(proxy)._replace(auth=None).url
        if proxy.lower().startswith("socks"):
            try:
                from urllib3.contrib.socks import SOCKSProxyManager
            except ImportError as exc:
                raise urllib3.exceptions.HTTPError(
                    "Missing dependencies for SOCKS support (PySocks is not installed)") from exc
            return SOCKSProxyManager(bare, username=username or None,
                                     password=password or None, **options)
        if username:
            options["proxy_headers"] = make_headers(
                proxy_basic_auth=f"{username}:{password}")
        return urllib3.ProxyManager(bare, **options)

    def _tls_options(self) -> dict[str, Any]:
        """Certificate checking for the pool. The CAs are loaded into one SSL context here,
        not from a file at every new connection (~18 ms of CPU for certifi's bundle; the
        server or a proxy closing idle connections would make that a cost of every report)."""
        if self._verify is False:
            return {"cert_reqs": "CERT_NONE"}
        if self._verify is True:
            cafile = (os.environ.get("REQUESTS_CA_BUNDLE")
                      or os.environ.get("CURL_CA_BUNDLE") or _default_ca_bundle())
        else:
            cafile = self._verify
        context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
        if cafile is None:
            context.load_default_certs()
        elif os.path.isdir(cafile):
            context.load_verify_locations(capath=cafile)
        else:
            context.load_verify_locations(cafile=cafile)
        return {"cert_reqs": "CERT_REQUIRED", "ssl_context": context}

    def _scrub(self, text: str) -> str:
        if self._token and self._token in text:
            text = text.replace(self._token, "***")
        return text

    # ------------------------------------------------------------------ sending
    def send(self, endpoint: str, body: Mapping[str, Any],
             key: str | None = None) -> SendResult:
        if endpoint not in ENDPOINTS:
            # The URL is the base URL + the endpoint: anything else (a spool record saying
            # "@attacker.example/steal") could send the token to another host.
            return SendResult(INVALID, None, f"not a reporting endpoint: {endpoint[:80]!r}", 0)
        try:
            data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            return SendResult(INVALID, None, f"{type(exc).__name__}: {exc}", 0)
        # The same key on every try: a request the server stored but answered too late is
        # recognised when it comes again.
        headers = self._headers if not key else dict(self._headers, **{IDEMPOTENCY_HEADER: key})
        last = SendResult(NETWORK, detail="not attempted")
        for attempt in range(1, self.attempts + 1):
            if attempt > 1 and self.abort.is_set():
                return SendResult(ABORTED, last.status, last.detail, attempt - 1)
            retry_after: float | None = None
            try:
                status, answer_headers, answer = self._post(endpoint, data, headers)
            except urllib3.exceptions.NewConnectionError as exc:
                # A subclass of ConnectTimeoutError, but a refusal or a name that does not
                # resolve, not a timeout.
                last = SendResult(NETWORK, None, self._scrub(_short_error(exc)), attempt)
            except (urllib3.exceptions.TimeoutError, socket.timeout) as exc:
                last = SendResult(NETWORK, None, f"timeout after {self.timeout:g}s "
                                  f"({type(exc).__name__})", attempt)
            except (urllib3.exceptions.SSLError, ssl.SSLError) as exc:
                detail = self._scrub(_short_error(exc))
                if "certificate verify failed" in str(exc).lower() or \
                        "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    # Retrying cannot fix a certificate the client does not trust.
                    self._log_tls_failure(detail)
                    return SendResult(TLS, None, detail, attempt)
                last = SendResult(NETWORK, None, detail, attempt)
            except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                last = SendResult(NETWORK, None, self._scrub(_short_error(exc)), attempt)
            else:
                if 200 <= status < 300:
                    return SendResult(SENT, status, "", attempt)
                text = self._scrub(answer.decode("utf-8", "replace")[:300].strip())
                location = self._scrub(answer_headers.get("Location") or "")
                if status in (401, 403):
                    self._log_token_rejected(status, endpoint)
                    return SendResult(AUTH, status, text, attempt)
                if status in _MISDIRECTED_STATUS:
                    self._log_misdirected(status, endpoint, location)
                    return SendResult(MISDIRECTED, status, text or location, attempt)
                if status not in _RETRYABLE_STATUS:
                    # other 4xx (and 1xx): a refusal of this payload
                    self._log_rejected(status, endpoint, text)
                    return SendResult(REJECTED, status, text, attempt)
                retry_after = parse_retry_after(answer_headers.get("Retry-After"))
                last = SendResult(NETWORK, status, f"HTTP {status}", attempt, retry_after)
            log.debug("definity-spark: attempt %d/%d of %s failed: %s",
                      attempt, self.attempts, endpoint, last.detail)
            if attempt == self.attempts:
                break
            delay = retry_after if retry_after is not None else backoff_delay(
                attempt, self.attempt_sleep)
            if delay > 0 and self.abort.wait(delay):
                return SendResult(ABORTED, last.status, last.detail, attempt)
        return last

    def _post(self, endpoint: str, data: bytes, headers: Mapping[str, str]
              ) -> tuple[int, Mapping[str, str], bytes]:
        """One attempt: the status, headers and (up to ``_ANSWER_LIMIT``) body of the answer.

        The connection goes back to the pool for the next report: kept alive when the
        answer was read whole, closed when it was cut."""
        pool: Any = self._route()
        if pool is None:
            return self._post_direct(self._base_path + endpoint, data,  # type: ignore[operator]
                                     headers)
        resp = pool.urlopen(
            "POST", self.base_url + endpoint, body=data, headers=dict(headers),
            timeout=self._urlopen_timeout, retries=False, redirect=False,
            preload_content=False)
        try:
            answer = resp.read(_ANSWER_LIMIT)
            if not resp.closed:
                resp.close()
        finally:
            resp.release_conn()
        return resp.status, resp.headers, answer

    def _post_direct(self, path: str, data: bytes, headers: Mapping[str, str]
                     ) -> tuple[int, Mapping[str, str], bytes]:
        """``_post`` without a proxy: on the one connection, opened again when the server
        closed it (readable while idle: its end, or bytes nobody asked for) or when an
        answer was not read whole."""
        conn = self._direct
        if conn is not None and conn.sock is not None and wait_for_read(conn.sock, 0.0):
            conn.close()  # (http.client opens it again at the next request)
        if conn is None:
            conn = self._direct = self._new_direct()
        try:
            conn.request("POST", path, body=data, headers=headers)
            resp = conn.getresponse()
            answer = resp.read(_ANSWER_LIMIT)
            if not resp.isclosed():  # cut: the rest is never read, so not reused
                conn.close()
        except BaseException:
            conn.close()
            raise
        return resp.status, resp.headers, answer

    def _log_token_rejected(self, status: int, endpoint: str) -> None:
        if self._token_rejection_logged:
            return
        self._token_rejection_logged = True
        log.error(
            "definity-spark: the Definity server rejected the token (HTTP %d) at %s%s; "
            "reports are not retried but kept in the spool; fix spark.definity.token / "
            "DEFINITY_TOKEN and run `definity-spark replay`",
            status, self._shown_url, endpoint,
        )

    def _log_tls_failure(self, detail: str) -> None:
        if self._tls_failure_logged:
            return
        self._tls_failure_logged = True
        log.error(
            "definity-spark: the TLS certificate of %s could not be verified (%s); reports "
            "are kept in the spool; point spark.definity.server.caBundle / "
            "DEFINITY_SERVER_CA_BUNDLE to the CA that signed it and run `definity-spark "
            "replay`", self._shown_url, detail)

    def _log_misdirected(self, status: int, endpoint: str, location: str) -> None:
        if self._misdirection_logged:
            return
        self._misdirection_logged = True
        log.error(
            "definity-spark: %s%s answered HTTP %d%s: is spark.definity.server / "
            "DEFINITY_SERVER_URL the base URL of the Definity server? Reports are kept in "
            "the spool; fix the URL and run `definity-spark replay`",
            self._shown_url, endpoint, status,
            f" (redirect to {mask_url(location)})" if location else "",
        )

    def _log_rejected(self, status: int, endpoint: str, text: str) -> None:
        if status in self._rejections_logged:
            return
        self._rejections_logged.add(status)
        log.error("definity-spark: the Definity server refused a %s report (HTTP %d: %s); "
                  "not retried (further HTTP %d refusals are counted, not logged)",
                  endpoint, status, text or "no message", status)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        direct, self._direct = self._direct, None
        self._pool_pid = None
        if direct is not None:
            try:
                direct.close()
            except Exception:  # noqa: BLE001
                pass
        if pool is not None:
            try:
                pool.clear()
            except Exception:  # noqa: BLE001
                pass


def _default_ca_bundle() -> str | None:
    """certifi's bundle, the one requests verifies against; None: the system's CAs."""
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


def _short_error(exc: BaseException) -> str:
    # urllib3's errors can nest their cause; the innermost reason is what a user can act on.
    reason = exc
    for _ in range(4):
        inner = getattr(reason, "reason", None) or (reason.args[0] if reason.args else None)
        if isinstance(inner, BaseException) and inner is not reason:
            reason = inner
        else:
            break
    text = f"{type(exc).__name__}: {reason}"
    return text[:300]
