"""``FactGatherer.java``, ``StreamWatch.java`` and ``QualityRule.java`` compile against
this Spark's jars (fast: javac, no Spark started).

The plugin compiles it at run time with Janino inside the driver; a source that Spark's
API no longer fits would only show there, as the fallback to the Python listener. Each
CI Spark line runs this against its own jars, in seconds.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

pyspark = pytest.importorskip("pyspark")

from definity_spark.spark import gatherer  # noqa: E402


def test_the_java_gatherer_compiles_against_this_sparks_jars(tmp_path) -> None:
    javac = shutil.which("javac") or (os.path.join(os.environ["JAVA_HOME"], "bin", "javac")
                                      if os.environ.get("JAVA_HOME") else None)
    if not javac or not os.path.exists(javac):
        pytest.skip("no javac (a JDK) on this machine")
    jars = os.path.join(os.path.dirname(pyspark.__file__), "jars")
    assert glob.glob(os.path.join(jars, "spark-sql_*.jar")), jars
    out = subprocess.run(
        [javac, "-nowarn", "-proc:none", "-d", str(tmp_path), "-cp",
         os.path.join(jars, "*"), gatherer.SOURCE, gatherer.STREAMS_SOURCE,
         gatherer.RULE_SOURCE],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    classes = sorted(p.name for p in (tmp_path / "definity").iterdir())  # their package
    assert "FactGatherer.class" in classes and "PlanJson.class" in classes
    assert "StreamWatch.class" in classes
    assert "QualityRule.class" in classes  # the data quality rule (spark/quality.py)
