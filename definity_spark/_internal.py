"""Containment: every boundary between the plugin and the host program goes through here.

``contained(what)`` is a context manager that swallows and logs any exception raised
inside the plugin (the first occurrence of each kind with its traceback, later ones
rate-limited), so that nothing the plugin does can reach the user's code or Spark's
listener bus. Tests set ``DEFINITY_STRICT=1`` (or call ``set_strict(True)``) to re-raise
instead.

All output goes through the ``definity_spark`` logger; nothing is printed to stdout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator

# No NullHandler on purpose: when the host configured no logging at all, Python's
# last-resort handler shows our WARNING/ERROR lines (e.g. "the Definity server rejected
# the token") on stderr; when it did, they follow the host's configuration. Never stdout.
logger = logging.getLogger("definity_spark")

_strict = os.environ.get("DEFINITY_STRICT", "").lower() in ("1", "true", "yes")
_lock = threading.Lock()
# (what, exception type) -> (first seen, last logged, count)
_seen: dict[tuple[str, str], tuple[float, float, int]] = {}
RATE_LIMIT_SECONDS = 60.0


def set_strict(strict: bool) -> None:
    global _strict
    _strict = strict


def is_strict() -> bool:
    return _strict


def internal_error_counts() -> dict[str, int]:
    """How many internal errors of each kind were contained (for a task metric)."""
    with _lock:
        return {f"{what}:{exc}": n for (what, exc), (_, _, n) in _seen.items()}


def log_internal_error(what: str, exc: BaseException) -> None:
    """Log an internal error: first of its kind with traceback, then once a minute."""
    key = (what, type(exc).__name__)
    now = time.monotonic()
    with _lock:
        first, last, count = _seen.get(key, (now, 0.0, 0))
        count += 1
        should_log = count == 1 or now - last >= RATE_LIMIT_SECONDS
        _seen[key] = (first, now if should_log else last, count)
    if not should_log:
        return
    try:
        if count == 1:
            logger.warning("definity-spark internal error in %s (contained): %s: %s",
                           what, type(exc).__name__, exc, exc_info=exc)
        else:
            logger.warning("definity-spark internal error in %s (contained, %d so far): %s: %s",
                           what, count, type(exc).__name__, exc)
    except Exception:  # pragma: no cover - logging itself must never raise into the host
        pass


@contextlib.contextmanager
def contained(what: str) -> Iterator[None]:
    """Run a block; log and swallow any exception it raises (re-raise in strict mode)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the point is to catch everything
        log_internal_error(what, exc)
        if _strict:
            raise


def configure_logging(level: str) -> None:
    """Set the level of the ``definity_spark`` logger (handlers are the host's business)."""
    with contained("configure_logging"):
        logger.setLevel(level.upper())
