"""The data quality rule on a session (opt-in; lineage/quality.py, docs/metrics.md).

``QualityRule.java`` is compiled and cached as the gatherer is (``gatherer.load``),
configured with the setting's entries and the command table's name accessors, and put in
the session's ``experimental.extraOptimizations``, after the rules there; the gatherer is
told the name of the observed metrics it adds, and reads them when a write has ended.
``uninstall`` takes it out again (only it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from definity_spark.lineage import commands
from definity_spark.lineage.quality import OBSERVED_NAME, Entry, jvm_rules
from definity_spark.spark import gatherer

logger = logging.getLogger("definity_spark.spark")


def install(gateway: Any, jsession: Any, fact_gatherer: Any,
            entries: Sequence[Entry]) -> Any | None:
    """The rule, installed on the session (None, with a warning, where it cannot be)."""
    loaded = gatherer.load(gateway, jsession, gatherer.RULE_SOURCE, gatherer.RULE_CLASS)
    if loaded.cls is None:
        logger.warning("definity-spark: data quality (quality.columns) is off: its rule "
                       "could not be loaded (%s)", loaded.reason)
        return None
    rule = loaded.cls.newInstance()
    rule.configure(OBSERVED_NAME, jvm_rules(entries), commands.quality_spec())
    fact_gatherer.observe(OBSERVED_NAME)
    rule.install(jsession)
    return rule


def uninstall(jsession: Any, rule: Any, fact_gatherer: Any) -> None:
    """Out of the session's rules; its errors, if any, logged once."""
    rule.uninstall(jsession)
    fact_gatherer.observe(None)
    failures = int(rule.failures())
    if failures:
        logger.warning("definity-spark: the data quality rule left %d write(s) unmeasured "
                       "after an error: %s", failures, str(rule.lastError())[:300])
