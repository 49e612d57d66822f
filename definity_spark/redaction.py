"""Redaction: credentials never leave the process in anything the plugin emits or stores.

Pure functions (no Spark, no I/O) applied to every string the plugin takes from the host
program before it becomes a payload, a log line, a spool record or ``doctor`` output:

* ``redact_url(text)``: credentials inside URLs (JDBC or HTTP), wherever they occur in
  the text: the password of ``user:pass@`` (and Oracle's ``user/pass@``), and the value
  of every ``?query`` / ``&``, ``;params`` or ``:params`` parameter whose name matches
  the redaction regex or is a well-known credential name (``pwd``, ``passwd``, ``sig``, ...).
  Where user-info ends is ``userinfo_at``'s business (shared with ``lineage.naming``): a
  password may hold ``? ; / # @`` and blanks.
* ``mask_url(url)``: a URL for display (``doctor``, ``replay``, warnings): user-info as
  ``***``, with or without a scheme, and sensitive parameters redacted.
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
* ``RedactingFilter``: a ``logging.Filter`` that applies it to log records.

The regex is searched (not fully matched) in a name, as Spark does with
``spark.redaction.regex``; its default is Spark's default,
``(?i)secret|password|token|access[.]?key``, and ``Settings.redaction_pattern()`` gives the
effective one (``spark.definity.redaction.regex`` > ``spark.redaction.regex`` > default).
The replacement text is Spark's own, ``*********(redacted)``, so redacted values look
the same in the Spark UI and in Definity.

Deliberate limits, in the safe direction: an ``@`` later in a URL (a path
``hdfs://nn:8020/u/bob@corp``) may be taken for the end of a password and take part of the
path with it; a user name without a password (``user@host``) is kept; names ending in
``pass`` (``bypass``) are redacted; secrets shorter than ``MIN_SECRET_LEN`` characters are
not searched as free text (they would shred ordinary words), but they are still redacted
where they appear as a credential value.
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
# keys, private keys, Google's ``?key=``, and every name *ending* in ``pass``,
# ``passphrase``, ``api-key``/``apikey``, ``credentials``, ``secret`` or ``token``
# (``es.net.http.auth.pass``, ``x-api-key``, ``gcpCredentials``; a harmless name such as
# ``bypass`` is redacted too: the safe direction).
ALWAYS_REDACTED_NAMES = (
    r"(?i)^(?:pwd|passwd|pass|sig|signature|x-amz-signature|x-amz-credential|apikey|"
    r"api[-_.]?key|auth|authorization|credentials?|key)$|access[-_]key|account[-_.]?key|"
    r"private[-_.]?key|(?:pass|passphrase|api[-_.]?key|apikey|credentials?|secret|token)$"
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
# A parameter: ?name=value, &name=value, ;name=value, :name=value (DB2 style).
# SQL Server allows {braced values; with ; inside}.
_PARAM = re.compile(
    r"(?P<sep>[?&;:])(?P<name>[A-Za-z0-9_.\-]+)=(?P<value>\{[^}]*\}|[^&;#\s'\"]*)"
)
# What follows the ``@`` that ends user-info: one host (name, IPv4, [IPv6]) with an optional
# port, or a list of them (MySQL, PostgreSQL failover), then the end of the authority.
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?)(?::\d{1,5})?"
_HOSTS = _HOST + r"(?:," + _HOST + r")*"
_AFTER_AT = re.compile(_HOSTS + r"(?=[/?;#:\s'\"`)\\]|$)")
# Oracle thin's user/password@ is followed by //host, host or a (DESCRIPTION=...) block.
_AFTER_AT_ORACLE = re.compile(r"//|\(|" + _HOSTS + r"(?=[/?;#:\s'\"`)\\]|$)")
# A clean authority and path before the first ``?``/``;`` parameter: an ``@`` after it is in
# a parameter value (``?user=bob@corp.com``), not the end of user-info.
_AUTHORITY_PATH = re.compile(_HOSTS + r"(?:/[^\s?;#@]*)?")
_PARAM_START = re.compile(r"[?;&][A-Za-z0-9_.\-]+=")
# A URL inside free text ends at a quote or a line end (or after this many characters);
# a password may hold spaces, ``?``, ``;``, ``/``, ``#`` and ``@``.
_TEXT_URL_END = re.compile(r"['\"`\r\n]")
_TEXT_URL_MAX = 1024
# host:port followed by a path or a blank: ``hdfs://nn:8020/x and bob@corp`` is a URL and
# prose, not a user ``nn`` with a password containing a blank.
_PORT_THEN_END = re.compile(r"\d{1,5}(?:[/?#;]|\s|$)")
_ORACLE_PREFIX = re.compile(r"(?i)jdbc:oracle:[a-z0-9]+:")


def userinfo_at(text: str, begin: int, end: int | None = None, oracle: bool = False) -> int:
    """The index of the ``@`` that ends the user-info of the URL authority starting at
    ``begin`` (just after ``//``, or after Oracle's ``thin:``), or -1 when there is none.

    It is the *last* ``@`` before ``end`` that is followed by a host (list) and the end of
    the authority, so that a password may contain ``@ / ? ; # :`` and blanks; an ``@``
    inside a parameter of a clean ``host/path?...`` (an e-mail address as user name) does
    not count.
    """
    end = len(text) if end is None else end
    after = _AFTER_AT_ORACLE if oracle else _AFTER_AT
    found = -1
    at = text.find("@", begin, end)
    while at >= 0:
        if after.match(text, at + 1) and not _in_parameter(text, begin, at):
            found = at
        at = text.find("@", at + 1, end)
    return found


def _in_parameter(text: str, begin: int, at: int) -> bool:
    param = _PARAM_START.search(text, begin, at)
    return bool(param and _AUTHORITY_PATH.fullmatch(text, begin, param.start()))


def redact_url(text: str | None, regex: PatternLike = None) -> str | None:
    """Redact credentials from every URL in ``text`` (a JDBC/HTTP URL or text holding some).

    ``user:pass@`` keeps the user, redacts the password; parameters whose name is
    sensitive (``is_sensitive_name``) keep their name, lose their value.
    """
    if not text or not isinstance(text, str):
        return text
    pat = pattern(regex)
    out = _redact_userinfo(text)
    out = _redact_oracle(out)

    def param(m: re.Match[str]) -> str:
        name = m.group("name")
        if m.group("value") and is_sensitive_name(name, pat):
            return f"{m.group('sep')}{name}={REDACTED}"
        return m.group(0)

    return _PARAM.sub(param, out)


def _text_url_end(text: str, begin: int) -> int:
    stop = _TEXT_URL_END.search(text, begin)
    return min(stop.start() if stop else len(text), begin + _TEXT_URL_MAX)


def _redact_userinfo(text: str) -> str:
    """``scheme://user:pass@host`` -> ``scheme://user:*********(redacted)@host``.

    The user info ends at ``userinfo_at``; a user (``user@host``) without a password is
    kept.
    """
    parts: list[str] = []
    pos = 0
    while True:
        start = text.find("//", pos)
        if start < 0:
            break
        begin = start + 2
        end = _text_url_end(text, begin)
        at = userinfo_at(text, begin, end)
        colon = text.find(":", begin, at) if at > 0 else -1
        if colon >= 0 and any(ch.isspace() for ch in text[colon:at]) \
                and _PORT_THEN_END.match(text, colon + 1):
            # host:port then prose: look no further than the first blank
            blank = next(i for i in range(colon, at) if text[i].isspace())
            at = userinfo_at(text, begin, blank)
            colon = text.find(":", begin, at) if at > 0 else -1
        user = text[begin:colon] if colon >= 0 else ""
        if at > 0 and colon >= 0 and not any(ch == "/" or ch.isspace() for ch in user):
            parts.append(text[pos:colon + 1])
            parts.append(REDACTED if at > colon + 1 else "")
            pos = at
        else:
            parts.append(text[pos:begin])
            pos = begin
    parts.append(text[pos:])
    return "".join(parts)


def _redact_oracle(text: str) -> str:
    """Oracle thin: ``jdbc:oracle:thin:scott/tiger@host`` -> ``scott/*********(redacted)@``."""
    parts: list[str] = []
    pos = 0
    for m in _ORACLE_PREFIX.finditer(text):
        begin = m.end()
        if begin < pos:
            continue
        at = userinfo_at(text, begin, _text_url_end(text, begin), oracle=True)
        slash = text.find("/", begin, at) if at > 0 else -1
        if slash > begin and not any(ch.isspace() or ch == "@" for ch in text[begin:slash]):
            parts.append(text[pos:slash + 1])
            parts.append(REDACTED)
            pos = at
    parts.append(text[pos:])
    return "".join(parts)


def mask_url(url: str | None) -> str | None:
    """A URL for display (doctor, replay, warnings): the user-info as ``***`` (with or
    without a scheme: ``bob:pw@host`` too) and sensitive parameters redacted."""
    if not url or not isinstance(url, str):
        return url
    begin = url.find("//")
    begin = begin + 2 if begin >= 0 else 0
    at = userinfo_at(url, begin)
    if at < 0 and begin == 0:
        at = url.find("@", 0, next((i for i, ch in enumerate(url) if ch in "/?#"), len(url)))
    if at >= 0:
        url = url[:begin] + "***" + url[at:]
    return redact_url(url)


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
