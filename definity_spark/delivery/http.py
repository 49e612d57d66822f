"""The HTTP transport: POST a payload to the Definity server, with retries.

One keep-alive ``requests.Session`` per transport (recreated in a forked child), bearer
token, JSON body, a timeout per attempt, and at most ``attempts`` tries in total (the
first included). Retried: connection errors, timeouts, resets, 5xx and 429; the sleep
between tries is exponential with jitter (``attempt_sleep * 2**(n-1)``, between half and
all of it), or the server's ``Retry-After`` for a 429/503 (capped). Not retried: any other
4xx. A 401/403 is logged once per transport ("the Definity server rejected the token"),
a 404/405/410 or a redirect once too ("is ... the base URL of the Definity server?"; redirects
are not followed), other refusals once per status code. Sleeps wait on an ``abort``
event, so ``close()`` can cut them short and shutdown stays bounded.

TLS certificates are verified by default (``ca_bundle`` for a private CA). Plain http to a
host that is not loopback works; the warning about it is given once by the settings room
(``settings.resolve``), where the URL is checked.

The token appears in the ``Authorization`` header and nowhere else: not in log lines,
not in errors (server answers are scrubbed of it before they are logged).
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

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

log = logging.getLogger("definity_spark.delivery")

MAX_RETRY_AFTER = 60.0   # never wait longer than this for one Retry-After
MAX_BACKOFF = 60.0       # nor for one exponential step
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))
# Answers that say "wrong URL" rather than "wrong payload": every payload would get the same,
# so they are kept (spooled) for a replay to the right server instead of being dropped.
# Redirects are not followed: requests would turn a redirected POST into a GET and drop
# the Authorization header on a host change.
_MISDIRECTED_STATUS = frozenset({404, 405, 410}) | frozenset(range(300, 400))

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
        self._token = token or None
        self.timeout = max(0.001, float(timeout))
        self.attempts = max(1, int(attempts))
        self.attempt_sleep = max(0.0, float(attempt_sleep))
        self.abort = abort if abort is not None else threading.Event()
        self._verify: bool | str = ca_bundle if ca_bundle else bool(verify_tls)
        self._session: requests.Session | None = None
        self._session_pid: int | None = None
        self._token_rejection_logged = False
        self._misdirection_logged = False
        self._tls_failure_logged = False
        self._rejections_logged: set[int] = set()
        self._quiet_insecure_warnings()

    # ------------------------------------------------------------------ setup
    def describe(self) -> str:
        return self.base_url

    def _quiet_insecure_warnings(self) -> None:
        # The settings room already warned once that verification is off (the user asked
        # for it explicitly); without this, urllib3 would print a warning to stderr on
        # every request.
        if self._verify is not False:
            return
        try:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        except Exception:  # noqa: BLE001
            pass

    def _get_session(self) -> requests.Session:
        pid = os.getpid()
        if self._session is None or self._session_pid != pid:
            # A forked child must not share the parent's sockets.
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers["User-Agent"] = USER_AGENT
            session.headers["Content-Type"] = "application/json"
            session.headers["Accept"] = "application/json"
            if self._token:
                session.headers["Authorization"] = f"Bearer {self._token}"
            # The environment is read once here, not on every POST (requests would look up
            # the proxy variables and ~/.netrc per request; a .netrc entry for the server
            # would even replace the bearer token): proxies from HTTP(S)_PROXY / NO_PROXY,
            # and, when no CA bundle is configured, REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE as
            # requests would. Without trust_env, nothing overrides session.verify.
            session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
            session.trust_env = False
            session.verify = self._verify
            if self._verify is True:
                session.verify = (os.environ.get("REQUESTS_CA_BUNDLE")
                                  or os.environ.get("CURL_CA_BUNDLE") or True)
            self._session = session
            self._session_pid = pid
        return self._session

    def _scrub(self, text: str) -> str:
        if self._token and self._token in text:
            text = text.replace(self._token, "***")
        return text

    # ------------------------------------------------------------------ sending
    def send(self, endpoint: str, body: Mapping[str, Any]) -> SendResult:
        try:
            data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            return SendResult(INVALID, None, f"{type(exc).__name__}: {exc}", 0)
        url = self.base_url + endpoint
        last = SendResult(NETWORK, detail="not attempted")
        for attempt in range(1, self.attempts + 1):
            if attempt > 1 and self.abort.is_set():
                return SendResult(ABORTED, last.status, last.detail, attempt - 1)
            retry_after: float | None = None
            try:
                resp = self._get_session().post(url, data=data, timeout=self.timeout,
                                                allow_redirects=False)
            except requests.Timeout as exc:
                last = SendResult(NETWORK, None, f"timeout after {self.timeout:g}s "
                                  f"({type(exc).__name__})", attempt)
            except requests.exceptions.SSLError as exc:
                detail = self._scrub(_short_error(exc))
                if "certificate verify failed" in str(exc).lower() or \
                        "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    # Retrying cannot fix a certificate the client does not trust.
                    self._log_tls_failure(detail)
                    return SendResult(TLS, None, detail, attempt)
                last = SendResult(NETWORK, None, detail, attempt)
            except requests.RequestException as exc:
                last = SendResult(NETWORK, None, self._scrub(_short_error(exc)), attempt)
            else:
                status = resp.status_code
                try:
                    if 200 <= status < 300:
                        return SendResult(SENT, status, "", attempt)
                    text = self._scrub((resp.text or "")[:300].strip())
                    location = self._scrub(resp.headers.get("Location") or "")
                finally:
                    resp.close()
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
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                last = SendResult(NETWORK, status, f"HTTP {status}", attempt)
            log.debug("definity-spark: attempt %d/%d of %s failed: %s",
                      attempt, self.attempts, endpoint, last.detail)
            if attempt == self.attempts:
                break
            delay = retry_after if retry_after is not None else backoff_delay(
                attempt, self.attempt_sleep)
            if delay > 0 and self.abort.wait(delay):
                return SendResult(ABORTED, last.status, last.detail, attempt)
        return last

    def _log_token_rejected(self, status: int, endpoint: str) -> None:
        if self._token_rejection_logged:
            return
        self._token_rejection_logged = True
        log.error(
            "definity-spark: the Definity server rejected the token (HTTP %d) at %s%s; "
            "reports are not retried but kept in the spool; fix spark.definity.token / "
            "DEFINITY_TOKEN and run `definity-spark replay`",
            status, self.base_url, endpoint,
        )

    def _log_tls_failure(self, detail: str) -> None:
        if self._tls_failure_logged:
            return
        self._tls_failure_logged = True
        log.error(
            "definity-spark: the TLS certificate of %s could not be verified (%s); reports "
            "are kept in the spool; point spark.definity.server.caBundle / "
            "DEFINITY_SERVER_CA_BUNDLE to the CA that signed it and run `definity-spark "
            "replay`", self.base_url, detail)

    def _log_misdirected(self, status: int, endpoint: str, location: str) -> None:
        if self._misdirection_logged:
            return
        self._misdirection_logged = True
        log.error(
            "definity-spark: %s%s answered HTTP %d%s: is spark.definity.server / "
            "DEFINITY_SERVER_URL the base URL of the Definity server? Reports are kept in "
            "the spool; fix the URL and run `definity-spark replay`",
            self.base_url, endpoint, status,
            f" (redirect to {location})" if location else "",
        )

    def _log_rejected(self, status: int, endpoint: str, text: str) -> None:
        if status in self._rejections_logged:
            return
        self._rejections_logged.add(status)
        log.error("definity-spark: the Definity server refused a %s report (HTTP %d: %s); "
                  "not retried (further HTTP %d refusals are counted, not logged)",
                  endpoint, status, text or "no message", status)

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            try:
                session.close()
            except Exception:  # noqa: BLE001
                pass


def _short_error(exc: BaseException) -> str:
    # requests' messages nest urllib3's; the innermost reason is what a user can act on.
    reason = exc
    for _ in range(4):
        inner = getattr(reason, "reason", None) or (reason.args[0] if reason.args else None)
        if isinstance(inner, BaseException) and inner is not reason:
            reason = inner
        else:
            break
    text = f"{type(exc).__name__}: {reason}"
    return text[:300]
