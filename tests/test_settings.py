"""Settings: precedence of the four sources, aliases, bad values, token masking, tags.

Pure and fast: no Spark. ``spark_conf`` is the plain mapping activate() hands in, and
``environ`` is always given explicitly so the real environment cannot leak into a test.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import pickle
import re

import pytest

from definity_spark import settings as st
from definity_spark.settings import (
    BY_NAME,
    DEFINITIONS,
    SPARK_DEFAULT_REDACTION_REGEX,
    Settings,
    parse_tags,
    resolve,
)
from definity_spark.settings.parse import _PARSERS

TOKEN = "s3cr3t-T0ken-value"


def warnings_of(caplog: pytest.LogCaptureFixture):
    return [r for r in caplog.records
            if r.name.startswith("definity_spark") and r.levelno == logging.WARNING]


def all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="definity_spark")


# --- the definitions table -------------------------------------------------------------


def test_issue2_keys_exactly_as_listed():
    expected = {
        "enabled": ("spark.definity.enabled", "DEFINITY_ENABLED"),
        "server_url": ("spark.definity.server", "DEFINITY_SERVER_URL"),
        "token": ("spark.definity.token", "DEFINITY_TOKEN"),
        "env_name": ("spark.definity.env.name", "DEFINITY_ENV"),
        "pipeline_name": ("spark.definity.pipeline.name", "DEFINITY_PIPELINE_NAME"),
        "task_name": ("spark.definity.task.name", "DEFINITY_TASK_NAME"),
        "pipeline_pit": ("spark.definity.pipeline.pit", "DEFINITY_PIPELINE_PIT"),
        "task_id": ("spark.definity.task.id", "DEFINITY_TASK_ID"),
        "tags": ("spark.definity.tags", "DEFINITY_TAGS"),
        "server_timeout": ("spark.definity.server.timeout", "DEFINITY_SERVER_TIMEOUT"),
        "server_attempts": ("spark.definity.server.attempts", "DEFINITY_SERVER_ATTEMPTS"),
        "server_attempt_sleep": ("spark.definity.server.attempt.sleep",
                                 "DEFINITY_SERVER_ATTEMPT_SLEEP"),
        "spool_dir": ("spark.definity.spool.dir", "DEFINITY_SPOOL_DIR"),
        # issue 20: the spool's size bound
        "spool_max_size": ("spark.definity.spool.maxSize", "DEFINITY_SPOOL_MAX_SIZE"),
        "log_level": ("spark.definity.log.level", "DEFINITY_LOG_LEVEL"),
        # extras from the brief's Settings contract
        "events_file": ("spark.definity.events.file", "DEFINITY_EVENTS_FILE"),
        "flush_timeout": ("spark.definity.flush.timeout", "DEFINITY_FLUSH_TIMEOUT"),
        "queue_size": ("spark.definity.queue.size", "DEFINITY_QUEUE_SIZE"),
        "normalize_s3": ("spark.definity.naming.normalizeS3", "DEFINITY_NAMING_NORMALIZE_S3"),
        "trim_partition_dirs": ("spark.definity.naming.trimPartitionDirs",
                                "DEFINITY_NAMING_TRIM_PARTITION_DIRS"),
        "extraction_budget_ms": ("spark.definity.extraction.budget.ms",
                                 "DEFINITY_EXTRACTION_BUDGET_MS"),
        "max_plan_nodes": ("spark.definity.extraction.maxPlanNodes",
                           "DEFINITY_EXTRACTION_MAX_PLAN_NODES"),
        "column_lineage": ("spark.definity.lineage.columns", "DEFINITY_LINEAGE_COLUMNS"),
        # issue 24: a streaming query's metrics interval
        "stream_metrics_interval": ("spark.definity.streaming.metricsInterval",
                                    "DEFINITY_STREAMING_METRICS_INTERVAL"),
        # issue 25: opt-in data quality of written data
        "quality_columns": ("spark.definity.quality.columns", "DEFINITY_QUALITY_COLUMNS"),
        "ca_bundle": ("spark.definity.server.caBundle", "DEFINITY_SERVER_CA_BUNDLE"),
        "verify_tls": ("spark.definity.server.verifyTls", "DEFINITY_SERVER_VERIFY_TLS"),
        "replay_spool": ("spark.definity.spool.replay", "DEFINITY_SPOOL_REPLAY"),
        "redaction_regex": ("spark.definity.redaction.regex", "DEFINITY_REDACTION_REGEX"),
        # internal switches (not in the user's table of docs/configuration.md)
        "jvm_listener": ("spark.definity.internal.jvmListener",
                         "DEFINITY_INTERNAL_JVM_LISTENER"),
        "helper_process": ("spark.definity.internal.helperProcess",
                           "DEFINITY_INTERNAL_HELPER_PROCESS"),
    }
    assert {d.name: (d.conf_key, d.env_var) for d in DEFINITIONS} == expected


def test_every_definition_is_a_settings_field_and_unique():
    field_names = {f.name for f in dataclasses.fields(Settings)}
    for d in DEFINITIONS:
        assert d.name in field_names
        assert d.conf_key.startswith("spark.definity.")
        assert d.env_var.startswith("DEFINITY_")
        assert d.doc and d.kind in _PARSERS
    assert len({d.conf_key for d in DEFINITIONS}) == len(DEFINITIONS)
    assert len({d.env_var for d in DEFINITIONS}) == len(DEFINITIONS)


def test_extras_follow_the_env_naming_rule():
    # env var = DEFINITY_ + conf suffix with dots and camelCase as UPPER_SNAKE; the
    # first block (issue 2's names, shared with Definity's agents) may differ.
    legacy = {"server_url", "env_name"}
    for d in DEFINITIONS:
        if d.name in legacy:
            continue
        suffix = d.conf_key[len("spark.definity."):]
        snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", suffix).replace(".", "_").upper()
        assert d.env_var == "DEFINITY_" + snake, d.name


def test_defaults():
    s = resolve(environ={"XDG_CACHE_HOME": "/cache"})
    assert s.enabled is None
    assert s.server_url is None and s.token is None
    assert s.env_name is None and s.pipeline_name is None and s.task_name is None
    assert s.pipeline_pit is None and s.task_id is None
    assert dict(s.tags) == {}
    assert s.server_timeout == 5.0 and isinstance(s.server_timeout, float)
    assert s.server_attempts == 3
    assert s.server_attempt_sleep == 1.0
    assert s.spool_dir == "/cache/definity-spark/spool"
    assert s.spool_max_size == 256 * 1024 * 1024
    assert s.log_level == "WARNING"
    assert s.events_file is None
    assert s.flush_timeout == 5.0
    assert s.queue_size == 10000
    assert s.normalize_s3 is True and s.trim_partition_dirs is True
    assert s.extraction_budget_ms == 2000 and s.max_plan_nodes == 20000
    assert s.ca_bundle is None and s.verify_tls is True
    assert s.replay_spool is True  # issue 20: on by default (docs/reliability.md, Replay)
    assert s.redaction_regex is None
    assert set(s.sources.values()) == {"default"}


def test_spool_dir_default_without_xdg_uses_home_cache():
    assert resolve(environ={"HOME": "/home/u"}).spool_dir == "/home/u/.cache/definity-spark/spool"
    # a relative XDG_CACHE_HOME is invalid per the XDG spec and ignored
    s = resolve(environ={"HOME": "/home/u", "XDG_CACHE_HOME": "rel/cache"})
    assert s.spool_dir == "/home/u/.cache/definity-spark/spool"


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DEFINITY_ENV", "from-os-environ")
    s = resolve()
    assert s.env_name == "from-os-environ" and s.source("env_name") == "env"


# --- precedence -------------------------------------------------------------------------


@pytest.mark.parametrize("name, values, expected", [
    # name, (override, conf, env) raw values, expected typed value per winning source
    ("server_url", ("https://o.example", "https://c.example", "https://e.example"),
     ("https://o.example", "https://c.example", "https://e.example")),
    ("server_timeout", (1.5, "2.5", "3.5"), (1.5, 2.5, 3.5)),
    ("server_attempts", (7, "8", "9"), (7, 8, 9)),
    ("enabled", (False, "true", "no"), (False, True, False)),
    ("tags", ({"o": "1"}, "c:2", "e:3"), ({"o": "1"}, {"c": "2"}, {"e": "3"})),
    ("env_name", ("dev", "staging", "production"), ("dev", "staging", "production")),
    ("log_level", ("debug", "error", "info"), ("DEBUG", "ERROR", "INFO")),
])
def test_precedence_override_conf_env_default(name, values, expected):
    d = BY_NAME[name]
    o, c, e = values
    everything = resolve({name: o}, {d.conf_key: c}, {d.env_var: e})
    assert getattr(everything, name) == expected[0]
    assert everything.source(name) == "override"

    conf_env = resolve({}, {d.conf_key: c}, {d.env_var: e})
    assert getattr(conf_env, name) == expected[1]
    assert conf_env.source(name) == "conf"

    env_only = resolve(None, {}, {d.env_var: e})
    assert getattr(env_only, name) == expected[2]
    assert env_only.source(name) == "env"

    nothing = resolve(None, None, {})
    assert nothing.source(name) == "default"


def test_sources_are_per_setting():
    s = resolve({"pit": "2025-09-01"},
                {"spark.definity.server": "https://conf.example", "spark.app.name": "nightly"},
                {"DEFINITY_TOKEN": TOKEN, "DEFINITY_SERVER_URL": "https://env.example"})
    assert s.pipeline_pit == "2025-09-01" and s.source("pipeline_pit") == "override"
    assert s.server_url == "https://conf.example" and s.source("server_url") == "conf"
    assert s.token == TOKEN and s.source("token") == "env"
    assert s.queue_size == 10000 and s.source("queue_size") == "default"


def test_blank_or_none_falls_through_to_the_next_source(caplog):
    s = resolve({"env": None, "token": "  "},
                {"spark.definity.env.name": ""},
                {"DEFINITY_ENV": "prod", "DEFINITY_TOKEN": TOKEN})
    assert s.env_name == "prod" and s.source("env_name") == "env"
    assert s.token == TOKEN
    assert warnings_of(caplog) == []


def test_names_stay_unset_for_activate_to_derive():
    # activate() derives unset names (platform job name, else spark.app.name), so resolve
    # must not fill them from spark.app.name itself.
    s = resolve(spark_conf={"spark.app.name": "daily_sales"}, environ={})
    assert s.pipeline_name is None and s.task_name is None
    s = resolve(spark_conf={"spark.app.name": "daily_sales",
                            "spark.definity.task.name": "load"}, environ={})
    assert s.pipeline_name is None and s.task_name == "load"


def test_spark_conf_as_pairs_like_sparkconf_getall():
    s = resolve(spark_conf=[("spark.definity.queue.size", "5"), ("spark.app.name", "a")],
                environ={})
    assert s.queue_size == 5 and s.source("queue_size") == "conf"


def test_values_are_normalised():
    s = resolve({"server": " https://definity.example.com/api/ ", "log_level": "warn",
                 "spool_dir": "~/spool", "pit": datetime.date(2025, 9, 1)}, environ={})
    assert s.server_url == "https://definity.example.com/api"
    assert s.log_level == "WARNING"
    assert not s.spool_dir.startswith("~") and s.spool_dir.endswith("/spool")
    assert s.pipeline_pit == "2025-09-01"
    assert resolve({"log_level": logging.DEBUG}, environ={}).log_level == "DEBUG"


# --- aliases ----------------------------------------------------------------------------


def test_keyword_aliases():
    s = resolve({"pit": "2025-01-01", "server": "http://127.0.0.1:8080", "env": "dev"},
                environ={})
    assert s.pipeline_pit == "2025-01-01"
    assert s.server_url == "http://127.0.0.1:8080"
    assert s.env_name == "dev"
    assert {s.source(n) for n in ("pipeline_pit", "server_url", "env_name")} == {"override"}


def test_attribute_name_wins_over_alias():
    for order in (({"env": "a", "env_name": "b"}), ({"env_name": "b", "env": "a"})):
        assert resolve(order, environ={}).env_name == "b"


def test_alias_beats_conf_and_env():
    s = resolve({"server": "https://kw.example"},
                {"spark.definity.server": "https://conf.example"},
                {"DEFINITY_SERVER_URL": "https://env.example"})
    assert s.server_url == "https://kw.example"


# --- bad values: one warning naming the key, then the default ----------------------------


BAD_VALUES = [
    # (setting, bad raw value, words the "expected" part must contain)
    ("server_timeout", "five", "number"),
    ("server_timeout", "0", "> 0"),
    ("server_timeout", "nan", "number"),
    ("flush_timeout", "-1", ">= 0"),
    ("server_attempt_sleep", "soon", "number"),
    ("server_attempts", "3.5", "integer"),
    ("server_attempts", "0", ">= 1"),
    ("queue_size", "lots", "integer"),
    ("extraction_budget_ms", "2s", "integer"),
    ("max_plan_nodes", "-5", ">= 1"),
    ("server_url", "definity.example.com", "http://"),
    ("server_url", "ftp://definity.example.com", "http://"),
    ("server_url", "http://", "http://"),
    ("server_url", "https://host:99999999", "http://"),
    ("log_level", "LOUD", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("tags", "team=data", "key:value"),
    ("tags", "team:data,:x", "key:value"),
    ("tags", "team:", "key:value"),
    ("enabled", "maybe", "true/false"),
    ("normalize_s3", "on", "true/false"),
    ("verify_tls", "2", "true/false"),
    ("replay_spool", "y", "true/false"),
    ("trim_partition_dirs", "disabled", "true/false"),
    ("redaction_regex", "(unclosed", "regular expression"),
    ("ca_bundle", "/nonexistent/definity/ca.pem", "existing"),
]


@pytest.mark.parametrize("source", ["conf", "env"])
@pytest.mark.parametrize("name, raw, expected_words", BAD_VALUES)
def test_bad_value_gives_one_warning_then_default(caplog, source, name, raw, expected_words):
    d = BY_NAME[name]
    conf = {d.conf_key: raw} if source == "conf" else {}
    environ = {d.env_var: raw, "XDG_CACHE_HOME": "/c"} if source == "env" else {
        "XDG_CACHE_HOME": "/c"}
    s = resolve(None, conf, environ)  # never raises

    default = getattr(resolve(None, None, {"XDG_CACHE_HOME": "/c"}), name)
    assert getattr(s, name) == default
    assert s.source(name) == "default"
    records = warnings_of(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert (d.conf_key if source == "conf" else d.env_var) in message
    assert expected_words in message
    assert repr(raw.strip()) in message  # the bad value itself is named
    assert "default" in message


@pytest.mark.parametrize("name, raw", [
    ("server_timeout", "slow"),
    ("server_timeout", True),  # a bool is not a number
    ("server_attempts", 2.5),
    ("queue_size", [1]),
    ("tags", ["a:b"]),
    ("tags", {"": "x"}),
    ("enabled", "perhaps"),
    ("env_name", 42),
    ("server_url", "localhost:8080"),
    ("spool_dir", 3),
    ("log_level", 7),
])
def test_bad_override_gives_one_warning_then_default(caplog, name, raw):
    s = resolve({name: raw}, None, {"XDG_CACHE_HOME": "/c"})
    assert getattr(s, name) == getattr(resolve(environ={"XDG_CACHE_HOME": "/c"}), name)
    records = warnings_of(caplog)
    assert len(records) == 1
    assert "keyword " + name in records[0].getMessage()


def test_bad_value_does_not_fall_through_to_lower_source(caplog):
    # present but wrong -> the default, not the env value: the outcome does not depend on
    # what else happens to be set
    s = resolve(None, {"spark.definity.server.timeout": "x"}, {"DEFINITY_SERVER_TIMEOUT": "9"})
    assert s.server_timeout == 5.0
    assert len(warnings_of(caplog)) == 1


def test_unknown_override_keyword_warns_once_with_suggestion(caplog):
    s = resolve({"sever_url": "https://x.example", "pit": "2025-01-01"}, environ={})
    assert s.server_url is None and s.pipeline_pit == "2025-01-01"
    records = warnings_of(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert "'sever_url'" in message and "server_url" in message
    assert "x.example" not in message  # values of unknown keywords are not shown


def test_unknown_conf_key_warns_once(caplog):
    resolve(None, {"spark.definity.tokn": TOKEN, "spark.other.thing": "1"}, {})
    records = warnings_of(caplog)
    assert len(records) == 1
    assert "spark.definity.tokn" in records[0].getMessage()
    assert "spark.definity.token" in records[0].getMessage()  # did you mean
    assert TOKEN not in all_log_text(caplog)


def test_several_bad_values_one_warning_each(caplog):
    resolve({"server_timeout": "x"},
            {"spark.definity.queue.size": "big", "spark.definity.log.level": "LOUD"},
            {"DEFINITY_TAGS": "nope"})
    messages = [r.getMessage() for r in warnings_of(caplog)]
    assert len(messages) == 4
    for key in ("server_timeout", "spark.definity.queue.size", "spark.definity.log.level",
                "DEFINITY_TAGS"):
        assert sum(key in m for m in messages) == 1


def test_resolve_never_raises_on_weird_input(caplog):
    class Weird:
        def __str__(self):
            raise RuntimeError("no str")

    s = resolve({"env": Weird(), "tags": Weird(), "server_timeout": Weird()},
                {"spark.definity.env.name": Weird()}, {})
    assert s.env_name is None and s.server_timeout == 5.0


def test_internal_error_is_contained_outside_strict_mode(caplog, monkeypatch):
    monkeypatch.setattr(st, "_resolve", lambda *a: 1 / 0)
    monkeypatch.setattr(st, "is_strict", lambda: False)
    s = resolve({"token": TOKEN}, None, {"XDG_CACHE_HOME": "/c"})
    assert isinstance(s, Settings) and s.token is None and s.server_attempts == 3
    assert "settings.resolve" in all_log_text(caplog)
    monkeypatch.setattr(st, "is_strict", lambda: True)
    with pytest.raises(ZeroDivisionError):
        resolve()


def test_url_credentials_not_repeated_in_warning(caplog):
    resolve(None, {"spark.definity.server": "ftp://user:pa55word@host/x"}, {})
    text = all_log_text(caplog)
    assert "spark.definity.server" in text and "pa55word" not in text


# --- plain http / TLS warnings ------------------------------------------------------------


@pytest.mark.parametrize("url, warns", [
    ("http://definity.example.com", True),
    ("http://10.1.2.3:8080", True),
    ("http://localhost:8080", False),
    ("http://127.0.0.1:5000", False),
    ("http://[::1]:5000", False),
    ("https://definity.example.com", False),
])
def test_plain_http_to_non_loopback_is_allowed_but_warned(caplog, url, warns):
    s = resolve({"server": url}, environ={})
    assert s.server_url == url
    records = warnings_of(caplog)
    assert len(records) == (1 if warns else 0)
    if warns:
        assert "plain http" in records[0].getMessage()


def test_verify_tls_off_is_warned(caplog):
    s = resolve({"server": "https://d.example", "verify_tls": "false"}, environ={})
    assert s.verify_tls is False
    assert ["verify" in r.getMessage() for r in warnings_of(caplog)] == [True]


def test_ca_bundle_that_exists(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = resolve(None, {"spark.definity.server.caBundle": str(ca)}, {})
    assert s.ca_bundle == str(ca) and s.source("ca_bundle") == "conf"


# --- token masking ----------------------------------------------------------------------


def test_token_masked_in_repr_str_masked_and_describe():
    s = resolve({"token": TOKEN}, environ={})
    assert s.token == TOKEN  # the real value is there for the Authorization header
    for text in (repr(s), str(s), json.dumps(s.masked()), repr(s.describe()), f"{s}"):
        assert TOKEN not in text
        assert "***" in text
    rows = {row.key: row for row in s.describe()}
    assert rows["spark.definity.token"] == ("spark.definity.token", "***", "override")
    assert s.masked()["token"] == "***"


def test_credentials_in_server_url_are_masked_for_display():
    s = resolve({"server": "https://bob:pa55word@definity.example.com"}, environ={})
    assert s.server_url == "https://bob:pa55word@definity.example.com"
    for text in (repr(s), json.dumps(s.masked()), repr(s.describe())):
        assert "pa55word" not in text and "https://***@definity.example.com" in text


def test_unset_token_is_not_shown_as_masked():
    s = resolve(environ={})
    assert "token=None" in repr(s)
    assert {row.key: row.value for row in s.describe()}["spark.definity.token"] == "not set"


@pytest.mark.parametrize("bad_token", ["s3cr3tA X9yQ", "s3cr3tA\nX9yQ", "s3cr3tA\tX9yQ"])
@pytest.mark.parametrize("source", ["override", "conf", "env"])
def test_token_never_in_a_warning(caplog, bad_token, source):
    overrides = {"token": bad_token} if source == "override" else None
    conf = {"spark.definity.token": bad_token} if source == "conf" else None
    environ = {"DEFINITY_TOKEN": bad_token} if source == "env" else {}
    s = resolve(overrides, conf, environ)
    assert s.token is None
    records = warnings_of(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert "token" in message.lower() and "hidden" in message
    for part in bad_token.split():
        assert part not in message


def test_token_surrounding_whitespace_is_trimmed():
    assert resolve(None, None, {"DEFINITY_TOKEN": f" {TOKEN}\n"}).token == TOKEN


def test_describe_rows_cover_every_setting_with_source():
    s = resolve({"queue_size": 5}, {"spark.definity.tags": "a:b"}, {"DEFINITY_ENV": "dev"})
    rows = s.describe()
    assert [r.key for r in rows] == [d.conf_key for d in DEFINITIONS]
    by_key = {r.key: r for r in rows}
    assert by_key["spark.definity.queue.size"] == ("spark.definity.queue.size", "5", "override")
    assert by_key["spark.definity.tags"] == ("spark.definity.tags", "a:b", "conf")
    assert by_key["spark.definity.env.name"] == ("spark.definity.env.name", "dev", "env")
    assert by_key["spark.definity.server.verifyTls"].value == "true"
    key, value, source = rows[0]  # plain 3-tuples for doctor
    assert source in st.SOURCES


# --- tags -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("team:data,tier:gold", {"team": "data", "tier": "gold"}),
    ("  team : data ,  tier:gold  ", {"team": "data", "tier": "gold"}),
    ("url:http://x:1/y", {"url": "http://x:1/y"}),
    ("a:b,", {"a": "b"}),
    ("a:1,a:2", {"a": "2"}),
    ("", {}),
])
def test_parse_tags(text, expected):
    assert parse_tags(text) == expected


@pytest.mark.parametrize("text", ["novalue", "a:b,c", ":x", "a:", "a:b, : "])
def test_parse_tags_rejects(text):
    with pytest.raises(ValueError):
        parse_tags(text)


def test_tags_are_read_only_and_serialisable():
    s = resolve(None, {"spark.definity.tags": "env:prod,team:data"}, {})
    assert dict(s.tags) == {"env": "prod", "team": "data"}
    with pytest.raises(TypeError):
        s.tags["x"] = "y"  # type: ignore[index]
    with pytest.raises(TypeError):
        s.tags.update(x="y")  # type: ignore[attr-defined]
    assert json.loads(json.dumps(s.tags)) == {"env": "prod", "team": "data"}
    assert pickle.loads(pickle.dumps(s)) == s


def test_tags_from_mapping_override():
    s = resolve({"tags": {"team": " data ", "tier": 1}}, environ={})
    assert dict(s.tags) == {"team": "data", "tier": "1"}


# --- enabled is tri-state ----------------------------------------------------------------


@pytest.mark.parametrize("overrides, conf, environ, expected", [
    (None, None, {}, None),
    (None, {"spark.definity.enabled": "true"}, {}, True),
    (None, {"spark.definity.enabled": "FALSE"}, {}, False),
    (None, None, {"DEFINITY_ENABLED": "1"}, True),
    (None, None, {"DEFINITY_ENABLED": "no"}, False),
    (None, None, {"DEFINITY_ENABLED": "Yes"}, True),
    ({"enabled": False}, {"spark.definity.enabled": "true"}, {}, False),
    ({"enabled": None}, {"spark.definity.enabled": "true"}, {}, True),
    (None, {"spark.definity.enabled": ""}, {"DEFINITY_ENABLED": "0"}, False),
])
def test_enabled_tri_state(overrides, conf, environ, expected):
    assert resolve(overrides, conf, environ).enabled is expected


# --- the Settings object ----------------------------------------------------------------


def test_settings_is_frozen():
    s = resolve(environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.server_url = "https://x"  # type: ignore[misc]


def test_redaction_regex_precedence(caplog):
    s = resolve(environ={})
    assert s.effective_redaction_regex == SPARK_DEFAULT_REDACTION_REGEX
    assert s.redaction_pattern().search("spark.hadoop.fs.s3a.Access.Key")
    assert s.redaction_pattern().search("PASSWORD")
    assert not s.redaction_pattern().search("user")

    s = resolve(None, {"spark.redaction.regex": "(?i)pwd"}, {})
    assert s.redaction_regex is None and s.effective_redaction_regex == "(?i)pwd"

    s = resolve(None, {"spark.redaction.regex": "(?i)pwd",
                       "spark.definity.redaction.regex": "(?i)hush"}, {})
    assert s.effective_redaction_regex == "(?i)hush"
    assert s.redaction_pattern().search("HUSH_money")

    # Spark's regex in Java-only syntax: one warning, Spark's default used
    caplog.clear()
    s = resolve(None, {"spark.redaction.regex": "(?i)secret(?<name"}, {})
    assert s.effective_redaction_regex == SPARK_DEFAULT_REDACTION_REGEX
    assert len(warnings_of(caplog)) == 1


def test_settings_defaults_are_the_definitions():
    # one definition of each default: Settings() and resolve() agree for every setting
    plain, resolved = Settings(), resolve(environ={})
    for d in DEFINITIONS:
        assert getattr(plain, d.name) == getattr(resolved, d.name), d.name
    assert {f.name for f in dataclasses.fields(Settings)} - {"sources", "spark_redaction_regex"} \
        == {d.name for d in DEFINITIONS}


def test_defaults_helper():
    s = st.defaults({"XDG_CACHE_HOME": "/c"})
    assert s.spool_dir == "/c/definity-spark/spool" and s.server_attempts == 3
