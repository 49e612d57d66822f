"""Redaction where other rooms emit text: the extraction's SQL/URL redaction and doctor's
settings display must not let any credential of tests/test_redaction.py's cases through.

Pure (no Spark): these are the functions the rooms call on their way out. The end-to-end
proof with a real JDBC application is tests/test_fault_suite.py::test_jdbc_password_...
"""

from __future__ import annotations

import pytest
import test_redaction as cases

from definity_spark import settings as settings_mod
from definity_spark.redaction import redact_string

SECRET = cases.SECRET


def _params(test_function: object) -> list:
    for mark in getattr(test_function, "pytestmark", []):
        if mark.name == "parametrize":
            return [p[0] for p in mark.args[1]]
    raise AssertionError("no parametrize mark")


SQL_CASES = _params(cases.test_redact_sql)
URL_CASES = _params(cases.test_redact_url)


@pytest.mark.parametrize("text", SQL_CASES + URL_CASES)
def test_redaction_reference_implementation(text: str) -> None:
    assert SECRET not in redact_string(text)


@pytest.mark.parametrize("text", SQL_CASES + URL_CASES)
def test_extraction_redacts_query_text_and_names(text: str) -> None:
    """``lineage.rules.redact`` is what the extraction applies to query_str, action
    descriptions and error texts (it should delegate to ``redaction.redact_string``)."""
    rules = pytest.importorskip("definity_spark.lineage.rules")
    out = rules.redact(text, None)
    assert SECRET not in out, out


def test_extraction_redacts_with_a_custom_regex() -> None:
    rules = pytest.importorskip("definity_spark.lineage.rules")
    out = rules.redact("OPTIONS (tenant_code 'abc123', path '/x')", r"(?i)tenant")
    assert "abc123" not in out
    assert "path '/x'" in out  # what is not sensitive stays


@pytest.mark.parametrize("url", [
    f"https://bob:{SECRET}@definity.example.com",
    f"https://definity.example.com/?token={SECRET}",
    f"https://definity.example.com/api?access_key={SECRET}&x=1",
])
def test_doctor_settings_display_hides_url_credentials(url: str) -> None:
    settings = settings_mod.resolve(overrides={"server_url": url}, spark_conf={}, environ={})
    shown = " ".join(f"{k} {v}" for k, v, _ in settings.describe())
    assert SECRET not in shown
    assert SECRET not in repr(settings)


def test_doctor_settings_display_hides_the_token() -> None:
    settings = settings_mod.resolve(overrides={"token": SECRET}, spark_conf={}, environ={})
    shown = " ".join(f"{k} {v}" for k, v, _ in settings.describe())
    assert SECRET not in shown and SECRET not in repr(settings)
