"""Replay recorded plan facts (tests/fixtures/plans) through the pure extraction rules."""

from __future__ import annotations

import json
import os

from definity_spark.lineage.facts import QueryFacts
from definity_spark.lineage.nesting import NestedWrites
from definity_spark.lineage.rules import Options, Outcome, extract

PLANS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "fixtures", "plans")
VERSIONS = sorted(d for d in os.listdir(PLANS) if os.path.isdir(os.path.join(PLANS, d))) \
    if os.path.isdir(PLANS) else []


def load(version: str, scenario: str) -> list[QueryFacts]:
    with open(os.path.join(PLANS, version, f"{scenario}.json")) as fh:
        return [QueryFacts.from_json(x) for x in json.load(fh)]


def replay(version: str, scenario: str, options: Options | None = None) -> list[Outcome]:
    """Final outcomes of a recorded scenario, as the observer would dispatch them."""
    nesting = NestedWrites()
    out: list[Outcome] = []
    for facts in load(version, scenario):
        out.extend(nesting.feed(extract(facts, options or Options())))
    out.extend(nesting.flush())
    return out
