"""Settings: the one place where definity-spark reads its configuration.

Every setting is declared once, in ``DEFINITIONS`` (``definitions.py``): its attribute
name, its Spark conf key (``spark.definity.*``), its environment variable
(``DEFINITY_*``), its type, its default and a one-line meaning. ``resolve()`` turns
those definitions plus the four sources into one immutable ``Settings`` object, and
``docs/configuration.md`` is generated from the same table (``python -m
definity_spark._gen_config_doc``), so code, docs and tests cannot drift apart.

Precedence (highest first), applied per setting:

1. keyword arguments to ``activate()`` (attribute names, plus the aliases in
   ``KEYWORD_ALIASES``),
2. Spark conf ``spark.definity.*``,
3. environment ``DEFINITY_*``,
4. the default.

A value that is unset or blank at one source falls through to the next one. A value
that is present but wrong (a non-numeric timeout, a URL without ``http://``/``https://``,
an unknown log level, bad tag syntax, a boolean that is not true/false/1/0/yes/no, an
unknown keyword) gives exactly one warning that names the key, the bad value (never the
token's) and what was expected, and then the default is used. ``resolve()`` never
raises into the host program.

The room is pure: no Spark, no py4j. The caller (``activate()``) reads the Spark conf
into a plain mapping and hands it in.

Here: ``Settings`` and ``resolve()``. Beside it: ``definitions.py`` (the table),
``parse.py`` (raw value -> typed value), ``display.py`` (how a value is shown, warnings),
``doc.py`` (docs/configuration.md).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from definity_spark._internal import is_strict, log_internal_error
from definity_spark.settings.definitions import (
    BY_CONF_KEY,
    BY_ENV_VAR,
    BY_NAME,
    CONF_PREFIX,
    DEFINITIONS,
    INT,
    KEYWORD_ALIASES,
    SOURCE_CONF,
    SOURCE_DEFAULT,
    SOURCE_ENV,
    SOURCE_OVERRIDE,
    SOURCES,
    SPARK_DEFAULT_REDACTION_REGEX,
    SPARK_REDACTION_REGEX_KEY,
    URL,
    SettingDef,
    default_spool_dir,
)
from definity_spark.settings.display import (
    MASK,
    _display,
    _mask_userinfo,
    _warn_above_maximum,
    _warn_bad,
)
from definity_spark.settings.doc import REGENERATE_COMMAND, render_configuration_doc
from definity_spark.settings.parse import (
    _PARSERS,
    FrozenTags,
    _AboveMaximum,
    _BadValue,
    parse_size,
    parse_tags,
)

logger = logging.getLogger("definity_spark.settings")


class SettingRow(NamedTuple):
    """One row of ``Settings.describe()``: what ``definity-spark doctor`` prints."""

    key: str  # the Spark conf key
    value: str  # display text, the token masked
    source: str  # override / conf / env / default


def _default(name: str) -> Any:
    """A ``Settings`` field whose default is its definition's (one place for each)."""
    d = BY_NAME[name]
    if callable(d.default):
        return dataclasses.field(default_factory=lambda: d.default({}, os.environ))
    if isinstance(d.default, dict):
        return dataclasses.field(default_factory=lambda: FrozenTags(d.default))
    return dataclasses.field(default=d.default)


@dataclasses.dataclass(frozen=True, repr=False)
class Settings:
    """The effective configuration of one activation. Immutable; build it with ``resolve()``.

    ``repr()``/``str()`` never show the token (``'***'`` when set). ``dataclasses.asdict``
    does, so use ``masked()`` for anything that leaves the process.
    """

    enabled: bool | None = _default("enabled")
    server_url: str | None = _default("server_url")
    token: str | None = _default("token")
    env_name: str | None = _default("env_name")
    pipeline_name: str | None = _default("pipeline_name")
    task_name: str | None = _default("task_name")
    pipeline_pit: str | None = _default("pipeline_pit")
    task_id: str | None = _default("task_id")
    tags: Mapping[str, str] = _default("tags")
    server_timeout: float = _default("server_timeout")
    server_attempts: int = _default("server_attempts")
    server_attempt_sleep: float = _default("server_attempt_sleep")
    spool_dir: str = _default("spool_dir")
    spool_max_size: int = _default("spool_max_size")
    log_level: str = _default("log_level")
    events_file: str | None = _default("events_file")
    flush_timeout: float = _default("flush_timeout")
    queue_size: int = _default("queue_size")
    normalize_s3: bool = _default("normalize_s3")
    trim_partition_dirs: bool = _default("trim_partition_dirs")
    extraction_budget_ms: int = _default("extraction_budget_ms")
    max_plan_nodes: int = _default("max_plan_nodes")
    column_lineage: bool = _default("column_lineage")
    stream_metrics_interval: float = _default("stream_metrics_interval")
    quality_columns: str | None = _default("quality_columns")
    ca_bundle: str | None = _default("ca_bundle")
    verify_tls: bool = _default("verify_tls")
    replay_spool: bool = _default("replay_spool")
    redaction_regex: str | None = _default("redaction_regex")
    jvm_listener: bool = _default("jvm_listener")
    helper_process: bool = _default("helper_process")
    # Not settings: where each value came from, and Spark's own redaction regex (from
    # the same Spark conf) for effective_redaction_regex.
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)
    spark_redaction_regex: str | None = None

    def source(self, name: str) -> str:
        """Where setting ``name`` came from: override, conf, env or default."""
        return self.sources.get(name, SOURCE_DEFAULT)

    def masked(self) -> dict[str, Any]:
        """All settings by attribute name; the token (and URL credentials) as ``'***'``."""
        out: dict[str, Any] = {}
        for d in DEFINITIONS:
            value = getattr(self, d.name)
            if d.secret and value is not None:
                value = MASK
            elif d.kind == URL and value is not None:
                value = _mask_userinfo(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[d.name] = value
        return out

    def describe(self) -> list[SettingRow]:
        """``(conf key, display value, source)`` per setting, token masked (for doctor)."""
        return [
            SettingRow(d.conf_key, _display(d, getattr(self, d.name)), self.source(d.name))
            for d in DEFINITIONS
        ]

    @property
    def effective_redaction_regex(self) -> str:
        """``redaction_regex``, else Spark's ``spark.redaction.regex``, else Spark's default."""
        return self.redaction_regex or self.spark_redaction_regex or SPARK_DEFAULT_REDACTION_REGEX

    def redaction_pattern(self) -> re.Pattern:
        """The compiled ``effective_redaction_regex`` (validated by ``resolve()``)."""
        return _compile(self.effective_redaction_regex)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={value!r}" for name, value in self.masked().items()
        )
        return f"Settings({fields})"

    __str__ = __repr__


@functools.lru_cache(maxsize=16)
def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error:  # resolve() validated it; only a hand-built Settings gets here
        return re.compile(SPARK_DEFAULT_REDACTION_REGEX)


# ---------------------------------------------------------------------------------------
# Resolution.
# ---------------------------------------------------------------------------------------

_MISSING = object()


def _is_unset(raw: Any) -> bool:
    return raw is _MISSING or raw is None or (isinstance(raw, str) and not raw.strip())


def _default_of(d: SettingDef, conf: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    if callable(d.default):
        return d.default(conf, environ)
    if isinstance(d.default, dict):
        return FrozenTags(d.default)
    return d.default


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _as_mapping(spark_conf: Any) -> Mapping[str, Any]:
    """A plain mapping from a dict or from ``SparkConf.getAll()``-style pairs."""
    if spark_conf is None:
        return {}
    if isinstance(spark_conf, Mapping):
        return spark_conf
    return dict(spark_conf)


def _keyword_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """activate() keywords -> {attribute name: raw value}; unknown keywords warned and dropped."""
    given: dict[str, Any] = {}
    if not overrides:
        return given
    for keyword, raw in overrides.items():
        name = KEYWORD_ALIASES.get(keyword, keyword)
        if name not in BY_NAME:
            # The value is not shown: a misspelt keyword may well carry a secret.
            logger.warning(
                "definity-spark: ignoring unknown activate() keyword %r%s; expected one of: %s",
                keyword, _suggest(keyword, list(BY_NAME) + list(KEYWORD_ALIASES)),
                ", ".join(sorted(list(BY_NAME) + list(KEYWORD_ALIASES))),
            )
            continue
        if name in given and keyword != name:
            continue  # both the alias and the attribute name: the attribute name wins
        given[name] = raw
    return given


def _warn_unknown_conf_keys(conf: Mapping[str, Any]) -> None:
    for key in conf:
        if isinstance(key, str) and key.startswith(CONF_PREFIX) and key not in BY_CONF_KEY:
            logger.warning(
                "definity-spark: ignoring unknown Spark conf key %s%s; the known keys are "
                "listed in docs/configuration.md", key, _suggest(key, BY_CONF_KEY),
            )


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn_transport_risks(values: Mapping[str, Any]) -> None:
    """Plain http to a remote host, or TLS verification off: allowed, but said once."""
    url = values.get("server_url")
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme.lower() == "http" and not _is_loopback(parts.hostname or ""):
        logger.warning(
            "definity-spark: the Definity server %s://%s is reached over plain http: the "
            "token and the reports travel unencrypted; use https:// for non-local servers",
            parts.scheme, parts.hostname,
        )
    elif parts.scheme.lower() == "https" and values.get("verify_tls") is False:
        logger.warning(
            "definity-spark: TLS certificate verification is off (verify_tls=false) for %s; "
            "use a CA bundle (spark.definity.server.caBundle) instead", parts.hostname,
        )


def _spark_redaction_regex(conf: Mapping[str, Any]) -> str | None:
    raw = conf.get(SPARK_REDACTION_REGEX_KEY)
    if _is_unset(raw):
        return None
    try:
        re.compile(str(raw))
    except re.error:
        # Spark's regex is Java syntax; the rare constructs Python lacks fall back to
        # Spark's default rather than leave values unredacted.
        logger.warning(
            "definity-spark: Spark's %s=%r is not a valid Python regular expression; "
            "redacting with %s instead (set spark.definity.redaction.regex to override)",
            SPARK_REDACTION_REGEX_KEY, str(raw), SPARK_DEFAULT_REDACTION_REGEX,
        )
        return None
    return str(raw)


def _resolve(overrides: Mapping[str, Any] | None, spark_conf: Any,
             environ: Mapping[str, str] | None) -> Settings:
    environ = os.environ if environ is None else environ
    conf = _as_mapping(spark_conf)
    given = _keyword_overrides(overrides)
    _warn_unknown_conf_keys(conf)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for d in DEFINITIONS:
        candidates = (
            (SOURCE_OVERRIDE, d.name, given.get(d.name, _MISSING)),  # 1) activate() keywords
            (SOURCE_CONF, d.conf_key, conf.get(d.conf_key, _MISSING)),  # 2) Spark conf
            (SOURCE_ENV, d.env_var, environ.get(d.env_var, _MISSING)),  # 3) environment
        )
        for source, key, raw in candidates:
            if _is_unset(raw):
                continue  # unset or blank here: ask the next source
            try:
                values[d.name] = _PARSERS[d.kind](d, raw)
                sources[d.name] = source
            except _BadValue as bad:
                # Present but wrong: one warning, then the default (not a lower source,
                # so the outcome does not depend on what else happens to be set).
                _warn_bad(d, source, key, raw, bad.expected, _default_of(d, conf, environ))
            except _AboveMaximum as above:
                # Too large to be meant literally ("never time out"): the largest useful
                # value, said once.
                _warn_above_maximum(d, source, key, raw, above.maximum)
                maximum = above.maximum
                values[d.name] = int(maximum) if d.kind == INT else float(maximum)
                sources[d.name] = source
            break
        if d.name not in values:
            values[d.name] = _default_of(d, conf, environ)  # 4) default
            sources[d.name] = SOURCE_DEFAULT

    _warn_transport_risks(values)
    return Settings(sources=sources, spark_redaction_regex=_spark_redaction_regex(conf),
                    **values)


def defaults(environ: Mapping[str, str] | None = None) -> Settings:
    """Every setting at its default (never raises)."""
    try:
        environ = os.environ if environ is None else environ
        return Settings(**{d.name: _default_of(d, {}, environ) for d in DEFINITIONS})
    except Exception:  # noqa: BLE001 - last resort: the dataclass defaults
        return Settings()


def resolve(overrides: Mapping[str, Any] | None = None,
            spark_conf: Mapping[str, str] | None = None,
            environ: Mapping[str, str] | None = None) -> Settings:
    """Build the effective ``Settings`` from the four sources (see the module docstring).

    ``overrides``: ``activate()`` keywords (attribute names or ``KEYWORD_ALIASES``;
    ``None`` values count as not given). ``spark_conf``: the Spark conf as a plain mapping
    (or ``SparkConf.getAll()`` pairs). ``environ``: defaults to ``os.environ``.
    Never raises: bad values are warned about and replaced by defaults; an internal error
    is contained and gives all-default settings (re-raised in strict mode).
    """
    try:
        return _resolve(overrides, spark_conf, environ)
    except Exception as exc:  # noqa: BLE001 - settings must never break the host
        log_internal_error("settings.resolve", exc)
        if is_strict():
            raise
        return defaults(environ)


__all__ = [
    "BY_CONF_KEY",
    "BY_ENV_VAR",
    "BY_NAME",
    "DEFINITIONS",
    "KEYWORD_ALIASES",
    "REGENERATE_COMMAND",
    "SOURCES",
    "SPARK_DEFAULT_REDACTION_REGEX",
    "FrozenTags",
    "SettingDef",
    "SettingRow",
    "Settings",
    "default_spool_dir",
    "defaults",
    "parse_size",
    "parse_tags",
    "render_configuration_doc",
    "resolve",
]
