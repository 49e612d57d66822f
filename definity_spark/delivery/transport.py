"""The transport contract: how one payload body reaches its destination.

Small classes behind one contract (as OpenLineage's client transports): ``send(endpoint,
body, key) -> SendResult`` and ``close()``. ``key`` is the payload's idempotency key: the
same for every try, replay and recovery of one payload, never the same for two payloads
(``Delivery`` makes it), so that a receiver can drop a duplicate. ``send`` runs on the
delivery worker's thread only,
does its own retries, and never raises for a delivery failure: the outcome is a
``SendResult`` whose ``outcome`` says what happened, so that the delivery can count the
loss by reason and decide whether the payload goes to the spool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Outcomes of one send (after all attempts).
SENT = "sent"            # accepted (2xx) or written
NETWORK = "network"      # retryable failure that outlasted the attempts: connection error,
                         # timeout, reset, 5xx, 429
AUTH = "auth"            # 401/403: the token was rejected; spooled for a replay with a fixed one
MISDIRECTED = "misdirected"  # 3xx/404/405/410: the URL is not a Definity server's; spooled
                             # for a replay to the right URL
REJECTED = "rejected"    # any other 4xx: permanent refusal of this payload, not retried
TLS = "tls"              # the server's certificate failed verification: a configuration
                         # problem (ca_bundle), not a passing one; spooled, not retried
IO_ERROR = "io_error"    # the local events file could not be written
INVALID = "invalid"      # the body is not JSON-serialisable (a bug upstream): dropped, counted
ABORTED = "aborted"      # shutdown interrupted the attempts; treated like NETWORK


@dataclass(frozen=True)
class SendResult:
    outcome: str
    status: int | None = None
    detail: str = ""
    attempts: int = 0
    retry_after: float | None = None  # the server's Retry-After of the last answer, if any

    @property
    def ok(self) -> bool:
        return self.outcome == SENT


class Transport:
    """The contract. ``kind`` names the transport in logs and in ``make_transport``."""

    kind = "base"

    def send(self, endpoint: str, body: Mapping[str, Any],
             key: str | None = None) -> SendResult:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - optional
        pass

    def describe(self) -> str:
        """Where payloads go, for log lines (never contains the token)."""
        return self.kind
