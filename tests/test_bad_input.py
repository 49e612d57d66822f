"""Issue 21, bad input: a format jar that is missing, or of the wrong Scala version.

The user's job must fail exactly as it fails without the plugin (same exit code, same
traceback, same output), and the plugin must log nothing misleading: no warning or error
of its own about a failure that is the job's. A real application (tests/fault_apps/app.py,
mode ``format``) is run twice, with and without the plugin, against a real HTTP server.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyspark")

sys.path.insert(0, str(Path(__file__).parent))
from fault_apps.harness import TOKEN, plugin_env, run_app  # noqa: E402
from faulty_server import FaultyServer  # noqa: E402

WRONG_SCALA = Path(sys.prefix) / "share" / "definity-wrong-scala"  # .ci/fetch-jars.sh


def _cases() -> list[Any]:
    wrong = sorted(WRONG_SCALA.glob("*.jar"))
    return [
        pytest.param("delta", "", id="missing-delta-jar"),
        pytest.param("avro", str(wrong[0]) if wrong else "", id="avro-of-the-other-scala",
                     marks=pytest.mark.skipif(not wrong, reason="no jar in " + str(WRONG_SCALA))),
    ]


def _error(run: Any) -> list[str]:
    """The Python exception and the Java one under it (py4j's object ids aside)."""
    lines = run.stderr.replace(run.base, "<base>").splitlines()
    java = [line for line in lines if re.match(r"^: [\w.$]+(Exception|Error)\b", line)]
    return [re.sub(r"\bo\d+\b", "o<n>", run.traceback.splitlines()[-1])] + java[:1]


@pytest.mark.parametrize("fmt,jars", _cases())
def test_a_bad_format_jar_does_what_it_does_without_the_plugin(tmp_path: Path, fmt: str,
                                                               jars: str) -> None:
    extra = {"FAULT_APP_FORMAT": fmt, "FAULT_APP_JARS": jars}
    without = run_app(tmp_path / "without", "format", extra)
    server = FaultyServer(token=TOKEN)
    try:
        spool = str(tmp_path / "with" / "spool")
        with_plugin = run_app(tmp_path / "with", "format",
                              {**plugin_env(server.url, spool), **extra})
        tfs = [r.json for r in server.records if r.path == "/log/tf"]
    finally:
        server.close()

    # the job's outcome, unchanged: Delta's jar missing fails the job; spark-avro of the
    # other Scala fails it on 3.5 (NoClassDefFoundError), while Spark 4.1+ has the avro
    # format built in and the job succeeds, with the plugin as without it
    failed = without.returncode != 0
    assert failed or fmt != "delta", without.stdout
    assert with_plugin.returncode == without.returncode
    assert with_plugin.stdout == without.stdout
    out = str(tmp_path / "with" / "out")
    if failed:
        assert _error(without) and _error(with_plugin) == _error(without)
        # the write before it is reported; the failed one ran no query: nothing of it
        assert [tf["output"]["name"] for tf in tfs] == [f"file:{out}/before"]
    else:
        assert "format write done" in without.stdout
        assert [tf["output"]["name"] for tf in tfs] == [f"file:{out}/before",
                                                        f"file:{out}/bad"]
    # nothing misleading: no warning or error of the plugin's own
    loud = [line for line in with_plugin.log_text.splitlines()
            if " WARNING " in line or " ERROR " in line or " CRITICAL " in line]
    assert not loud, loud
    assert "definity" not in with_plugin.stderr.replace(with_plugin.base, "<base>").lower(), \
        with_plugin.stderr[-2000:]
