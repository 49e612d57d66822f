"""Data quality of written data, the pure half (``lineage/quality.py``): the setting,
the JVM rule's loose target match, the measures, the exact selection and the payloads.

The regular expressions ``jvm_rules`` writes are Java's; the ones tested here use only
syntax Java and Python read alike (``(?is)``, ``(?:...)``, ``[^/]``, ``\\`` before a
non-alphanumeric character), so Python's ``re`` checks them as Java will.
"""

from __future__ import annotations

import logging
import re

import pytest

from definity_spark import task, wire
from definity_spark.lineage import commands, quality
from definity_spark.lineage.model import OutputLineage, WriteLineage
from definity_spark.lineage.nesting import NestedWrites
from definity_spark.lineage.rules import READ, WRITE, Outcome


@pytest.fixture(autouse=True)
def _fresh_warnings():
    quality._warned.clear()
    quality.parse.cache_clear()


def test_parse_entries() -> None:
    entries = quality.parse(" db.orders:amount, customer_id ;*:*; s3://b/x/y:* ;"
                            "spark_catalog.db.t:a")
    assert entries == (
        quality.Entry("db.orders", ("amount", "customer_id")),
        quality.Entry("*", None),
        quality.Entry("s3://b/x/y", None),
        quality.Entry("db.t", ("a",)),
    )
    assert quality.parse(None) == () and quality.parse("") == ()


def test_parse_malformed_entry_warns_and_is_skipped(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="definity_spark"):
        entries = quality.parse("db.orders;:a;db.t:;db.u:x")
    assert entries == (quality.Entry("db.u", ("x",)),)
    warned = [r for r in caplog.records if "quality.columns entry" in r.getMessage()]
    assert len(warned) == 3


@pytest.mark.parametrize("dataset,name,expected", [
    ("db.orders", "db.orders", True),
    ("DB.Orders", "db.orders", True),
    ("db.orders", "db.orders2", False),
    ("db.orders", "other.orders", False),
    ("db.*", "db.orders", True),
    ("db.*", "dbx.orders", False),
    ("*", "file:/tmp/x", True),
    ("/data/out", "file:/data/out", True),
    ("file:/data/out", "file:/data/out", True),
    ("s3://b/x", "s3://b/x", True),
    ("s3://b/*", "s3://b/x", True),
])
def test_entry_matches_the_exact_name(dataset: str, name: str, expected: bool) -> None:
    assert quality.Entry(dataset, None).matches(name) is expected


@pytest.mark.parametrize("dataset,leaf", [
    ("db.orders", "orders"), ("orders", "orders"), ("cat.ns.t", "t"),
    ("file:/data/out/", "out"), ("s3://b/t/date=2024-01-01/h=1", "t"),
    ("file:/data/x.parquet", "x.parquet"), ("*", "*"), ("db.*", "*"),
])
def test_leaf(dataset: str, leaf: str) -> None:
    assert quality.leaf(dataset) == leaf


def _jvm_matches(entry: quality.Entry, value: str) -> bool:
    regex = quality.jvm_rules([entry]).split("\t")[0]
    return re.fullmatch(regex, value) is not None


@pytest.mark.parametrize("dataset,value,expected", [
    # a table's name as the command holds it, and a catalog's full name
    ("db.orders", "orders", True), ("db.orders", "Orders", True),
    ("db.orders", "local.db.orders", True), ("db.orders", "orders2", False),
    # the CTAS's nested insert: the table's location (a looser match: same leaf)
    ("db.orders", "file:/wh/db.db/orders", True),
    # paths: the leaf, under partition directories, with a trailing slash
    ("file:/data/out", "file:/data/out", True),
    ("file:/data/out", "file:/data/out/date=2024-01-01", True),
    ("file:/data/out", "file:/data/out/", True),
    ("file:/data/out", "file:/data/other", False),
    ("file:/data/a.b(c)", "file:/data/a.b(c)", True),
    ("file:/data/a.b(c)", "file:/data/aXb(c)", False),
    ("db.ord*", "orders", True), ("db.ord*", "items", False),
    ("*", "anything", True), ("*", "file:/x/y", True),
])
def test_jvm_rule_is_a_loose_match_on_the_last_part(dataset: str, value: str,
                                                    expected: bool) -> None:
    assert _jvm_matches(quality.Entry(dataset, None), value) is expected


def test_jvm_rules_lines() -> None:
    text = quality.jvm_rules(quality.parse("db.orders:amount,customer_id;*:*"))
    lines = [line.split("\t") for line in text.split("\n")]
    assert [line[1:] for line in lines] == [["amount", "customer_id"], ["*"]]


def test_quality_spec_names_the_commands_that_are_measured() -> None:
    lines = dict(line.split("\t", 1) for line in commands.quality_spec().split("\n"))
    assert lines["InsertIntoHadoopFsRelationCommand"] == \
        "catalogTable.get.identifier.table\toutputPath"
    assert "CreateDataSourceTableAsSelectCommand" in lines
    assert lines["SaveIntoDataSourceCommand"] == "options.get(dbtable)\toptions.get(path)"
    assert "MergeIntoCommand" not in lines  # Delta's own commands: not measured (docs)
    assert all(name in commands.COMMANDS for name in lines)


def test_measures() -> None:
    observed = {"rows": 10, "nn:amount": 7, "dc:amount": 5, "min:amount": 1.5,
                "max:amount": 99.0, "nn:tags": 10, "nn:a:b": 4, "max:d": None}
    assert quality.measures(observed) == {
        "amount": {"row_count": 10, "null_count": 3, "distinct_count_approx": 5,
                   "min": 1.5, "max": 99.0},
        "tags": {"row_count": 10, "null_count": 0},
        "a:b": {"row_count": 10, "null_count": 6},  # a column name with a colon
        "d": {"row_count": 10},  # max of an empty or NaN column: no value
    }
    assert quality.measures({}) == {}


def test_select_by_exact_name_and_columns(caplog) -> None:
    entries = quality.parse("db.orders:amount,missing,CUSTOMER_ID")
    measured = {"amount": {"row_count": 3}, "customer_id": {"row_count": 3},
                "other": {"row_count": 3}}
    written = ["amount", "customer_id", "other"]
    with caplog.at_level(logging.WARNING, logger="definity_spark"):
        got = quality.select(entries, "db.orders", written, measured)
        again = quality.select(entries, "db.orders", written, measured)
    assert got == again == {"amount": {"row_count": 3}, "customer_id": {"row_count": 3}}
    warned = [r for r in caplog.records if "does not have" in r.getMessage()]
    assert len(warned) == 1 and "'missing'" in warned[0].getMessage()
    # a loose JVM match of another dataset: nothing reported
    assert quality.select(entries, "other.orders", written, measured) == {}
    # every column
    assert quality.select(quality.parse("*:*"), "x", written, measured) == measured


def _write(name: str, q: dict, execution_id: int | None, root: int | None,
           wrapper: bool = False, metrics: dict | None = None) -> Outcome:
    lineage = WriteLineage(output=OutputLineage(name, "table", (("a", "INTEGER"),)),
                           metrics=metrics or {}, quality=q)
    return Outcome(WRITE, lineage=lineage, wrapper=wrapper, execution_id=execution_id,
                   root_execution_id=root, qe_id=execution_id)


def test_nested_write_quality_goes_to_the_outer_write() -> None:
    nesting = NestedWrites()
    inner = _write("file:/wh/db.db/t", {"a": {"row_count": 2}}, 6, 5, metrics={"cnt": 2})
    assert nesting.feed(inner) == []
    [final] = nesting.feed(_write("db.t", {}, 5, 5, wrapper=True))
    assert final.lineage.output.name == "db.t"
    assert final.lineage.quality == {"a": {"row_count": 2}}


def test_jdbc_write_quality_comes_from_its_nested_read() -> None:
    nesting = NestedWrites()
    rows = {"a": {"row_count": 4, "null_count": 1}}
    inner = Outcome(READ, extras={"rows": 4, "quality": rows}, execution_id=8,
                    root_execution_id=7, qe_id=8)
    assert nesting.feed(inner) == []
    outer = _write("sqlite:/x.db/t", {}, 7, 7, wrapper=True)
    [final] = nesting.feed(outer)
    assert final.lineage.metrics["cnt"] == 4
    assert final.lineage.quality == rows


def test_payload_metrics_per_column() -> None:
    lineage = WriteLineage(
        output=OutputLineage("db.orders", "table", (("amount", "DOUBLE"),)),
        metrics={"cnt": 3.0},
        quality={"amount": {"row_count": 3.0, "null_count": 1.0, "min": 0.5}})
    payloads = task.build_payloads("t-1", 4, lineage)
    [metrics] = [p for p in payloads if isinstance(p, wire.Metrics)]
    body = metrics.to_json()
    assert body["tf_id"] == 4
    column = [m for m in body["metrics"] if m["asset_type"] == "column"]
    assert column == [
        {"asset_name": "db.orders.amount", "asset_type": "column", "metric_type": "row_count",
         "value": 3},
        {"asset_name": "db.orders.amount", "asset_type": "column",
         "metric_type": "null_count", "value": 1},
        {"asset_name": "db.orders.amount", "asset_type": "column", "metric_type": "min",
         "value": 0.5},
    ]
