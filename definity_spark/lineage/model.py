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
class ColumnDeps:
    """What one written column derives from: input dataset -> its columns (schema order).

    ``direct``: the value flows into the column (projection, arithmetic, casts, function,
    UDF and aggregate arguments, the branches of CASE/IF/COALESCE). ``indirect``: input
    columns that decide this column's value without flowing into it (CASE/IF conditions,
    window partition and order keys, an aggregate's FILTER, a scalar subquery's filters
    and correlation). A column that is direct is not repeated as indirect. Both empty:
    the column is made from nothing (literals, ``current_date()``, a static partition
    value, ``count(*)``).
    """

    name: str
    direct: dict[str, tuple[str, ...]] = field(default_factory=dict)
    indirect: dict[str, tuple[str, ...]] = field(default_factory=dict)
    truncated: bool = False  # more dependencies than the cap: the lists are cut

    @property
    def no_inputs(self) -> bool:
        return not self.direct and not self.indirect


@dataclass(frozen=True)
class ColumnLineage:
    """Column-level lineage of one write (docs/column-lineage.md).

    ``columns``: one entry per written column, in the order of the output's schema.
    ``indirect_all``: the input columns that decide which rows the output has, how they
    are grouped or which of them a LIMIT keeps (WHERE/HAVING, JOIN conditions, GROUP BY,
    DISTINCT and set operations, ORDER BY under a LIMIT, generators, EXISTS/IN
    subqueries, MERGE conditions): indirect dependencies of every column, recorded once.
    ``partial``: a limit was hit or a plan shape was not understood (``reason`` says
    which); what is listed is still right, but dependencies may be missing.
    """

    columns: tuple[ColumnDeps, ...] = ()
    indirect_all: dict[str, tuple[str, ...]] = field(default_factory=dict)
    partial: bool = False
    reason: str | None = None


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
    # per written column, the input columns it derives from (None: not extracted)
    column_lineage: ColumnLineage | None = None
    # how the write ran, summed over its SQL executions (jobs, stages, tasks, task
    # metrics, the most skewed stage): metric_type -> value, docs/metrics.md
    run: dict[str, float] = field(default_factory=dict)
    # the streaming query run it belongs to (its own tf, or a write of its foreachBatch):
    # the optional ``stream`` field of /log/tf (docs/metrics.md, "Streaming")
    stream: StreamLink | None = None
    # data quality of the written columns (opt-in, lineage/quality.py): column ->
    # metric_type -> value ("row_count", "null_count", ...), docs/metrics.md
    quality: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamLink:
    """Which streaming query run a transformation belongs to: the query's id (kept
    across restarts from its checkpoint), this run's id, its name (None: unnamed)."""

    id: str
    run_id: str
    name: str | None = None

    def to_json(self) -> dict[str, str]:
        body = {"id": self.id, "run_id": self.run_id}
        if self.name:
            body["name"] = self.name
        return body
