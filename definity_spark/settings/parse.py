"""Parsing: a raw value from any source -> the typed value of its setting's kind.

Each kind of ``definitions`` has one parser in ``_PARSERS``; a parser raises
``_BadValue`` (with what was expected) or ``_AboveMaximum`` (a number past its
setting's largest useful value).
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import re
from collections.abc import Mapping
from typing import Any, Callable
from urllib.parse import urlsplit

from definity_spark.settings.definitions import (
    BOOL,
    FLOAT,
    INT,
    LOG_LEVEL,
    LOG_LEVELS,
    PATH,
    REGEX,
    SIZE,
    STR,
    TAGS,
    URL,
    SettingDef,
    _bound_text,
)

_TRUE_WORDS = ("true", "1", "yes")
_FALSE_WORDS = ("false", "0", "no")
_LOG_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}


class FrozenTags(dict):  # type: ignore[type-arg]
    """A read-only dict of tags (a dict, so ``json.dumps`` and ``dict(tags)`` just work)."""

    def _readonly(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("Settings.tags is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self) -> Any:
        return (FrozenTags, (dict(self),))

    def __repr__(self) -> str:
        return repr(dict(self))


# ---------------------------------------------------------------------------------------
# Parsing: raw value from any source -> typed value, or _BadValue(what was expected).
# ---------------------------------------------------------------------------------------


class _BadValue(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


class _AboveMaximum(Exception):
    """A number larger than its setting's ``maximum``: lowered to it (one warning)."""

    def __init__(self, maximum: float) -> None:
        super().__init__(maximum)
        self.maximum = maximum


def _check_maximum(d: SettingDef, value: float) -> None:
    # 1e308 s for a timeout would overflow the clocks it is added to (OverflowError at
    # every send); far beyond any useful value, so it is bounded rather than refused.
    if d.maximum is not None and value > d.maximum:
        raise _AboveMaximum(d.maximum)


def _parse_bool(d: SettingDef, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise _BadValue("a boolean: true/false, 1/0 or yes/no")


def _check_minimum(d: SettingDef, value: float, expected: str) -> None:
    if d.minimum is None:
        return
    if value < d.minimum or (d.min_exclusive and value == d.minimum):
        raise _BadValue(expected)


def _parse_int(d: SettingDef, raw: Any) -> int:
    return _parse_whole(d, raw, "an integer" + _bound_text(d), lambda text: int(text.strip()))


def _parse_whole(d: SettingDef, raw: Any, expected: str,
                 from_text: Callable[[str], int]) -> int:
    """An int setting's value: an int, a whole float, or text ``from_text`` parses (it
    raises ValueError), within the setting's bounds."""
    if isinstance(raw, bool):
        raise _BadValue(expected)
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str):
        try:
            value = from_text(raw)
        except ValueError:
            raise _BadValue(expected) from None
    else:
        raise _BadValue(expected)
    _check_minimum(d, value, expected)
    _check_maximum(d, value)
    return value


def _parse_float(d: SettingDef, raw: Any) -> float:
    expected = "a number" + _bound_text(d)
    if isinstance(raw, bool):
        raise _BadValue(expected)
    if isinstance(raw, (int, float)):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise _BadValue(expected) from None
    else:
        raise _BadValue(expected)
    if math.isnan(value) or (math.isinf(value) and d.maximum is None):
        raise _BadValue(expected)
    _check_minimum(d, value, expected)
    _check_maximum(d, value)
    return value


def _parse_str(d: SettingDef, raw: Any) -> str:
    if isinstance(raw, (datetime.date, datetime.datetime)):  # pit=date(2025, 9, 1)
        return raw.isoformat()
    if not isinstance(raw, str):
        raise _BadValue("a string")
    value = raw.strip()
    # The token goes into an HTTP header: whitespace or control characters would break
    # the header (or be a pasted mistake), so refuse them rather than fail at send time.
    if d.secret and any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise _BadValue("a token without whitespace or control characters")
    return value


def _parse_url(d: SettingDef, raw: Any) -> str:
    expected = "an http:// or https:// URL with a host, e.g. https://definity.example.com"
    if not isinstance(raw, str):
        raise _BadValue(expected)
    value = raw.strip()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise _BadValue(expected) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _BadValue(expected)
    if "?" in value or "#" in value:
        # The endpoints are appended to the base URL: https://h/base?tenant=1 would be
        # posted to as /base?tenant=1/log/task.
        raise _BadValue("a base URL without a query string or fragment (the endpoints "
                        "/log/... are appended to it), e.g. https://definity.example.com/base")
    return value.rstrip("/")


def parse_tags(text: str) -> dict[str, str]:
    """Parse ``"k:v, k:v"`` (whitespace tolerant; the value may contain ``:``).

    Raises ``ValueError`` for an item without ``:`` or with an empty key or value. Empty
    items (``"a:b,"``) are ignored; a repeated key keeps its last value.
    """
    tags: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"bad tag {item!r}")
        tags[key] = value
    return tags


def _parse_tags(d: SettingDef, raw: Any) -> FrozenTags:
    expected = "tags as key:value pairs separated by commas, e.g. team:data,tier:gold"
    if isinstance(raw, Mapping):
        tags = {}
        for key, value in raw.items():
            key, value = str(key).strip(), "" if value is None else str(value).strip()
            if not key or not value or ":" in key or "," in key:
                raise _BadValue(expected)
            tags[key] = value
        return FrozenTags(tags)
    if not isinstance(raw, str):
        raise _BadValue(expected)
    try:
        return FrozenTags(parse_tags(raw))
    except ValueError:
        raise _BadValue(expected) from None


def _parse_path(d: SettingDef, raw: Any) -> str:
    expected = "an existing file or directory path" if d.must_exist else "a file system path"
    try:
        value = os.fspath(raw)
    except TypeError:
        raise _BadValue(expected) from None
    if not isinstance(value, str) or not value.strip():
        raise _BadValue(expected)
    value = os.path.expanduser(value.strip())
    if d.must_exist and not os.path.exists(value):
        raise _BadValue(expected)
    return value


_SIZE = re.compile(r"(?i)^(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$")


def parse_size(text: str) -> int:
    """Bytes from ``"256m"``, ``"1g"``, ``"512 KiB"``, ``"1048576"`` (Spark's size strings:
    the suffixes are binary, ``k`` = 1024). Raises ``ValueError``."""
    match = _SIZE.match(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    number, unit = match.groups()
    factor = 1024 ** ("kmgtp".find(unit.lower()) + 1) if unit else 1
    return int(float(number) * factor)


def _parse_size(d: SettingDef, raw: Any) -> int:
    return _parse_whole(d, raw, "a size in bytes, or with a k/m/g suffix (e.g. 256m)"
                        + _bound_text(d), parse_size)


def _parse_log_level(d: SettingDef, raw: Any) -> str:
    expected = "a log level: " + ", ".join(LOG_LEVELS)
    if isinstance(raw, int) and not isinstance(raw, bool):
        name = logging.getLevelName(raw)
        if name in LOG_LEVELS:
            return name
        raise _BadValue(expected)
    if not isinstance(raw, str):
        raise _BadValue(expected)
    name = raw.strip().upper()
    name = _LOG_LEVEL_ALIASES.get(name, name)
    if name not in LOG_LEVELS:
        raise _BadValue(expected)
    return name


def _parse_regex(d: SettingDef, raw: Any) -> str:
    expected = "a valid (Python) regular expression"
    if not isinstance(raw, str):
        raise _BadValue(expected)
    value = raw.strip()
    try:
        re.compile(value)
    except re.error:
        raise _BadValue(expected) from None
    return value


_PARSERS: dict[str, Callable[[SettingDef, Any], Any]] = {
    BOOL: _parse_bool,
    INT: _parse_int,
    FLOAT: _parse_float,
    STR: _parse_str,
    URL: _parse_url,
    TAGS: _parse_tags,
    PATH: _parse_path,
    LOG_LEVEL: _parse_log_level,
    REGEX: _parse_regex,
    SIZE: _parse_size,
}
