"""What the extraction rules produce for one finished query: plain, JVM-free data.

The task reporter (``definity_spark.task``) numbers each ``WriteLineage`` as a
transformation and turns it into the ``/log/tf``, ``/log/dataset`` and ``/log/metrics``
payloads. Rules fill these objects from plan facts; nothing here knows py4j.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class InputLineage:
    """One dataset a write read: canonical name, the columns read (schema order)."""

    name: str
    columns: tuple[str, ...] | None = None  # None: unknown, payload leaves it out
    # per-input volume metrics where Spark's scan metrics give them:
    # metric_type -> value, e.g. {"read_rows": 1000, "read_bytes": 5120}
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputLineage:
    """The dataset a write wrote: canonical name, its type and schema as it reads back."""

    name: str
    ds_type: str  # "table" for catalog tables; "path" / "jdbc" otherwise (docs/naming.md)
    # (column, TYPE) in the order Spark reads the dataset back, e.g. ("id", "INTEGER")
    schema: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class WriteLineage:
    """One logical write = one transformation."""

    output: OutputLineage
    inputs: tuple[InputLineage, ...] = ()
    query_str: str | None = None
    # output metrics: metric_type -> value ("cnt", "write_bytes", "write_files",
    # "duration_ms", ...); documented in docs/metrics.md
    metrics: dict[str, float] = field(default_factory=dict)
    partial: bool = False  # extraction stopped early (budget / plan size), see docs
