"""The table of every setting (``DEFINITIONS``) and the words it is written in.

One ``SettingDef`` per setting: its attribute name, Spark conf key, environment variable,
value kind, default, bounds and meaning. Everything else in ``settings`` is derived from
this table: parsing, ``Settings``, ``resolve()`` and docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

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

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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
    _S("stream_metrics_interval", "spark.definity.streaming.metricsInterval",
       "DEFINITY_STREAMING_METRICS_INTERVAL", FLOAT, 60.0,
       "Seconds between two metrics reports of a streaming query (each aggregates the "
       "micro-batches of its interval; one more at the query's end): at most one "
       "`/log/metrics` payload per query per interval, whatever the trigger rate "
       "(docs/metrics.md, \"Streaming\").", minimum=1, maximum=86400),
    _S("quality_columns", "spark.definity.quality.columns", "DEFINITY_QUALITY_COLUMNS", STR,
       None,
       "Data quality of written data, opt-in: the datasets and columns whose row count, "
       "null count, approximate distinct count, min and max are measured in the same pass "
       "as the write (Spark's observed metrics; docs/metrics.md, \"Data quality\"). "
       "Entries `dataset:col1,col2` or `dataset:*` separated by `;`, the dataset as the "
       "plugin names it, `*` a wildcard: `db.orders:amount,customer_id;*:*`.",
       doc_default="off"),
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
