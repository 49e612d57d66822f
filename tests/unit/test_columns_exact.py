"""Input ``columns`` against what Spark's own column pruning reads (no JVM).

tests/fixtures/record_plans.py --columns recorded, next to each scenario's plan facts,
the columns of every file and Hive scan of the executed plan of the same query (its
subqueries included): ``columns_scans.json``. The rule that names an input's columns
(``PlanIndex.referenced_ids``) must give exactly those, for every plan shape of the
column lineage corpus and the 22 TPC-H queries, on every recorded Spark version.
"""

from __future__ import annotations

import json
import os

import pytest

from definity_spark.lineage.rules import WRITE

from .replay import PLANS, VERSIONS, replay

SCANNED = {v: json.load(open(os.path.join(PLANS, v, "columns_scans.json")))
           for v in VERSIONS if os.path.exists(os.path.join(PLANS, v, "columns_scans.json"))}
CASES = [(v, s) for v in sorted(SCANNED) for s in sorted(SCANNED[v])]

# Where reporting differs from the scans on purpose: the DataFrame was cached by an
# earlier action whose scan read o_id too; the write reads the cache, and reports the
# columns it uses of the cached source, not what the cache was built with.
KNOWN = {"c_cached": {"cl.orders": {"o_id"}}}

pytestmark = pytest.mark.skipif(not CASES, reason="no recorded column scenarios")


def reported(version: str, scenario: str) -> dict[str, set[str]]:
    (write,) = [o.lineage for o in replay(version, scenario) if o.kind == WRITE]
    return {i.name: set(i.columns or ()) for i in write.inputs}


@pytest.mark.parametrize("version,scenario", CASES)
def test_input_columns_are_the_columns_spark_reads(version: str, scenario: str) -> None:
    scanned = {name: set(cols) for name, cols in SCANNED[version][scenario].items()}
    for name, extra in KNOWN.get(scenario, {}).items():
        assert not extra & reported(version, scenario)[name]
        scanned[name] -= extra
    assert reported(version, scenario) == scanned


def test_grouping_sets_report_only_what_the_aggregate_needs() -> None:
    # the analyzer's Expand lists every joined column; Spark prunes by the Expand's
    # output positions the Aggregate uses (here: region, status, amount + join keys)
    for version in SCANNED:
        assert reported(version, "c_rollup") == {
            "cl.orders": {"cust_id", "status", "amount"},
            "cl.customers": {"c_id", "region"}}


def test_exists_select_star_reads_the_correlation_and_filters_only() -> None:
    for version in SCANNED:
        cols = reported(version, "c_subqueries")
        # EXISTS (SELECT * FROM customers c3 WHERE c3.c_id = o.cust_id AND c3.segment..)
        # with the scalar subquery's score and the IN subquery's region
        assert cols["cl.customers"] == {"c_id", "region", "segment", "score"}
        assert cols["cl.orders"] == {"o_id", "cust_id", "status", "amount"}
