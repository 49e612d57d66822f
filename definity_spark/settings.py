"""Settings: the one place where definity-spark reads its configuration.

Every setting is declared once, in ``DEFINITIONS`` below: its attribute name, its Spark
conf key (``spark.definity.*``), its environment variable (``DEFINITY_*``), its type,
its default and a one-line meaning. ``resolve()`` turns those definitions plus the four
sources into one immutable ``Settings`` object, and ``docs/configuration.md`` is
generated from the same table (``python -m definity_spark._gen_config_doc``), so code,
docs and tests cannot drift apart.

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
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import functools
import ipaddress
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable, NamedTuple
from urllib.parse import urlsplit

from definity_spark._internal import is_strict, log_internal_error

logger = logging.getLogger("definity_spark.settings")

CONF_PREFIX = "spark.definity."

# Spark's own redaction setting and its documented default (Spark's
# ``spark.redaction.regex``); used when ``redaction_regex`` is not set.
SPARK_REDACTION_REGEX_KEY = "spark.redaction.regex"
SPARK_DEFAULT_REDACTION_REGEX = r"(?i)secret|password|token|access[.]?key"

# Where a value came from (``Settings.source(name)``, ``Settings.describe()``).
SOURCE_OVERRIDE = "override"
SOURCE_CONF = "conf"
SOURCE_ENV = "env"
SOURCE_DEFAULT = "default"
SOURCES = (SOURCE_OVERRIDE, SOURCE_CONF, SOURCE_ENV, SOURCE_DEFAULT)

MASK = "***"
NOT_SET = "not set"

# Value types of the definitions (also the "type" column of docs/configuration.md).
BOOL = "bool"
INT = "int"
FLOAT = "float"
STR = "str"
URL = "url"
TAGS = "tags"
PATH = "path"
LOG_LEVEL = "log level"
REGEX = "regex"
SIZE = "size"

_TRUE_WORDS = ("true", "1", "yes")
_FALSE_WORDS = ("false", "0", "no")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}


def default_spool_dir(environ: Mapping[str, str] | None = None) -> str:
    """``$XDG_CACHE_HOME/definity-spark/spool``, else ``~/.cache/definity-spark/spool``."""
    environ = os.environ if environ is None else environ
    cache = environ.get("XDG_CACHE_HOME") or ""
    # The XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    if not os.path.isabs(cache):
        home = environ.get("HOME") or os.path.expanduser("~")
        cache = os.path.join(home, ".cache")
    return os.path.join(cache, "definity-spark", "spool")


@dataclasses.dataclass(frozen=True)
class SettingDef:
    """One setting: how it is named in each source, its type, default and meaning."""

    name: str  # attribute of Settings and activate() keyword
    conf_key: str  # spark.definity.*
    env_var: str  # DEFINITY_*
    kind: str  # BOOL, INT, ... (see above)
    # A literal, or a callable (conf, environ) -> value for a default that depends on
    # the environment (spool_dir).
    default: Any
    doc: str
    doc_default: str | None = None  # how the default reads in the docs, if not literal
    minimum: float | None = None  # numbers: smallest accepted value
    min_exclusive: bool = False  # numbers: the minimum itself is not accepted
    # numbers: largest useful value; a larger one is lowered to it, with one warning
    maximum: float | None = None
    secret: bool = False  # never shown: repr, describe(), warnings
    must_exist: bool = False  # paths: the file or directory must exist
    # an internal switch: not in the user's table of docs/configuration.md
    internal: bool = False

    @property
    def type_text(self) -> str:
        """The type as the docs and warnings state it (e.g. ``float > 0, at most 600``)."""
        text = self.kind + _bound_text(self)
        if self.maximum is not None:
            text += f", at most {_number_text(self.maximum, self.kind)}"
        return text


def _spool_dir_default(conf: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    return default_spool_dir(environ)


_S = SettingDef

# The table of every setting. Order = order of docs/configuration.md and describe().
# The first block is issue 2's list (names shared with Definity's own agents); the
# extras follow the rule: env var = DEFINITY_ + conf key suffix, dots and camelCase
# turned into UPPER_SNAKE (spark.definity.naming.normalizeS3 -> DEFINITY_NAMING_NORMALIZE_S3).
DEFINITIONS: tuple[SettingDef, ...] = (
    _S("enabled", "spark.definity.enabled", "DEFINITY_ENABLED", BOOL, None,
       "Activation by configuration: `true` activates the plugin without code changes; "
       "`false` turns it off, even an explicit `activate()`. Unset: only an explicit "
       "`activate()` activates."),
    _S("server_url", "spark.definity.server", "DEFINITY_SERVER_URL", URL, None,
       "Base URL of the Definity server (`http://` or `https://`). Unset: events are "
       "written to the local JSONL events file instead."),
    _S("token", "spark.definity.token", "DEFINITY_TOKEN", STR, None,
       "Bearer token for the Definity server. Never logged or shown (masked as `***`).",
       secret=True),
    _S("env_name", "spark.definity.env.name", "DEFINITY_ENV", STR, None,
       "Environment of the task (`env`), e.g. `dev`, `production`."),
    # Unset stays None here: activate() derives the names (platform job name, else
    # spark.app.name), and an explicit value must be told apart from a derived one.
    _S("pipeline_name", "spark.definity.pipeline.name", "DEFINITY_PIPELINE_NAME", STR, None,
       "Pipeline name (the task's `app_name`).",
       doc_default="derived at activation (`spark.app.name`)"),
    _S("task_name", "spark.definity.task.name", "DEFINITY_TASK_NAME", STR, None,
       "Task name (the task's `task_name`).",
       doc_default="derived at activation (`spark.app.name`)"),
    _S("pipeline_pit", "spark.definity.pipeline.pit", "DEFINITY_PIPELINE_PIT", STR, None,
       "Logical point in time of the data (the task's `app_pit`), e.g. `2025-09-01`."),
    _S("task_id", "spark.definity.task.id", "DEFINITY_TASK_ID", STR, None,
       "Task id to use instead of the generated one (for orchestrators that know the run).",
       doc_default="generated (application id + random part)"),
    _S("tags", "spark.definity.tags", "DEFINITY_TAGS", TAGS, {},
       "Tags of the task: `key:value` pairs separated by commas, e.g. `team:data,tier:gold`.",
       doc_default="none"),
    _S("server_timeout", "spark.definity.server.timeout", "DEFINITY_SERVER_TIMEOUT", FLOAT,
       5.0, "Timeout of one HTTP request to the server, in seconds.",
       minimum=0, min_exclusive=True, maximum=600),
    _S("server_attempts", "spark.definity.server.attempts", "DEFINITY_SERVER_ATTEMPTS", INT,
       3, "Total tries per request, the first included (`1` = no retry).", minimum=1,
       maximum=100),
    _S("server_attempt_sleep", "spark.definity.server.attempt.sleep",
       "DEFINITY_SERVER_ATTEMPT_SLEEP", FLOAT, 1.0,
       "Base of the exponential backoff between tries, in seconds (with jitter; a "
       "server's `Retry-After` takes precedence).", minimum=0, maximum=60),
    _S("spool_dir", "spark.definity.spool.dir", "DEFINITY_SPOOL_DIR", PATH,
       _spool_dir_default,
       "Directory of the durable spool for payloads that could not be delivered "
       "(one file per task, mode 0600).",
       doc_default="`$XDG_CACHE_HOME/definity-spark/spool` (`~/.cache/definity-spark/spool` "
                   "when `XDG_CACHE_HOME` is unset)"),
    _S("spool_max_size", "spark.definity.spool.maxSize", "DEFINITY_SPOOL_MAX_SIZE", SIZE,
       256 * 1024 * 1024,
       "Most bytes the spool directory may hold (`k`, `m`, `g` suffixes as in Spark: "
       "binary). Past it the oldest whole files are dropped first (counted as lost, "
       "logged once); a task whose own file alone reaches it loses its newest reports.",
       doc_default="`256m`", minimum=1024, maximum=1024 ** 4),
    _S("log_level", "spark.definity.log.level", "DEFINITY_LOG_LEVEL", LOG_LEVEL, "WARNING",
       "Level of the `definity_spark` logger: DEBUG, INFO, WARNING, ERROR or CRITICAL."),
    # --- extras (issues 3, 5, 6) ---
    _S("events_file", "spark.definity.events.file", "DEFINITY_EVENTS_FILE", PATH, None,
       "JSONL file the events are appended to when no server is configured; "
       "`definity-spark collector --load FILE` imports it.",
       doc_default="chosen at activation (its path is logged once)"),
    _S("flush_timeout", "spark.definity.flush.timeout", "DEFINITY_FLUSH_TIMEOUT", FLOAT, 5.0,
       "Longest wait at shutdown (SparkContext stop, `deactivate()`, interpreter exit) "
       "for pending reports, in seconds; what is left goes to the spool.", minimum=0,
       maximum=3600),
    _S("queue_size", "spark.definity.queue.size", "DEFINITY_QUEUE_SIZE", INT, 10000,
       "Capacity of the bounded send queue; payloads that do not fit are counted as lost "
       "(`queue_full`).", minimum=1, maximum=1_000_000),
    _S("normalize_s3", "spark.definity.naming.normalizeS3", "DEFINITY_NAMING_NORMALIZE_S3",
       BOOL, True, "Name `s3a://` and `s3n://` paths as `s3://`."),
    _S("trim_partition_dirs", "spark.definity.naming.trimPartitionDirs",
       "DEFINITY_NAMING_TRIM_PARTITION_DIRS", BOOL, True,
       "Trim Hive-style partition directories (`/t/date=2025-01-01`) to the table root "
       "in dataset names."),
    _S("extraction_budget_ms", "spark.definity.extraction.budget.ms",
       "DEFINITY_EXTRACTION_BUDGET_MS", INT, 2000,
       "Time budget for reading one query's plan, in milliseconds; past it the "
       "transformation is reported with what was found and marked partial.", minimum=1,
       maximum=600_000),
    _S("max_plan_nodes", "spark.definity.extraction.maxPlanNodes",
       "DEFINITY_EXTRACTION_MAX_PLAN_NODES", INT, 20000,
       "Most plan nodes read per query; a larger plan gives a partial transformation.",
       minimum=1, maximum=10_000_000),
    _S("column_lineage", "spark.definity.lineage.columns", "DEFINITY_LINEAGE_COLUMNS", BOOL,
       True,
       "Report which input columns each written column comes from: the optional "
       "`column_lineage` field of `/log/tf` (docs/column-lineage.md). A server that "
       "answers 400 to it gets the tf again without it, and no more of it for the rest "
       "of the application (logged once)."),
    _S("ca_bundle", "spark.definity.server.caBundle", "DEFINITY_SERVER_CA_BUNDLE", PATH, None,
       "CA bundle (PEM file or directory) used to verify the server's TLS certificate; "
       "must exist.", doc_default="the system / `requests` CAs", must_exist=True),
    _S("verify_tls", "spark.definity.server.verifyTls", "DEFINITY_SERVER_VERIFY_TLS", BOOL,
       True, "Verify the server's TLS certificate. `false` is insecure (testing only)."),
    _S("replay_spool", "spark.definity.spool.replay", "DEFINITY_SPOOL_REPLAY", BOOL, True,
       "At activation, send the older, idle spool files meant for the same server in the "
       "background (docs/reliability.md, \"Replay\")."),
    _S("redaction_regex", "spark.definity.redaction.regex", "DEFINITY_REDACTION_REGEX", REGEX,
       None,
       "Regex (Python syntax, searched in option and URL parameter names) whose matches "
       "have their values redacted from payloads, logs and the spool.",
       doc_default="Spark's `spark.redaction.regex`, else "
                   "`" + SPARK_DEFAULT_REDACTION_REGEX + "`"),
    # --- internal switches: each turns the primary path off, so that the tests (and a
    # diagnosis) can run the fallback that takes over where the primary cannot run ---
    _S("jvm_listener", "spark.definity.internal.jvmListener",
       "DEFINITY_INTERNAL_JVM_LISTENER", BOOL, True,
       "`false`: receive the queries with the py4j Python listener and read them with py4j "
       "calls, as when the plugin's Java listener cannot be compiled in the driver.",
       internal=True),
    _S("helper_process", "spark.definity.internal.helperProcess",
       "DEFINITY_INTERNAL_HELPER_PROCESS", BOOL, True,
       "`false`: read the queries and send the reports from threads of the driver's "
       "process, as where the helper process cannot run (not Linux, or it died).",
       internal=True),
)
del _S

BY_NAME: dict[str, SettingDef] = {d.name: d for d in DEFINITIONS}
BY_CONF_KEY: dict[str, SettingDef] = {d.conf_key: d for d in DEFINITIONS}
BY_ENV_VAR: dict[str, SettingDef] = {d.env_var: d for d in DEFINITIONS}

# Short activate() keywords -> attribute names.
KEYWORD_ALIASES: dict[str, str] = {
    "pit": "pipeline_pit",
    "server": "server_url",
    "env": "env_name",
}


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
    expected = "an integer" + _bound_text(d)
    if isinstance(raw, bool):
        raise _BadValue(expected)
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str):
        try:
            value = int(raw.strip())
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
    expected = "a size in bytes, or with a k/m/g suffix (e.g. 256m)" + _bound_text(d)
    if isinstance(raw, bool):
        raise _BadValue(expected)
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str):
        try:
            value = parse_size(raw)
        except ValueError:
            raise _BadValue(expected) from None
    else:
        raise _BadValue(expected)
    _check_minimum(d, value, expected)
    _check_maximum(d, value)
    return value


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


def _number_text(value: float, kind: str = FLOAT) -> str:
    if kind == SIZE:
        for exponent, unit in ((4, "t"), (3, "g"), (2, "m"), (1, "k")):
            if value >= 1024 ** exponent and value % 1024 ** exponent == 0:
                return f"{int(value) // 1024 ** exponent}{unit}"
    return str(int(value)) if float(value).is_integer() else str(value)


def _bound_text(d: SettingDef) -> str:
    if d.minimum is None:
        return ""
    return " {} {}".format(">" if d.min_exclusive else ">=", _number_text(d.minimum, d.kind))


# ---------------------------------------------------------------------------------------
# Display: docs, describe(), warnings.
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# docs/configuration.md, generated from DEFINITIONS.
# ---------------------------------------------------------------------------------------

REGENERATE_COMMAND = "python -m definity_spark._gen_config_doc"


def _cell(text: str) -> str:
    # A '|' would end the table cell, even inside backticks (GFM), so escape it.
    return text.replace("|", "\\|").replace("\n", " ")


def _doc_default(d: SettingDef) -> str:
    if d.doc_default is not None:
        return d.doc_default
    if d.default is None:
        return "not set"
    return f"`{_display(d, d.default)}`"


def _doc_rows(internal: bool = False) -> Iterator[str]:
    yield ("| Spark conf key | Environment variable | `activate()` keyword | Type | Default "
           "| Meaning |")
    yield "|---|---|---|---|---|---|"
    aliases = {name: alias for alias, name in KEYWORD_ALIASES.items()}
    for d in DEFINITIONS:
        if d.internal != internal:
            continue
        keyword = f"`{d.name}`"
        if d.name in aliases:
            keyword += f" (or `{aliases[d.name]}`)"
        yield "| {} |".format(" | ".join(_cell(c) for c in (
            f"`{d.conf_key}`", f"`{d.env_var}`", keyword, d.type_text,
            _doc_default(d), d.doc,
        )))


def render_configuration_doc() -> str:
    """The full text of docs/configuration.md."""
    lines = [
        "<!-- Generated from definity_spark/settings.py (DEFINITIONS); do not edit by hand.",
        f"     Regenerate with: {REGENERATE_COMMAND} -->",
        "",
        "# Configuration",
        "",
        "Every setting of definity-spark can be given in three places. For each setting the",
        "first place that has a value wins:",
        "",
        "1. a keyword argument to `definity_spark.activate(spark, ...)`,",
        "2. the Spark conf `spark.definity.*` (`--conf` of `spark-submit`, "
        "`spark-defaults.conf`, cluster config),",
        "3. the environment variable `DEFINITY_*`,",
        "4. otherwise the default below.",
        "",
        "An empty value counts as not set. A value of the wrong type or form (a non-numeric",
        "timeout, a URL without `http://`/`https://`, an unknown log level, bad tag syntax, a",
        "boolean that is not `true`/`false`/`1`/`0`/`yes`/`no`, an unknown `activate()` keyword",
        "or `spark.definity.*` key) never raises: it gives one warning on the `definity_spark`",
        "logger naming the key, the value (never the token's) and what was expected, and the",
        "default is used. A number above the largest useful value of its setting (the",
        "\"at most\" of its type: `1e308` for a timeout) is lowered to that value, with one",
        "warning. `definity-spark doctor` prints the effective settings, where each came",
        "from, with the token masked.",
        "",
        "Types: `bool` takes `true`/`false`, `1`/`0`, `yes`/`no` (any case); `tags` are",
        "`key:value` pairs separated by commas (spaces around them are ignored, a value may",
        "contain `:`); `path` expands `~`; `url` must be `http://` or `https://` with a host",
        "and without a query string or fragment (a trailing `/` is dropped; plain `http://`",
        "to a non-loopback host is allowed but warned about); `size` is a number of bytes,",
        "or one with a binary `k`/`m`/`g`/`t` suffix as in Spark (`256m`); `log level` is",
        "one of {}.".format(", ".join(LOG_LEVELS)),
        "",
        "## Settings",
        "",
    ]
    lines.extend(_doc_rows())
    lines += [
        "",
        "## Internal switches",
        "",
        "Not for production: each turns a primary path off, so that the tests (and a",
        "diagnosis) run the fallback the plugin takes by itself where the primary cannot run.",
        "",
    ]
    lines.extend(_doc_rows(internal=True))
    lines.append("")
    return "\n".join(lines)


__all__ = [
    "BY_CONF_KEY",
    "BY_ENV_VAR",
    "BY_NAME",
    "DEFINITIONS",
    "KEYWORD_ALIASES",
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
