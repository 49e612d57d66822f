"""Issue 20, items 2-4: credentials that got through before, and the places they leaked.

Pure where the room is pure (names, URLs, SQL text); the ``doctor`` and ``replay``
commands run as real subprocesses (the installed console entry point), with the server
URL carrying the credentials.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import pytest

from definity_spark import settings as settings_mod
from definity_spark.lineage import naming
from definity_spark.redaction import (
    REDACTED,
    is_sensitive_name,
    redact_options,
    redact_string,
    redact_url,
)

SECRET = "Sx9-hidden-Q7"


# ----------------------------------------------------------------------------- item 2
@pytest.mark.parametrize("name", [
    "es.net.http.auth.pass", "passphrase", "ssl.key.passphrase", "x-api-key", "X-API-KEY",
    "gcpCredentials", "spark.hadoop.google.cloud.auth.credentials", "client_secret",
    "clientSecret", "refresh_token", "sasToken", "userPass", "key",
])
def test_credential_option_names_are_sensitive(name: str) -> None:
    assert is_sensitive_name(name)
    assert redact_options({name: SECRET, "path": "/data/x"}) == {name: REDACTED,
                                                                 "path": "/data/x"}


@pytest.mark.parametrize("text", [
    f"https://maps.example.com/api?key={SECRET}&q=1",
    f"https://h/x?x-api-key={SECRET}",
    f"jdbc:es://h:9200/?es.net.http.auth.pass={SECRET}",
    f"CREATE TABLE t USING es OPTIONS ('es.net.http.auth.pass' '{SECRET}', path '/x')",
    f"CREATE TABLE t USING bigquery OPTIONS (gcpCredentials '{SECRET}')",
    f"SET spark.ssl.keyStore.passphrase={SECRET}",
])
def test_credential_names_in_urls_and_sql(text: str) -> None:
    out = redact_string(text)
    assert SECRET not in out, out
    assert REDACTED in out


@pytest.mark.parametrize("name", ["path", "dbtable", "keyspace", "partitionKey", "mode"])
def test_ordinary_names_stay_readable(name: str) -> None:
    assert not is_sensitive_name(name)


# ----------------------------------------------------------------------------- item 3
@pytest.mark.parametrize("url,table,expected", [
    (f"jdbc:mysql://bob:Pa?{SECRET}@db:3306/shop", "orders", "mysql://db:3306/shop/orders"),
    (f"jdbc:mysql://bob:Pa;{SECRET}@db:3306/shop;x=1", "orders",
     "mysql://db:3306/shop/orders"),
    (f"jdbc:postgresql://bob:a/b#c{SECRET}@db1:5432/shop?ssl=true", "public.orders",
     "postgresql://db1:5432/shop/public.orders"),
    (f"jdbc:mysql://bob:Pa ss{SECRET}@db/shop", "t", "mysql://db/shop/t"),
    (f"jdbc:mysql://bob:x@{SECRET}@db,db2:3307/shop", "t", "mysql://db,db2:3307/shop/t"),
    (f"jdbc:mysql://bob@db/shop?password={SECRET}", "t", "mysql://db/shop/t"),
    (f"jdbc:oracle:thin:scott/ti?@{SECRET}@h:1521/svc", "t", "oracle:thin:@h:1521/svc/t"),
    (f"jdbc:oracle:thin:scott/{SECRET}@(DESCRIPTION=(ADDRESS=(HOST=h)))", "t",
     "oracle:thin:@(DESCRIPTION=(ADDRESS=(HOST=h)))/t"),
    # an e-mail address in a parameter is not user-info: the name stays the host's
    ("jdbc:snowflake://acct.snowflakecomputing.com/?user=bob@corp.com", "t",
     "snowflake://acct.snowflakecomputing.com/t"),
    (f"jdbc:sqlserver://h:1433;user=bob@corp.com;password={SECRET}", "dbo.t",
     "sqlserver://h:1433/dbo.t"),
])
def test_jdbc_names_never_carry_user_info(url: str, table: str, expected: str) -> None:
    name = naming.jdbc_name(url, table)
    assert name == expected
    assert SECRET not in name and "bob" not in name and "scott" not in name


@pytest.mark.parametrize("uri,expected", [
    (f"s3a://AKIAEXAMPLE:{SECRET}/x@bucket/t", "s3://bucket/t"),
    (f"hdfs://bob:{SECRET}@nn:8020/warehouse/t", "hdfs://nn:8020/warehouse/t"),
    # no password: Azure's container@account is the name, and an @ in a path is data
    ("abfss://raw@acct.dfs.core.windows.net/events", "abfss://raw@acct.dfs.core.windows.net/events"),
    ("hdfs://nn:8020/user/bob@corp/t", "hdfs://nn:8020/user/bob@corp/t"),
])
def test_path_names_never_carry_a_password(uri: str, expected: str) -> None:
    assert naming.path_name(uri) == expected


@pytest.mark.parametrize("sql", [
    f"CREATE TABLE t USING jdbc OPTIONS (url 'jdbc:mysql://bob:Pa ss{SECRET}@db:3306/shop', "
    "dbtable 'x')",
    f"CREATE TABLE t USING jdbc OPTIONS (url \"jdbc:mysql://bob:Pa?{SECRET};x@db/shop\")",
    f"INSERT INTO jdbc.`mysql://bob:a#{SECRET}@db/shop`.t SELECT 1",
    f"read jdbc:oracle:thin:scott/p {SECRET}@h:1521/svc",
])
def test_query_text_keeps_no_part_of_a_password(sql: str) -> None:
    out = redact_string(sql)
    assert SECRET not in out, out
    assert REDACTED in out


def test_prose_after_a_url_is_not_taken_for_a_password() -> None:
    text = "-- copied from hdfs://nn:8020/x, ask bob@corp.com"
    assert redact_url(text) == text


# ----------------------------------------------------------------------------- item 4
@pytest.mark.parametrize("url", [
    f"https://bob:{SECRET}@definity.example.com",
    f"bob:{SECRET}@definity.example.com",
    f"definity.example.com/x?token={SECRET}",
    f"https://definity.example.com/x?key={SECRET}",
])
def test_mask_url_hides_user_info_and_keys(url: str) -> None:
    from definity_spark.redaction import mask_url

    shown = mask_url(url)
    assert SECRET not in shown and "definity.example.com" in shown


@pytest.mark.parametrize("raw", [
    f"bob:{SECRET}@definity.example.com",      # no scheme: refused, echoed in the warning
    f"https://definity.example.com/?token={SECRET}",  # a query string: refused too
    f"definity.example.com?api_key={SECRET}",
])
def test_a_refused_server_value_is_warned_about_masked(raw: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    # settings.resolve() warns before any log filter exists: the text itself must be clean
    with caplog.at_level(logging.WARNING, logger="definity_spark.settings"):
        s = settings_mod.resolve(None, {"spark.definity.server": raw}, {})
    assert s.server_url is None
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "spark.definity.server" in messages[0], messages
    assert SECRET not in messages[0]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "import sys; from definity_spark.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _clean_env(tmp_path: Any, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEFINITY_")}
    env.update(DEFINITY_SPOOL_DIR=str(tmp_path / "spool"), DEFINITY_AUTOLOAD="0", **extra)
    return env


def test_doctor_never_prints_url_credentials(tmp_path: Any) -> None:
    from faulty_server import FaultyServer

    server = FaultyServer()
    try:
        url = server.url.replace("http://", f"http://bob:{SECRET}@")
        result = _cli("doctor", env=_clean_env(tmp_path, DEFINITY_SERVER_URL=url))
    finally:
        server.close()
    out = result.stdout + result.stderr
    assert "server: http://***@127.0.0.1" in result.stdout, out  # it did check the server
    assert SECRET not in out


def test_replay_never_prints_url_credentials(tmp_path: Any) -> None:
    from faulty_server import FaultyServer

    from definity_spark.delivery.spool import Spool

    spool = Spool(str(tmp_path / "spool"))
    spool.append("t-1", [{"seq": 1, "endpoint": "/log/task",
                          "body": {"task_id": "t-1", "status": "end"}}])
    spool.close()
    server = FaultyServer()
    try:
        url = server.url.replace("http://", f"http://bob:{SECRET}@")
        result = _cli("replay", "--server", url, env=_clean_env(tmp_path))
        received = server.bodies()
    finally:
        server.close()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert received == [{"task_id": "t-1", "status": "end"}]
    assert "to http://***@127.0.0.1" in result.stdout, out
    assert SECRET not in out
