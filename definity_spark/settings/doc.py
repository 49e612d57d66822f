"""docs/configuration.md, rendered from ``DEFINITIONS``.

``python -m definity_spark._gen_config_doc`` writes (or checks) the file.
"""

from __future__ import annotations

from collections.abc import Iterator

from definity_spark.settings.definitions import (
    DEFINITIONS,
    KEYWORD_ALIASES,
    LOG_LEVELS,
    SettingDef,
)
from definity_spark.settings.display import _display

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
        "<!-- Generated from definity_spark/settings/definitions.py (DEFINITIONS); do not "
        "edit by hand.",
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
