"""Opt-in data quality of written data: which columns of which datasets are measured, and
what the measures become (docs/metrics.md, "Data quality").

The setting ``quality_columns`` (``spark.definity.quality.columns``) lists entries
``dataset:columns`` separated by ``;``: a dataset name as the plugin reports it (``*`` is
a wildcard: ``db.*``, ``*``), then ``*`` or column names separated by ``,``. The
measuring is Spark's own: ``spark/QualityRule.java`` adds observed metrics to the query
of a write whose target may match (a loose match in the JVM on the name's last part:
``jvm_rules``), the gatherer reads them back (``QueryFacts.observed``), ``measures``
turns them into per-column metric types, and ``select`` keeps those of the entries
that match the write's exact dataset name.

Pure: no py4j.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger("definity_spark.lineage")

# the name of the observed metrics the rule adds (FactGatherer.observe reads it back)
OBSERVED_NAME = "__definity_quality"
COLUMN_ASSET_TYPE = "column"  # the asset of a column's metrics: "<dataset>.<column>"
ROW_COUNT = "row_count"
NULL_COUNT = "null_count"
DISTINCT_COUNT_APPROX = "distinct_count_approx"
MIN = "min"
MAX = "max"
# the rule's aliases (QualityRule.measure): "rows", and "<code>:<column>"
_ROWS = "rows"
_CODES = {"nn": "non_null", "dc": DISTINCT_COUNT_APPROX, "min": MIN, "max": MAX}
_SESSION_CATALOG = "spark_catalog."
_PARTITION_DIR = re.compile(r"[^/=]+=[^/]*")


@dataclass(frozen=True)
class Entry:
    """One entry of the setting: a dataset name (``*`` wildcards) and its columns (None:
    every column)."""

    dataset: str
    columns: tuple[str, ...] | None

    def matches(self, name: str) -> bool:
        """Whether the dataset name as reported is this entry's (case-insensitive)."""
        return _glob(self.dataset).fullmatch(name) is not None or (
            self.dataset.startswith("/") and _glob("file:" + self.dataset).fullmatch(name)
            is not None)


@functools.lru_cache(maxsize=8)
def parse(text: str | None) -> tuple[Entry, ...]:
    """The setting's entries; a malformed one is skipped with a warning (once)."""
    entries = []
    for raw in (text or "").split(";"):
        raw = raw.strip()
        if not raw:
            continue
        dataset, sep, cols = raw.rpartition(":")
        dataset = dataset.strip()
        names = tuple(c.strip() for c in cols.split(",") if c.strip())
        if not sep or not dataset or not names:
            logger.warning("definity-spark: quality.columns entry %r is not "
                           "'dataset:column,column' or 'dataset:*'; ignored", raw)
            continue
        if dataset.lower().startswith(_SESSION_CATALOG):
            dataset = dataset[len(_SESSION_CATALOG):]  # named without it (docs/naming.md)
        entries.append(Entry(dataset, None if "*" in names else names))
    return tuple(entries)


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in pattern.split("*")), re.IGNORECASE)


def leaf(dataset: str) -> str:
    """The last part of a dataset name: a path's last directory that is not a Hive-style
    partition (``key=value``), else a table's name."""
    if "/" in dataset:
        parts = [p for p in dataset.split("/") if p]
        while len(parts) > 1 and _PARTITION_DIR.fullmatch(parts[-1]):
            parts.pop()
        return parts[-1] if parts else dataset
    return dataset.rsplit(".", 1)[-1]


def jvm_rules(entries: Sequence[Entry]) -> str:
    """The entries as ``QualityRule.configure`` takes them: a line per entry, a Java
    regular expression matched against the values of the target's name accessors (a
    table's name, a full name, a path), a tab, then ``*`` or the columns, tab-separated.
    The expression matches on the name's last part only: it may match more targets than
    the entry (the exact name is checked by ``select``), never fewer."""
    lines = []
    for e in entries:
        part = "".join("[^/]*" if c == "*" else c if c.isalnum() else "\\" + c
                       for c in leaf(e.dataset))
        regex = f"(?is)(?:.*[/.])?{part}(?:/[^/]*=[^/]*)*/*"
        cols = ["*"] if e.columns is None else [c for c in e.columns
                                                 if "\t" not in c and "\n" not in c]
        lines.append("\t".join([regex] + cols))
    return "\n".join(lines)


def measures(observed: Mapping[str, float | None]) -> dict[str, dict[str, float]]:
    """The rule's observed metrics as column -> metric type -> value: ``row_count``,
    ``null_count`` (rows - non-null), ``distinct_count_approx``, ``min``, ``max``; a
    measure without a value (a NaN, an empty write's min) is left out."""
    rows = observed.get(_ROWS)
    out: dict[str, dict[str, float]] = {}
    for alias, value in observed.items():
        code, sep, column = alias.partition(":")
        if not sep or code not in _CODES:
            continue
        into = out.setdefault(column, {} if rows is None else {ROW_COUNT: rows})
        if value is None:
            continue
        if code == "nn":
            if rows is not None:
                into[NULL_COUNT] = rows - value
        else:
            into[_CODES[code]] = value
    return out


_warned: set[tuple[str, str]] = set()  # (dataset, column) named but not written: once


def select(entries: Sequence[Entry], name: str, written: Sequence[str],
           measured: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """The measured columns that the entries matching the dataset ``name`` ask for; a
    column an entry names that the write has not (``written``: its columns) is warned
    about once per dataset and column."""
    mine = [e for e in entries if e.matches(name)]
    if not mine:
        return {}
    every = any(e.columns is None for e in mine)
    asked = {c.lower(): c for e in mine for c in (e.columns or ())}
    have = {c.lower() for c in written} | {c.lower() for c in measured}
    for low, col in asked.items():
        if low not in have and (name, low) not in _warned:
            _warned.add((name, low))
            logger.warning("definity-spark: quality.columns names column %r of %s, which "
                           "this write does not have; its other columns are measured",
                           col, name)
    return {col: dict(m) for col, m in measured.items() if every or col.lower() in asked}
