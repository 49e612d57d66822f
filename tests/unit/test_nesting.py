"""Pairing of nested executions (pure, synthetic outcomes)."""

from __future__ import annotations

from definity_spark.lineage.model import OutputLineage, WriteLineage
from definity_spark.lineage.nesting import NestedWrites
from definity_spark.lineage.rules import FAILED, READ, WRITE, Outcome


def write(name, qe_id, ex=None, root=None, wrapper=False, metrics=None, command=None,
          **extras):
    lin = WriteLineage(output=OutputLineage(name, "table", (("id", "LONG"),)),
                       metrics=dict(metrics or {}), query_str=f"q {name}")
    return Outcome(WRITE, lineage=lin, qe_id=qe_id, execution_id=ex, root_execution_id=root,
                   wrapper=wrapper, func_name="command", extras=extras, command_class=command)


def test_spark4_three_level_save_as_table_is_one_write():
    n = NestedWrites()
    assert n.feed(write("file:/wh/t", 9, ex=3, root=1, metrics={"cnt": 5})) == []
    assert n.feed(write("default.t", 8, ex=2, root=1, wrapper=True)) == []
    (final,) = n.feed(write("t", 6, ex=1, root=1, wrapper=True, metrics={"duration_ms": 7},
                            command="org.apache.spark.sql.execution.command.SaveAsV1TableCommand"))
    assert final.lineage.output.name == "default.t"
    assert final.lineage.metrics == {"cnt": 5, "duration_ms": 7}


def test_spark35_outer_without_ids_claims_pending_group_created_after_it():
    n = NestedWrites()
    assert n.feed(write("file:/wh/t", 12, ex=2, root=1, metrics={"cnt": 3})) == []
    out = n.feed(write("default.t", 10, wrapper=True)) + n.release_held()
    assert [o.lineage.output.name for o in out] == ["default.t"]
    assert out[0].lineage.metrics["cnt"] == 3


def test_held_write_without_ids_pairs_with_its_outer_command():
    n = NestedWrites()
    assert n.feed(write("pg.public.t", 21)) == []  # held: maybe nested
    out = n.feed(write("pg.public.t", 20, wrapper=True)) + n.release_held()
    assert len(out) == 1 and out[0].qe_id == 20


def test_held_write_released_by_an_unrelated_callback():
    n = NestedWrites()
    assert n.feed(write("a.t", 21)) == []
    out = n.feed(Outcome(READ, func_name="count", qe_id=30))
    assert [o.kind for o in out] == [WRITE, READ]


def test_failed_outer_counts_once():
    n = NestedWrites()
    n.feed(Outcome(FAILED, error="x", qe_id=5, execution_id=2, root_execution_id=1))
    out = n.feed(Outcome(FAILED, error="x", qe_id=4, execution_id=1, root_execution_id=1))
    assert [o.kind for o in out] == [FAILED]


def test_nested_rows_of_a_jdbc_write():
    n = NestedWrites()
    rows = Outcome(READ, func_name="foreachPartition", qe_id=8, execution_id=2,
                   root_execution_id=1, extras={"rows": 10.0})
    assert n.feed(rows) == []
    (final,) = n.feed(write("sqlite:/x/t", 7, ex=1, root=1, wrapper=True))
    assert final.lineage.metrics["cnt"] == 10


def test_spark35_failed_ctas_counts_once():
    n = NestedWrites()
    inner = Outcome(FAILED, error="boom", qe_id=12, wrapper=False)
    outer = Outcome(FAILED, error="boom", qe_id=10, wrapper=True)
    assert n.feed(inner) == []
    out = n.feed(outer) + n.release_held()
    assert [(o.kind, o.qe_id) for o in out] == [(FAILED, 10)]


def test_plain_failure_is_released():
    n = NestedWrites()
    assert n.feed(Outcome(FAILED, error="x", qe_id=3)) == []
    assert [o.kind for o in n.release_held()] == [FAILED]


def _nested_read(qe_id, ex, root, func="collect", **extras):
    return Outcome(READ, func_name=func, qe_id=qe_id, execution_id=ex, root_execution_id=root,
                   extras=extras)


def test_staged_write_waits_for_its_ctas_across_delta_internal_queries():
    """Spark 3.5 Delta CTAS: the write to the staged table has no ids, Delta's own queries
    (nested, with ids; one without) come between it and the CTAS: one write."""
    n = NestedWrites()
    assert n.feed(write("dl.t", 113, staged=True)) == []
    assert n.feed(_nested_read(114, 5, 4, "deltaTransactionalWrite", rows=5.0)) == []
    assert n.feed(_nested_read(115, 6, 4)) == []
    unrelated = n.feed(Outcome(READ, func_name="head", qe_id=116))  # no ids at all
    assert [o.kind for o in unrelated] == [READ]
    out = n.feed(write("dl.t", 112, wrapper=True, metrics={"write_files": 1})) \
        + n.release_held()
    assert len(out) == 1 and out[0].qe_id == 112
    assert out[0].lineage.metrics == {"write_files": 1, "cnt": 5.0}


def test_nested_callbacks_do_not_release_a_held_write():
    n = NestedWrites()
    assert n.feed(write("a.t", 21)) == []
    assert n.feed(_nested_read(22, 3, 2)) == []
    assert n.release_held()[0].qe_id == 21


def test_failed_ctas_takes_its_staged_write_with_it():
    n = NestedWrites()
    assert n.feed(write("dl.t", 12, staged=True)) == []
    out = n.feed(Outcome(FAILED, error="boom", qe_id=10, wrapper=True)) + n.release_held()
    assert [(o.kind, o.qe_id) for o in out] == [(FAILED, 10)]


def test_wrapper_in_mode_ignore_without_a_nested_write_wrote_nothing():
    n = NestedWrites()
    out = n.feed(write("dl.t", 5, ex=1, root=1, wrapper=True, mode="Ignore"))
    assert [o.kind for o in out] == ["ignored"]
    # the same with its nested write (a new table): a write
    n.feed(_nested_read(7, 3, 2, "deltaTransactionalWrite", rows=4.0))
    (final,) = n.feed(write("dl.u", 6, ex=2, root=2, wrapper=True, mode="Ignore"))
    assert final.kind == WRITE and final.lineage.metrics["cnt"] == 4.0
