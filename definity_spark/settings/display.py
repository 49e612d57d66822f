"""How a setting's value is shown: doctor, the docs, and the warnings about bad values.

The token is never shown (``MASK``), nor the credentials of a URL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from definity_spark.settings.definitions import (
    SOURCE_CONF,
    SOURCE_ENV,
    SOURCE_OVERRIDE,
    URL,
    SettingDef,
    _number_text,
)

logger = logging.getLogger("definity_spark.settings")

MASK = "***"
NOT_SET = "not set"


def _display(d: SettingDef, value: Any) -> str:
    """A value as doctor and the docs show it; the token is masked."""
    if value is None:
        return NOT_SET
    if d.secret:
        return MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return ",".join(f"{k}:{v}" for k, v in value.items()) or "none"
    if d.kind == URL:
        return _mask_userinfo(str(value))
    return str(value)


def _mask_userinfo(url: str) -> str:
    """``https://user:pw@host`` -> ``https://***@host`` (also without a scheme:
    ``user:pw@host``); sensitive query parameters (``?token=...``) redacted too."""
    from definity_spark.redaction import mask_url

    return mask_url(url) or url


def _display_bad(d: SettingDef, raw: Any) -> str:
    """The bad value for a warning: never the token, never URL credentials, bounded."""
    if d.secret:
        return "(value hidden)"
    text = raw if isinstance(raw, str) else repr(raw)
    text = _mask_userinfo(text)
    if len(text) > 200:
        text = text[:200] + "..."
    return repr(text) if isinstance(raw, str) else text


_SOURCE_WORDS = {
    SOURCE_OVERRIDE: "activate() keyword",
    SOURCE_CONF: "Spark conf",
    SOURCE_ENV: "environment variable",
}


def _warn_bad(d: SettingDef, source: str, key: str, raw: Any, expected: str,
              default: Any) -> None:
    bad = _display_bad(d, raw)
    logger.warning(
        "definity-spark: ignoring %s %s=%s: expected %s; using the default (%s)",
        _SOURCE_WORDS[source], key, bad, expected, _display(d, default),
    )


def _warn_above_maximum(d: SettingDef, source: str, key: str, raw: Any,
                        maximum: float) -> None:
    logger.warning(
        "definity-spark: %s %s=%s is above the largest useful value; using %s",
        _SOURCE_WORDS[source], key, _display_bad(d, raw), _number_text(maximum, d.kind),
    )
