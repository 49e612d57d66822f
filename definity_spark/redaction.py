"""Redaction: credentials never leave the process in anything the plugin emits or stores.

Pure functions (no Spark, no I/O) applied to every string the plugin takes from the host
program before it becomes a payload, a log line, a spool record or ``doctor`` output:

* ``redact_url(text)``: credentials inside URLs (JDBC or HTTP), wherever they occur in
  the text: the password of ``user:pass@`` (and Oracle's ``user/pass@``), and the value
  of every ``?query`` / ``&``, ``;params`` or ``:params`` parameter whose name matches
  the redaction regex or is a well-known credential name (``pwd``, ``passwd``, ``sig``, ...).
* ``redact_options(mapping)``: DataFrame reader/writer options: values of keys that match
  the regex become ``*********(redacted)``; other string values go through
  ``redact_string`` (a ``url`` option carries ``password=`` in its query, a ``query``
  option carries SQL).
* ``redact_sql(text)``: literals that follow such a name in SQL text
  (``OPTIONS (password 'x')``, ``password='x'``, ``"password" = "x"``,
  ``'spark.secret.key' = 'x'``, ``SET ...secret.key=x``, ``IDENTIFIED BY 'x'``), plus
  ``redact_url`` for URL literals (``url 'jdbc:...user=a&password=b'``).
* ``redact_text(text, secrets)``: known secret values (the token, a password read from
  the options) wherever they occur, also URL-encoded and JSON-escaped.
* ``redact_payload(body, ...)``: all of the above over a JSON-able payload body.
* ``RedactingFilter``: a ``logging.Filter`` that applies it to log records.

The regex is searched (not fully matched) in a name, as Spark does with
``spark.redaction.regex``; its default is Spark's default,
``(?i)secret|password|token|access[.]?key``, and ``Settings.redaction_pattern()`` gives the
effective one (``spark.definity.redaction.regex`` > ``spark.redaction.regex`` > default).
The replacement text is Spark's own, ``*********(redacted)``, so redacted values look
the same in the Spark UI and in Definity.

Deliberate limits, in the safe direction: a password containing ``@`` may take part of a
host with it; a user name without a password (``user@host``) is kept; secrets shorter
than ``MIN_SECRET_LEN`` characters are not searched as free text (they would shred
ordinary words), but they are still redacted where they appear as a credential value.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union
from urllib.parse import quote, quote_plus

REDACTED = "*********(redacted)"
DEFAULT_REGEX = r"(?i)secret|password|token|access[.]?key"

# Credential names that Spark's default regex does not catch but that always carry a
# secret in URLs and options: ODBC/JDBC ``PWD``, Azure SAS ``sig``, AWS presigned URLs,
# ``access_key`` (Spark's ``access[.]?key`` misses the underscore), Azure storage account
# keys, private keys.
ALWAYS_REDACTED_NAMES = (
    r"(?i)^(?:pwd|passwd|pass|sig|signature|x-amz-signature|x-amz-credential|apikey|"
    r"api[-_.]?key|auth|authorization|credentials?)$|access[-_]key|account[-_.]?key|"
    r"private[-_.]?key"
)

# Free-text search for known secrets below this length would shred ordinary text.
MIN_SECRET_LEN = 4

PatternLike = Union[str, "re.Pattern[str]", None]


# --------------------------------------------------------------------------- names
@functools.lru_cache(maxsize=32)
def _compile(regex: str) -> re.Pattern[str]:
    try:
        return re.compile(regex)
    except re.error:
        # settings.resolve() validates the regex; a bad one here (a hand-built call)
        # must not turn redaction off, so fall back to Spark's default.
        return re.compile(DEFAULT_REGEX)


_ALWAYS = re.compile(ALWAYS_REDACTED_NAMES)


def pattern(regex: PatternLike = None) -> re.Pattern[str]:
    """The compiled redaction regex: ``regex`` (string or compiled), else the default."""
    if regex is None or regex == "":
        return _compile(DEFAULT_REGEX)
    if isinstance(regex, str):
        return _compile(regex)
    return regex


def is_sensitive_name(name: str, regex: PatternLike = None) -> bool:
    """True when a key / parameter / option name carries a secret value."""
    name = _unquote_name(str(name))
    return bool(pattern(regex).search(name) or _ALWAYS.search(name))


def _unquote_name(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "'\"`":
        return name[1:-1]
    return name


# --------------------------------------------------------------------------- URLs
# Oracle thin: jdbc:oracle:thin:scott/tiger@host:1521:sid (also @//host/svc)
_ORACLE = re.compile(r"(?i)(jdbc:oracle:[a-z0-9]+:)([^/@\s'\"]+)/([^\s'\"]*)@")
# A parameter: ?name=value, &name=value, ;name=value, :name=value (DB2 style).
# SQL Server allows {braced values; with ; inside}.
_PARAM = re.compile(
    r"(?P<sep>[?&;:])(?P<name>[A-Za-z0-9_.\-]+)=(?P<value>\{[^}]*\}|[^&;#\s'\"]*)"
)
# The end of a URL's authority part: query, fragment, JDBC params, whitespace, quotes.
_AUTHORITY_END = re.compile(r"[?#;\s'\"]")


def redact_url(text: str | None, regex: PatternLike = None) -> str | None:
    """Redact credentials from every URL in ``text`` (a JDBC/HTTP URL or text holding some).

    ``user:pass@`` keeps the user, redacts the password; parameters whose name is
    sensitive (``is_sensitive_name``) keep their name, lose their value.
    """
    if not text or not isinstance(text, str):
        return text
    pat = pattern(regex)
    out = _redact_userinfo(text)
    out = _ORACLE.sub(lambda m: f"{m.group(1)}{m.group(2)}/{REDACTED}@", out)

    def param(m: re.Match[str]) -> str:
        name = m.group("name")
        if m.group("value") and is_sensitive_name(name, pat):
            return f"{m.group('sep')}{name}={REDACTED}"
        return m.group(0)

    return _PARAM.sub(param, out)


def _redact_userinfo(text: str) -> str:
    """``scheme://user:pass@host`` -> ``scheme://user:*********(redacted)@host``.

    The user info ends at the last ``@`` before the end of the authority (query,
    fragment, ``;params``, whitespace, quote), so a password may contain ``@`` or ``/``.
    """
    parts: list[str] = []
    pos = 0
    while True:
        start = text.find("//", pos)
        if start < 0:
            break
        begin = start + 2
        end_match = _AUTHORITY_END.search(text, begin)
        end = end_match.start() if end_match else len(text)
        at = text.rfind("@", begin, end)
        colon = text.find(":", begin, at) if at > 0 else -1
        if at > 0 and colon >= 0 and "/" not in text[begin:colon]:
            parts.append(text[pos:colon + 1])
            parts.append(REDACTED if at > colon + 1 else "")
            pos = at
        else:
            parts.append(text[pos:begin])
            pos = begin
    parts.append(text[pos:])
    return "".join(parts)


# --------------------------------------------------------------------------- options
def redact_options(mapping: Mapping[str, Any] | None,
                   regex: PatternLike = None) -> dict:
    """A copy of ``mapping`` with the values of sensitive keys replaced by ``REDACTED``.

    Other string values go through ``redact_string`` (URLs and SQL inside option values);
    nested mappings are redacted the same way; other values are kept.
    """
    if not mapping:
        return {}
    pat = pattern(regex)
    out = {}
    for key, value in mapping.items():
        if value is not None and is_sensitive_name(str(key), pat):
            out[key] = REDACTED
        elif isinstance(value, str):
            out[key] = redact_string(value, pat)
        elif isinstance(value, Mapping):
            out[key] = redact_options(value, pat)
        else:
            out[key] = value
    return out


def secrets_from_options(mapping: Mapping[str, Any] | None,
                         regex: PatternLike = None) -> list[str]:
    """The values of sensitive keys (to redact them as free text elsewhere)."""
    if not mapping:
        return []
    pat = pattern(regex)
    return [str(v) for k, v in mapping.items()
            if v is not None and str(v) and is_sensitive_name(str(k), pat)]


# --------------------------------------------------------------------------- SQL
_SQ = r"'(?:[^'\\]|\\.|'')*'"
_DQ = r'"(?:[^"\\]|\\.|"")*"'
_NAME = r"`[^`]+`|" + _SQ + "|" + _DQ + r"|[A-Za-z_][A-Za-z0-9_.\-]*"
# name [=|=>|:] 'literal'  (OPTIONS (password 'x'), password='x', "k": "v", 'k' = 'v')
_NAME_LITERAL = re.compile(
    r"(?P<name>" + _NAME + r")(?P<sep>\s*(?:=>|=|:|,)?\s*)(?P<lit>" + _SQ + "|" + _DQ + ")"
)
# SET key = unquoted value (to the end of the statement)
_SET_UNQUOTED = re.compile(
    r"(?i)(?P<head>\bSET\s+(?P<name>[A-Za-z0-9_.\-`]+)\s*=\s*)(?P<value>[^'\"\s;][^;\n]*)"
)
# name = unquoted token (key=value lists, TBLPROPERTIES without quotes)
_NAME_BARE = re.compile(
    r"(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<sep>\s*=\s*)"
    r"(?P<value>[^\s'\",;()=*][^\s'\",;()=]*)"
)
_IDENTIFIED_BY = re.compile(r"(?i)(\bIDENTIFIED\s+BY\s+)(" + _SQ + "|" + _DQ + r"|\S+)")


def redact_sql(text: str | None, regex: PatternLike = None) -> str | None:
    """Redact literals that follow a sensitive name in SQL text, and URL credentials."""
    if not text or not isinstance(text, str):
        return text
    pat = pattern(regex)
    out = redact_url(text, pat)

    def name_literal(m: re.Match[str]) -> str:
        name, sep, lit = m.group("name"), m.group("sep"), m.group("lit")
        # "," joins a key and its value only in map('password', 'x') style lists
        if "," in sep and name[:1] not in "'\"":
            return m.group(0)
        if not is_sensitive_name(name, pat):
            return m.group(0)
        quote_char = lit[0]
        return f"{name}{sep}{quote_char}{REDACTED}{quote_char}"

    out = _NAME_LITERAL.sub(name_literal, out)

    def set_unquoted(m: re.Match[str]) -> str:
        if not is_sensitive_name(m.group("name").strip("`"), pat):
            return m.group(0)
        return m.group("head") + REDACTED

    out = _SET_UNQUOTED.sub(set_unquoted, out)

    def name_bare(m: re.Match[str]) -> str:
        value = m.group("value")
        if value == REDACTED or not is_sensitive_name(m.group("name"), pat):
            return m.group(0)
        return m.group("name") + m.group("sep") + REDACTED

    out = _NAME_BARE.sub(name_bare, out)
    out = _IDENTIFIED_BY.sub(lambda m: m.group(1) + "'" + REDACTED + "'", out)
    return out


def redact_string(text: str | None, regex: PatternLike = None,
                  secrets: Iterable[str | None] = ()) -> str | None:
    """Everything at once for a free-text string: URLs, SQL literals, known secrets."""
    if not text or not isinstance(text, str):
        return text
    return redact_text(redact_sql(text, regex), secrets)


# --------------------------------------------------------------------------- secrets
def _variants(secret: str) -> list[str]:
    """The forms a secret takes in text: raw, URL-encoded, JSON-escaped."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    # longest first, so that a form containing another is replaced whole
    return sorted((f for f in forms if f), key=len, reverse=True)


def redact_text(text: str | None, secrets: Iterable[str | None] = ()) -> str | None:
    """Replace every occurrence of a known secret value (token, password) in ``text``."""
    if not text or not isinstance(text, str):
        return text
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        if len(secret) < MIN_SECRET_LEN:
            continue
        for form in _variants(secret):
            if form in text:
                text = text.replace(form, REDACTED)
    return text


# --------------------------------------------------------------------------- payloads
def redact_payload(body: Any, regex: PatternLike = None,
                   secrets: Sequence[str | None] = ()) -> Any:
    """A redacted copy of a JSON-able value: every string through ``redact_string``,
    and the value of every mapping key that is a sensitive name replaced."""
    pat = pattern(regex)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return redact_string(value, pat, secrets)
        if isinstance(value, Mapping):
            out = {}
            for k, v in value.items():
                # keys are data too (input_datasets is keyed by dataset name)
                key = walk(k) if isinstance(k, str) else k
                if isinstance(v, (str, int, float)) and not isinstance(v, bool) \
                        and is_sensitive_name(str(k), pat):
                    out[key] = REDACTED
                else:
                    out[key] = walk(v)
            return out
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        return value

    return walk(body)


# --------------------------------------------------------------------------- logging
class RedactingFilter(logging.Filter):
    """Rewrites a record's message with ``redact_string`` (regex + known secrets).

    A logger's filters do not see records of its child loggers; attach it to each
    logger (``install_log_filter`` does that for ``definity_spark`` and its children)
    or to a handler.
    """

    def __init__(self, regex: PatternLike = None,
                 secrets: Sequence[str | None] = ()) -> None:
        super().__init__()
        self.pattern = pattern(regex)
        self.secrets: list[str] = [s for s in secrets if s]

    def add_secret(self, secret: str | None) -> None:
        if secret and secret not in self.secrets:
            self.secrets.append(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            redacted = redact_string(message, self.pattern, self.secrets)
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact_string(record.exc_text, self.pattern, self.secrets)
                # formatters that read the exception object itself (PySpark 4's JSON
                # formatter) must not see the unredacted message: keep only the text
                record.exc_info = None
            if redacted != message:
                record.msg, record.args = redacted, None
        except Exception:  # noqa: BLE001 - a log filter must never raise into the host
            pass
        return True


# The plugin's loggers. A filter on a logger does not see its children's records, so each
# gets the filter, including the ones whose module is not imported yet (getLogger creates
# the logger object the module will get later).
PLUGIN_LOGGERS = ("collector", "databricks", "delivery", "lineage", "settings", "spark",
                  "task", "autoload", "cli")


def install_log_filter(regex: PatternLike = None, secrets: Sequence[str | None] = (),
                       root: str = "definity_spark") -> RedactingFilter:
    """Attach one ``RedactingFilter`` to ``root``, to the plugin's known child loggers
    (``PLUGIN_LOGGERS``, created if needed) and to every other existing ``root.*`` logger."""
    flt = RedactingFilter(regex, secrets)
    names = [root] + [f"{root}.{child}" for child in PLUGIN_LOGGERS]
    names += [n for n in list(logging.Logger.manager.loggerDict)
              if n.startswith(root + ".") and n not in names]
    for name in names:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, RedactingFilter)]:
            logger.removeFilter(old)
        logger.addFilter(flt)
    return flt
