"""Column lineage (``lineage/columns.py``) over plan facts recorded from real Spark runs.

Expected mappings are written by hand for the hard plan shapes (tests/fixtures/
record_plans.py ``--columns``; every recorded Spark version must give the same), and
derived from the SQL text with sqlglot for the 22 TPC-H queries (``sql_oracle.py``).
Notation: ``"o.amount"`` is column ``amount`` of ``cl.orders`` (``c.``: ``cl.customers``).
"""

from __future__ import annotations

import json
import os

import pytest

from definity_spark.lineage import columns
from definity_spark.lineage.columns import Limits
from definity_spark.lineage.columns import column_lineage as _column_lineage
from definity_spark.lineage.facts import QueryFacts
from definity_spark.lineage.model import ColumnLineage
from definity_spark.lineage.rules import WRITE, extract

from .replay import PLANS, VERSIONS, load, replay


def column_lineage(facts, output_columns=None, limits=None, **kwargs):
    """The rule with a time budget no machine load reaches: these tests check what it
    maps (the budget has a test of its own, and tests/perf/column_lineage.py times it)."""
    return _column_lineage(facts, output_columns, limits=limits or Limits(budget_ms=60_000.0),
                           **kwargs)

COLUMN_VERSIONS = [v for v in VERSIONS if os.path.exists(os.path.join(PLANS, v, "c_case.json"))]
pytestmark = pytest.mark.skipif(not COLUMN_VERSIONS, reason="no recorded column scenarios")
DATASETS = {"o": "cl.orders", "c": "cl.customers"}
FIXTURES = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + "/fixtures"


def pairs(spec: str) -> set[tuple[str, str]]:
    """``"o.amount c.score"`` -> {("cl.orders", "amount"), ("cl.customers", "score")}."""
    out = set()
    for item in spec.split():
        ds, col = item.split(".", 1)
        out.add((DATASETS.get(ds, ds), col))
    return out


def flat(grouped: dict[str, tuple[str, ...]]) -> set[tuple[str, str]]:
    return {(ds, c) for ds, cols in grouped.items() for c in cols}


def write_facts(version: str, scenario: str) -> QueryFacts:
    """The facts of the data write (the inner insert of a CTAS: the one with the plan)."""
    facts = [f for f in load(version, scenario) if f.command is not None and f.plan
             and extract(f).kind == WRITE]
    return facts[0]


def lineage_of(version: str, scenario: str) -> ColumnLineage:
    (write,) = [o.lineage for o in replay(version, scenario) if o.kind == WRITE]
    got = column_lineage(write_facts(version, scenario),
                         [c for c, _ in write.output.schema])
    assert not got.partial, got.reason
    return got


# scenario -> ({column: (direct, indirect)}, indirect_all); columns in the written order
EXPECTED: dict[str, tuple[dict[str, tuple[str, str]], str]] = {
    "c_project": ({
        "o_id": ("o.o_id", ""), "dbl": ("o.amount", ""), "cid": ("o.cust_id", ""),
        "unote": ("o.note", ""), "sn": ("o.status o.note", ""),
        "co": ("o.note o.status", ""), "ntags": ("o.tags", ""), "utags": ("o.tags", ""),
    }, ""),
    "c_case": ({
        "o_id": ("o.o_id", ""),
        "amt": ("o.amount", "o.status c.score"),  # CASE conditions are indirect
        "label": ("c.name c.region", "c.segment"),  # IF's condition too
        "note2": ("o.note c.name", ""),  # nvl: both branches flow
    }, "o.cust_id c.c_id o.odate"),  # join keys and WHERE, once for the whole tf
    "c_constants": ({
        "o_id": ("o.o_id", ""), "one": ("", ""), "lit": ("", ""), "today": ("", ""),
        "mid": ("", ""), "u": ("", ""), "nothing": ("", ""),
    }, ""),
    "c_joins": ({
        "o_id": ("o.o_id", ""), "name": ("c.name", ""), "region": ("c.region", ""),
    }, "o.cust_id c.c_id c.segment"),
    "c_semi_anti": ({
        "o_id": ("o.o_id", ""), "amount": ("o.amount", ""),
    }, "o.cust_id o.o_id c.c_id c.segment c.region"),
    "c_agg": ({
        "cust_id": ("o.cust_id", ""), "n": ("", ""), "nstatus": ("o.status", ""),
        "open_amount": ("o.amount", "o.status"),  # FILTER (WHERE status = 'open')
        "last_note": ("o.note", "o.odate"),  # max_by: the ordering decides
        "avg_amount": ("o.amount", ""),
    }, "o.cust_id o.amount"),  # GROUP BY, WHERE amount > 0, HAVING sum(amount)
    "c_window": ({
        "o_id": ("o.o_id", ""), "cust_id": ("o.cust_id", ""),
        "rn": ("", "o.cust_id o.odate"),  # row_number: only its window decides it
        "running": ("o.amount", "o.status o.o_id"),
    }, "o.cust_id o.odate"),  # WHERE rn <= 2
    "c_explode": ({
        "o_id": ("o.o_id", ""), "tag": ("o.tags", ""), "pos": ("o.tags", ""),
    }, "o.tags o.status"),  # the generator decides how many rows each order becomes
    "c_pivot": ({
        "cust_id": ("o.cust_id", ""), "open": ("o.amount", "o.status"),
        "closed": ("o.amount", "o.status"),
    }, "o.cust_id o.status"),  # Spark pivots by grouping on (cust_id, status) first
    "c_views": ({
        "o_id": ("o.o_id", ""), "cust_id": ("o.cust_id", ""), "status": ("o.status", ""),
        "amount": ("o.amount", ""), "odate": ("o.odate", ""), "tags": ("o.tags", ""),
        "note": ("o.note", ""), "name": ("c.name", ""),
    }, "o.status o.cust_id c.c_id c.score"),  # the view's and the temp view's filters
    "c_cte": ({
        "cust_id": ("o.cust_id", ""), "total": ("o.amount", ""),
        "prev_total": ("o.amount", ""),
    }, "o.cust_id o.amount"),  # grouping; the join on rank() of the total
    "c_subqueries": ({
        "o_id": ("o.o_id", ""),
        "cust_score": ("c.score", "c.c_id o.cust_id"),  # correlated scalar subquery
        "amount": ("o.amount", ""),
    }, "o.cust_id c.c_id c.region c.segment o.o_id o.status o.amount"),
    "c_union": ({
        "id": ("o.o_id c.c_id", ""), "txt": ("o.note c.name c.region", ""),
    }, "o.status c.score o.o_id o.note c.c_id c.name c.region"),  # UNION = DISTINCT
    "c_setops": ({"cust_id": ("o.cust_id", "")}, "o.cust_id c.c_id c.segment"),
    "c_rollup": ({
        "region": ("c.region", ""), "status": ("o.status", ""), "gid": ("", ""),
        "total": ("o.amount", ""), "n": ("", ""),
    }, "o.cust_id c.c_id c.region o.status"),
    "c_grouping_sets": ({
        "region": ("c.region", ""), "segment": ("c.segment", ""), "s": ("c.score", ""),
    }, "c.region c.segment"),
    "c_cube": ({
        "status": ("o.status", ""), "cust_id": ("o.cust_id", ""), "last": ("o.odate", ""),
    }, "o.status o.cust_id"),
    # INSERT INTO cl.target (id, label, total): by position, by name, with a column list
    "c_insert_position": ({
        "id": ("o.cust_id", ""), "label": ("o.status", ""), "total": ("o.amount", ""),
    }, ""),
    "c_insert_by_name": ({
        "id": ("o.o_id", ""), "label": ("o.note", ""), "total": ("o.amount", ""),
    }, ""),
    "c_insert_columns": ({
        "id": ("c.c_id", ""), "label": ("c.name", ""), "total": ("", ""),  # left out
    }, ""),
    "c_insert_static_partition": ({
        "id": ("o.o_id", ""), "kind": ("o.status", ""), "dt": ("", ""),  # PARTITION (dt=..)
    }, ""),
    "c_insert_dynamic_partition": ({
        "id": ("o.o_id", ""), "kind": ("o.status", ""), "dt": ("o.odate", ""),
    }, ""),
    "c_cached": ({
        "cust_id": ("o.cust_id", ""), "total": ("o.amount", ""),
    }, "o.cust_id o.amount"),  # the cached DataFrame's filter and the grouping
    "c_df_api": ({
        "cust_id": ("o.cust_id c.c_id", ""),  # full outer join USING: coalesce of both
        "net2": ("o.amount", ""), "tag": ("o.tags", ""), "who": ("c.name", ""),
        "geo": ("c.region c.segment", ""),
    }, "o.cust_id c.c_id o.tags"),
    "c_topn": ({"o_id": ("o.o_id", ""), "amount": ("o.amount", "")},
               "o.odate o.amount"),  # ORDER BY under a LIMIT decides which rows
    "c_sort": ({"o_id": ("o.o_id", "")}, ""),  # ORDER BY alone decides nothing
}


def test_every_recorded_column_scenario_has_an_expectation() -> None:
    recorded = {f[:-5] for f in os.listdir(os.path.join(PLANS, COLUMN_VERSIONS[0]))
                if f.startswith("c_") and f.endswith(".json")}
    assert recorded == set(EXPECTED)


@pytest.mark.parametrize("version", COLUMN_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_hand_written_mappings(version: str, scenario: str) -> None:
    expected_columns, expected_all = EXPECTED[scenario]
    got = lineage_of(version, scenario)
    assert [c.name for c in got.columns] == list(expected_columns)
    for col in got.columns:
        direct, indirect = expected_columns[col.name]
        assert (flat(col.direct), flat(col.indirect)) == (pairs(direct), pairs(indirect)), \
            col.name
        assert col.no_inputs == (not direct and not indirect)
    assert flat(got.indirect_all) == pairs(expected_all)


def test_columns_list_datasets_and_columns_in_schema_order() -> None:
    got = lineage_of(COLUMN_VERSIONS[0], "c_case")
    amt = next(c for c in got.columns if c.name == "amt")
    assert list(amt.indirect) == ["cl.orders", "cl.customers"]  # first read first
    sn = lineage_of(COLUMN_VERSIONS[0], "c_project").columns[4]
    assert sn.direct == {"cl.orders": ("status", "note")}  # the table's column order


# -- TPC-H: expectations from the SQL text, by sqlglot -----------------------------------

TPCH = [f"q{n:02d}" for n in range(1, 23)]


@pytest.fixture(scope="module")
def tpch_oracle():
    from .sql_oracle import Oracle, schema_from_ddl

    with open(os.path.join(FIXTURES, "tpch", "schema.sql")) as fh:
        schema = schema_from_ddl(fh.read())
    answers = {}
    for q in TPCH:
        with open(os.path.join(FIXTURES, "tpch", f"q{int(q[1:])}.sql")) as fh:
            oracle = Oracle(fh.read(), schema)
        answers[q] = (oracle.columns(), oracle.rows())
    return answers


def tpch_pairs(grouped: dict[str, tuple[str, ...]]) -> set[tuple[str, str]]:
    return {(ds.split(".", 1)[1], c) for ds, cols in grouped.items() for c in cols}


@pytest.mark.parametrize("version", COLUMN_VERSIONS)
@pytest.mark.parametrize("query", TPCH)
def test_tpch_against_sqlglot(version: str, query: str, tpch_oracle) -> None:
    pytest.importorskip("sqlglot")
    expected_columns, expected_rows = tpch_oracle[query]
    got = lineage_of(version, f"tpch_{query}")
    assert len(got.columns) == len(expected_columns)
    for col, (direct, indirect) in zip(got.columns, expected_columns):
        assert tpch_pairs(col.direct) == direct, col.name
        assert tpch_pairs(col.indirect) == indirect, col.name
    assert tpch_pairs(got.indirect_all) == expected_rows
    assert all(ds.startswith("tpch.") for ds in got.indirect_all)


def test_tpch_oracle_is_not_vacuous(tpch_oracle) -> None:
    # q8's market share: the nation is a CASE condition, the revenue flows
    cols, rows = tpch_oracle["q08"]
    assert cols[1] == ({("lineitem", "l_extendedprice"), ("lineitem", "l_discount")},
                       {("nation", "n_name")})
    assert ("region", "r_name") in rows and ("part", "p_type") in rows
    # q4's EXISTS (SELECT * ...): the correlation and the filter, not the select list
    assert {p for p in tpch_oracle["q04"][1] if p[0] == "lineitem"} == {
        ("lineitem", "l_orderkey"), ("lineitem", "l_commitdate"),
        ("lineitem", "l_receiptdate")}


# -- Iceberg MERGE / UPDATE (Spark 3.5 + Iceberg 1.10) --------------------------------------

@pytest.mark.skipif("spark35" not in VERSIONS, reason="no Spark 3.5 fixtures")
def test_iceberg_merge_assignments() -> None:
    # MERGE INTO target t USING updates u ON t.id = u.id
    # WHEN MATCHED THEN UPDATE SET amount = u.amount WHEN NOT MATCHED THEN INSERT *
    got = column_lineage(write_facts("spark35", "iceberg_merge"), ["id", "kind", "amount"])
    t, u = "ice.db.target", "ice.db.updates"
    assert [(c.name, flat(c.direct), flat(c.indirect)) for c in got.columns] == [
        ("id", {(t, "id"), (u, "id")}, set()),  # kept rows, inserted rows
        ("kind", {(t, "kind"), (u, "kind")}, set()),
        ("amount", {(t, "amount"), (u, "amount")}, set()),  # kept, updated and inserted
    ]
    assert flat(got.indirect_all) == {(t, "id"), (u, "id")}  # the ON condition
    assert not any(c.name.startswith("_") for c in got.columns)


@pytest.mark.skipif("spark35" not in VERSIONS, reason="no Spark 3.5 fixtures")
def test_iceberg_update_assignment() -> None:
    # UPDATE target SET amount = amount + 1 WHERE kind = 'a' (copy-on-write)
    got = column_lineage(write_facts("spark35", "iceberg_update"), ["id", "kind", "amount"])
    t = "ice.db.target"
    assert [(c.name, flat(c.direct), flat(c.indirect)) for c in got.columns] == [
        ("id", {(t, "id")}, set()),  # untouched: IF(kind = 'a', id, id)
        ("kind", {(t, "kind")}, set()),
        ("amount", {(t, "amount")}, {(t, "kind")}),  # the WHERE decides the new value
    ]


@pytest.mark.skipif("spark35" not in VERSIONS, reason="no Spark 3.5 fixtures")
def test_iceberg_overwrite_and_merge_on_read_delete() -> None:
    # writeTo(target).overwrite(lit(True)) straight from a table: names from the relation
    got = column_lineage(write_facts("spark35", "iceberg_overwrite"), ["id", "kind", "amount"])
    assert [(c.name, c.direct) for c in got.columns] == [
        (n, {"ice.db.events": (n,)}) for n in ("id", "kind", "amount")]
    # DELETE FROM mor WHERE id = 1 (merge-on-read: writes position deletes only): the
    # rows left keep their values; the condition decides which rows remain
    got = column_lineage(write_facts("spark35", "iceberg_delete_mor"),
                         ["id", "kind", "amount"])
    assert [(c.name, c.direct) for c in got.columns] == [
        (n, {"ice.db.mor": (n,)}) for n in ("id", "kind", "amount")]
    assert got.indirect_all == {"ice.db.mor": ("id",)}


# -- the older fixtures ----------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_ctas_with_cte_and_static_hive_partition(version: str) -> None:
    got = column_lineage(write_facts(version, "ctas_cte"), ["name", "total"])
    assert [(c.name, flat(c.direct)) for c in got.columns] == [
        ("name", {("default.t1", "name")}), ("total", {("default.t2", "amount")})]
    assert flat(got.indirect_all) == {("default.t1", "id"), ("default.t2", "grp")}
    hive = [f for f in load(version, "hive_tables") if f.command is not None and f.plan
            and extract(f).kind == WRITE][0]
    got = column_lineage(hive, ["id", "name", "dt"])
    assert [c.no_inputs for c in got.columns] == [False, False, True]


@pytest.mark.parametrize("version", VERSIONS)
def test_nested_write_lineage_in_the_outer_commands_column_order(version: str) -> None:
    # saveAsTable partitioned by grp: the inner insert writes (id, grp) in the query's
    # order, the table reads back (id, grp) with the partition column last
    facts = write_facts(version, "save_as_table_partitioned")
    inner = column_lineage(facts)
    (write,) = [o.lineage for o in replay(version, "save_as_table_partitioned")
                if o.kind == WRITE]
    names = [c for c, _ in write.output.schema]
    outer = columns.for_columns(inner, list(reversed(names)) + ["extra"])
    assert [c.name for c in outer.columns] == list(reversed(names)) + ["extra"]
    assert outer.columns[-1].no_inputs
    for col in outer.columns[:-1]:
        assert col.direct == {"default.t2": (col.name,)}
    assert outer == columns.for_columns(column_lineage(facts, list(reversed(names))
                                                       + ["extra"]), [c.name for c in
                                                                      outer.columns])


# -- limits ----------------------------------------------------------------------------------

def test_cap_on_dependencies_marks_the_result_partial() -> None:
    facts = write_facts(COLUMN_VERSIONS[0], "c_union")
    got = column_lineage(facts, ["id", "txt"], limits=Limits(max_deps=2))
    assert got.partial and got.reason == "max_deps"
    txt = got.columns[1]
    assert txt.truncated and len(flat(txt.direct)) == 2  # 3 sources, cut to 2
    assert not got.columns[0].truncated


def test_time_budget_marks_the_result_partial() -> None:
    facts = load(VERSIONS[0], "join20")[-1]
    got = column_lineage(facts, limits=Limits(budget_ms=0.0))
    assert got == ColumnLineage(partial=True, reason="time budget")


@pytest.mark.parametrize("breakage", ["missing child", "garbage field", "no plan"])
def test_broken_facts_give_a_partial_result_never_an_error(breakage: str) -> None:
    facts = write_facts(COLUMN_VERSIONS[0], "c_case")
    body = facts.to_json()
    if breakage == "missing child":
        body["plan"] = body["plan"][:3]
    elif breakage == "garbage field":
        body["plan"][1]["projectList"] = [[{"class": "x", "num-children": 5}]]
    else:
        body["plan"] = None
    got = column_lineage(QueryFacts.from_json(json.loads(json.dumps(body))), ["o_id"])
    assert isinstance(got, ColumnLineage)
    if breakage != "garbage field":
        assert got.partial


def test_a_command_without_its_query_is_partial_not_made_from_nothing() -> None:
    # e.g. Delta's MergeIntoCommand whose target plan could not be read (its column
    # lineage: tests/unit/test_delta_recorded.py)
    facts = write_facts(COLUMN_VERSIONS[0], "c_case")
    facts.plan = [{"class": "org.apache.spark.sql.delta.commands.MergeIntoCommand",
                   "num-children": 0, "source": None, "target": None}]
    got = column_lineage(facts, ["o_id"])
    assert got == ColumnLineage(partial=True, reason="no query in MergeIntoCommand")


# -- size: the 1,000-column select and the 20-way join (timed: tests/perf/column_lineage.py)

@pytest.mark.parametrize("version", COLUMN_VERSIONS)
def test_wide_select_every_column(version: str) -> None:
    facts = write_facts(version, "wide1000")
    got = column_lineage(facts)
    assert not got.partial and len(got.columns) == 1000
    ds = "file:/TMP/data/wide"
    for i, col in enumerate(got.columns):
        if i % 2 == 0:
            assert (col.name, col.direct) == (f"c{i}", {ds: (f"c{i}",)})
        else:  # c{i} + c{i-1} AS e{i}
            assert (col.name, col.direct) == (f"e{i}", {ds: (f"c{i - 1}", f"c{i}")})


@pytest.mark.parametrize("version", VERSIONS)
def test_join20_every_column(version: str) -> None:
    facts = load(version, "join20")[-1]
    got = column_lineage(facts)
    assert not got.partial
    names = [c.name for c in got.columns]
    assert names == ["id", "name"] + [f"v{i}" for i in range(20)]
    assert got.columns[0].direct == {"file:/TMP/data/base": ("id",)}
    assert got.columns[2].direct == {"file:/TMP/data/j0": ("v0",)}
    assert len(got.indirect_all) == 21  # every input's id: the join keys


def test_wire_form() -> None:
    got = lineage_of(COLUMN_VERSIONS[0], "c_case")
    body = columns.to_json(got)
    assert body["version"] == 1
    assert body["columns"][1] == {
        "name": "amt", "direct": {"cl.orders": ["amount"]},
        "indirect": {"cl.orders": ["status"], "cl.customers": ["score"]}}
    assert body["indirect_all"] == {"cl.orders": ["cust_id", "odate"],
                                    "cl.customers": ["c_id"]}
    assert "partial" not in body
    consts = columns.to_json(lineage_of(COLUMN_VERSIONS[0], "c_constants"))
    assert consts["columns"][1] == {"name": "one", "no_inputs": True}
    json.dumps(body)  # plain JSON types only
