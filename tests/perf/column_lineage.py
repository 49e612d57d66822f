"""Pure extraction time with column lineage off and on, over recorded plan facts (no JVM).

    python tests/perf/column_lineage.py [--repeat 200]

For each recorded Spark version (tests/fixtures/plans/*) and each plan: the 20-way join
(``join20``: the write with the plan) and the 1,000-column select (``wide1000``), the
time of ``rules.extract`` (the lineage the plugin sends today: "off") and of
``rules.extract`` + ``columns.column_lineage`` ("on"). Times are the median and the best
of ``--repeat`` runs in one warm interpreter, after 5 unmeasured runs. What reading the
facts from the JVM costs is not included (docs/coverage.md, "Measured").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from unit.replay import VERSIONS, load  # noqa: E402

from definity_spark.lineage.columns import column_lineage  # noqa: E402
from definity_spark.lineage.rules import WRITE, Options, extract  # noqa: E402


def _facts(version: str, scenario: str):
    """The scenario's largest write (join20 also holds the writes of its 20 inputs)."""
    writes = [f for f in load(version, scenario)
              if f.command is not None and f.plan and extract(f).kind == WRITE]
    return max(writes, key=lambda f: len(f.plan or ()))


def measure(version: str, scenario: str, repeat: int) -> dict[str, float]:
    facts = _facts(version, scenario)
    options = Options()

    def off() -> None:
        extract(facts, options)

    def on() -> None:
        outcome = extract(facts, options)
        column_lineage(facts, [c for c, _ in outcome.lineage.output.schema])

    out: dict[str, float] = {}
    for label, fn in (("off", off), ("on", on)):
        for _ in range(5):
            fn()
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1000)
        out[f"{label}_median_ms"] = statistics.median(times)
        out[f"{label}_best_ms"] = min(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    print(f"{'version':8} {'plan':9} {'off median':>11} {'on median':>10} "
          f"{'off best':>9} {'on best':>8}  (ms, {args.repeat} runs)")
    for version in VERSIONS:
        for scenario in ("join20", "wide1000"):
            if not os.path.exists(os.path.join(HERE, "..", "fixtures", "plans", version,
                                               f"{scenario}.json")):
                continue
            r = measure(version, scenario, args.repeat)
            print(f"{version:8} {scenario:9} {r['off_median_ms']:11.2f} "
                  f"{r['on_median_ms']:10.2f} {r['off_best_ms']:9.2f} {r['on_best_ms']:8.2f}")


if __name__ == "__main__":
    main()
