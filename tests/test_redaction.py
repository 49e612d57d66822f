"""Unit tests of definity_spark.redaction (pure: no Spark, no network).

Every case names the secret it plants; the test fails if that secret survives anywhere
in the output, and (where it matters) if something that is not a secret was destroyed.
"""

from __future__ import annotations

import json
import logging

import pytest

from definity_spark.redaction import (
    DEFAULT_REGEX,
    REDACTED,
    RedactingFilter,
    install_log_filter,
    is_sensitive_name,
    redact_options,
    redact_sql,
    redact_string,
    redact_text,
    redact_url,
)

SECRET = "S3cr3tP4ss"


def test_default_regex_is_sparks_default() -> None:
    from definity_spark import settings

    assert DEFAULT_REGEX == settings.SPARK_DEFAULT_REDACTION_REGEX
    assert settings.resolve(spark_conf={}, environ={}).redaction_pattern().pattern == DEFAULT_REGEX


@pytest.mark.parametrize("name", [
    "password", "PASSWORD", "db.password", "spark.hadoop.fs.s3a.secret.key", "secret",
    "token", "auth_token", "fs.s3a.access.key", "accesskey", "AccessKey", "pwd", "PWD",
    "passwd", "sig", "fs.azure.account.key.acct.blob.core.windows.net", "`password`",
    "'password'", '"password"', "x-amz-signature", "apikey", "api_key", "access_key",
    "aws_access_key_id", "account_key", "private_key",
])
def test_sensitive_names(name: str) -> None:
    assert is_sensitive_name(name)


@pytest.mark.parametrize("name", [
    "user", "url", "dbtable", "driver", "host", "path", "mode", "query", "id",
    "compression", "header", "passage_count"[:7] + "x",  # "passagx": no "pass" word
])
def test_not_sensitive_names(name: str) -> None:
    assert not is_sensitive_name(name)


def test_custom_regex_is_used() -> None:
    assert is_sensitive_name("mykey", r"(?i)mykey")
    assert not is_sensitive_name("mykey")
    # the built-in credential names are redacted whatever the regex
    assert is_sensitive_name("pwd", r"nothing-matches-this")
    assert redact_options({"user": "bob"}, r"(?i)user") == {"user": REDACTED}


# ----------------------------------------------------------------------------- URLs
@pytest.mark.parametrize("url,kept", [
    # user:pass@
    (f"jdbc:mysql://bob:{SECRET}@db.example.com:3306/shop",
     ["jdbc:mysql://bob:", "@db.example.com:3306/shop"]),
    (f"postgresql://bob:{SECRET}@host/db", ["postgresql://bob:", "@host/db"]),
    (f"https://bob:{SECRET}@api.example.com/x?y=1", ["https://bob:", "@api.example.com/x?y=1"]),
    # password with @ and / inside
    (f"jdbc:mysql://bob:{SECRET}@x/y@db:3306/shop", ["jdbc:mysql://bob:"]),
    # query parameters
    (f"jdbc:postgresql://h:5432/db?user=bob&password={SECRET}&ssl=true",
     ["jdbc:postgresql://h:5432/db?user=bob&password=", "&ssl=true"]),
    (f"jdbc:postgresql://h/db?password={SECRET}", ["jdbc:postgresql://h/db?password="]),
    (f"jdbc:sqlite:/tmp/x.db?password={SECRET}", ["jdbc:sqlite:/tmp/x.db?password="]),
    (f"jdbc:snowflake://acct.snowflakecomputing.com/?user=bob&PASSWORD={SECRET}&db=d",
     ["user=bob", "&db=d"]),
    (f"https://h/api?access_token={SECRET}", ["https://h/api?access_token="]),
    (f"https://h/api?a=1&accessKey={SECRET}#frag", ["?a=1&accessKey=", "#frag"]),
    (f"https://h/api?access_key={SECRET}&x=1", ["https://h/api?access_key=", "&x=1"]),
    # ;params (SQL Server, Redshift), pwd=
    (f"jdbc:sqlserver://h:1433;databaseName=db;user=bob;password={SECRET};encrypt=true",
     ["databaseName=db;user=bob;password=", ";encrypt=true"]),
    (f"jdbc:sqlserver://h;user=bob;password={{{SECRET};x}};encrypt=true", [";encrypt=true"]),
    (f"jdbc:redshift://h:5439/dev;UID=bob;PWD={SECRET}", [";UID=bob;PWD="]),
    (f"Driver={{ODBC}};Server=h;Uid=bob;Pwd={SECRET};", ["Uid=bob;Pwd="]),
    # DB2 :params
    (f"jdbc:db2://h:50000/db:user=bob;password={SECRET};", [":user=bob;password="]),
    # Oracle thin user/pass@
    (f"jdbc:oracle:thin:scott/{SECRET}@db.example.com:1521:orcl",
     ["jdbc:oracle:thin:scott/", "@db.example.com:1521:orcl"]),
    (f"jdbc:oracle:thin:scott/{SECRET}@//db.example.com:1521/svc",
     ["scott/", "//db.example.com:1521/svc"]),
    # Azure SAS / presigned S3
    (f"https://acct.blob.core.windows.net/c/f?sv=2020&sig={SECRET}", ["?sv=2020&sig="]),
    (f"https://b.s3.amazonaws.com/k?X-Amz-Signature={SECRET}&X-Amz-Security-Token={SECRET}x",
     ["https://b.s3.amazonaws.com/k?X-Amz-Signature="]),
])
def test_redact_url(url: str, kept: list) -> None:
    out = redact_url(url)
    assert SECRET not in out, out
    assert REDACTED in out
    for part in kept:
        assert part in out, (part, out)


@pytest.mark.parametrize("url", [
    "jdbc:postgresql://h:5432/db?user=bob&ssl=true",
    "jdbc:sqlite:/tmp/x.db",
    "s3://bucket/path/to/table",
    "hdfs://nn:8020/warehouse/db.db/t",
    "jdbc:mysql://bob@h/db",  # a user without a password is not a secret
    "https://h/x?a=1&b=2",
    "file:/tmp/a=1/b",
    "",
])
def test_redact_url_leaves_clean_urls_alone(url: str) -> None:
    assert redact_url(url) == url


def test_redact_url_handles_none_and_non_strings() -> None:
    assert redact_url(None) is None
    assert redact_url(12) == 12  # type: ignore[arg-type]


def test_redact_url_inside_text() -> None:
    text = (f"read jdbc:postgresql://h/db?user=a&password={SECRET} and wrote "
            f"mysql://u:{SECRET}@h2/x then s3://b/k")
    out = redact_url(text)
    assert SECRET not in out
    assert "s3://b/k" in out and "read jdbc:postgresql://h/db?user=a&password=" in out


def test_redact_url_custom_regex() -> None:
    url = "jdbc:postgresql://h/db?user=bob&tenant_code=abc123"
    assert "abc123" not in redact_url(url, r"(?i)tenant")
    assert "abc123" in redact_url(url)


# ----------------------------------------------------------------------------- options
def test_redact_options() -> None:
    opts = {
        "url": f"jdbc:postgresql://h/db?user=bob&password={SECRET}",
        "dbtable": "public.t",
        "user": "bob",
        "password": SECRET,
        "spark.hadoop.fs.s3a.secret.key": SECRET,
        "fs.s3a.access.key": "AKIAXXXX",
        "token": SECRET,
        "numPartitions": 4,
        "query": f"select * from t where password = '{SECRET}'",
    }
    out = redact_options(opts)
    assert SECRET not in json.dumps(out)
    assert "AKIAXXXX" not in json.dumps(out)
    assert out["password"] == REDACTED
    assert out["token"] == REDACTED
    assert out["user"] == "bob"
    assert out["dbtable"] == "public.t"
    assert out["numPartitions"] == 4
    assert out["url"].startswith("jdbc:postgresql://h/db?user=bob&password=")
    assert opts["password"] == SECRET  # the input is not modified


def test_redact_options_nested_and_empty() -> None:
    assert redact_options(None) == {}
    assert redact_options({}) == {}
    out = redact_options({"conf": {"secret": SECRET, "a": "b"}})
    assert out == {"conf": {"secret": REDACTED, "a": "b"}}


@pytest.mark.parametrize("sql,kept", [
    (f"CREATE TABLE t USING jdbc OPTIONS (url 'jdbc:sqlite:/tmp/a.db', dbtable 't', "
     f"user 'bob', password '{SECRET}')", ["url 'jdbc:sqlite:/tmp/a.db'", "user 'bob'",
                                            "password '"]),
    (f"CREATE TABLE t USING jdbc OPTIONS (password \"{SECRET}\", user \"bob\")",
     ['user "bob"']),
    (f"CREATE TABLE t USING jdbc OPTIONS (`password` '{SECRET}')", ["`password` '"]),
    (f"... OPTIONS (password='{SECRET}', dbtable='x')", ["dbtable='x'"]),
    (f'... OPTIONS ("password" = "{SECRET}")', ['"password" = "']),
    (f"ALTER TABLE t SET TBLPROPERTIES ('fs.s3a.secret.key' = '{SECRET}', 'a' = 'b')",
     ["'a' = 'b'"]),
    (f"SET spark.hadoop.fs.s3a.secret.key={SECRET}", ["SET spark.hadoop.fs.s3a.secret.key="]),
    (f"SET spark.hadoop.fs.s3a.secret.key = {SECRET};", ["SET spark.hadoop.fs.s3a.secret.key = "]),
    (f"CREATE TABLE t USING jdbc OPTIONS (url 'jdbc:postgresql://h/db?user=a&password={SECRET}')",
     ["url 'jdbc:postgresql://h/db?user=a&password="]),
    (f"CREATE TABLE t USING jdbc OPTIONS (url \"jdbc:mysql://a:{SECRET}@h/db\")",
     ['url "jdbc:mysql://a:']),
    (f"SELECT * FROM users WHERE api_token = '{SECRET}'",
     ["SELECT * FROM users WHERE api_token = '"]),
    (f"SELECT map('password', '{SECRET}', 'user', 'bob')", ["'user', 'bob'"]),
    (f"CREATE USER bob IDENTIFIED BY '{SECRET}'", ["CREATE USER bob IDENTIFIED BY"]),
    (f"OPTIONS (password 'it''s{SECRET}')", ["OPTIONS (password '"]),
    (f"OPTIONS (password 'a\\'{SECRET}')", ["OPTIONS (password '"]),
    (f'{{"user": "bob", "password": "{SECRET}"}}', ['"user": "bob"']),
    (f"OPTIONS (accessKey '{SECRET}')", []),
])
def test_redact_sql(sql: str, kept: list) -> None:
    out = redact_sql(sql)
    assert SECRET not in out, out
    assert REDACTED in out
    for part in kept:
        assert part in out, (part, out)


@pytest.mark.parametrize("sql", [
    "INSERT INTO t SELECT id, name FROM s WHERE name = 'bob'",
    "CREATE TABLE t USING parquet OPTIONS (path '/tmp/x', compression 'snappy')",
    "SELECT password_hash FROM users",
    "SELECT 'password' AS label FROM t",
    "",
])
def test_redact_sql_leaves_clean_sql_alone(sql: str) -> None:
    assert redact_sql(sql) == sql


def test_redact_sql_is_idempotent() -> None:
    sql = (f"OPTIONS (password '{SECRET}', url 'jdbc:x://h/d?password={SECRET}') "
           f"SET a.secret={SECRET}")
    once = redact_sql(sql)
    assert redact_sql(once) == once
    assert SECRET not in once


# ----------------------------------------------------------------------------- secrets
def test_redact_text_known_secrets() -> None:
    token = "tok_abc+/=def"
    text = (f"Authorization: Bearer {token}; url-encoded tok_abc%2B%2F%3Ddef; "
            f"plus tok_abc%2B%2F%3Ddef; json {json.dumps({'t': token})}")
    out = redact_text(text, [token, None, ""])
    assert token not in out
    assert "tok_abc%2B%2F%3Ddef" not in out
    assert out.count(REDACTED) >= 3


def test_redact_text_json_escaped_secret() -> None:
    secret = 'pa"ss\\word'
    body = json.dumps({"query_str": f"x {secret} y"})
    assert secret not in json.loads(redact_text(body, [secret]))["query_str"]


def test_redact_text_skips_tiny_secrets_and_none() -> None:
    assert redact_text("a b c", ["a"]) == "a b c"
    assert redact_text(None, ["abcd"]) is None
    assert redact_text("nothing", []) == "nothing"


def test_redact_string_combines_all() -> None:
    token = "tkn-1234567890"
    text = (f"token {token} url jdbc:pg://h/db?password={SECRET} "
            f"OPTIONS (password '{SECRET}')")
    out = redact_string(text, None, [token])
    assert token not in out and SECRET not in out


# ----------------------------------------------------------------------------- payloads
def test_redacting_filter(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("definity_spark.test_redaction_filter")
    token = "tkn-1234567890"
    flt = install_log_filter(None, [token])
    try:
        assert any(isinstance(f, RedactingFilter) for f in logger.filters)
        with caplog.at_level(logging.DEBUG, logger="definity_spark"):
            logger.warning("sending with %s to %s", token,
                           f"jdbc:pg://h/db?password={SECRET}")
            try:
                raise ValueError(f"bad password '{SECRET}' for token {token}")
            except ValueError:
                logger.exception("failed")
        text = caplog.text
        assert token not in text and SECRET not in text
        assert "sending with" in text and "failed" in text
    finally:
        for name in ["definity_spark", "definity_spark.test_redaction_filter"]:
            logging.getLogger(name).removeFilter(flt)


def test_redacting_filter_never_raises() -> None:
    flt = RedactingFilter(None, ["abcd1234"])
    record = logging.LogRecord("definity_spark", logging.INFO, __file__, 1,
                               "bad %d format", ("not-a-number",), None)
    assert flt.filter(record) is True


def test_log_filter_covers_loggers_created_later(caplog: pytest.LogCaptureFixture) -> None:
    """The delivery module may be imported after activate() installed the filter."""
    import definity_spark.redaction as red

    token = "tkn-later-1234567"
    flt = install_log_filter(None, [token])
    try:
        assert "delivery" in red.PLUGIN_LOGGERS
        later = logging.getLogger("definity_spark.delivery")  # the object modules get
        with caplog.at_level(logging.DEBUG, logger="definity_spark"):
            later.warning("sent with %s", token)
        assert token not in caplog.text and "sent with" in caplog.text
    finally:
        for name in ["definity_spark"] + [f"definity_spark.{c}" for c in red.PLUGIN_LOGGERS]:
            logging.getLogger(name).removeFilter(flt)
