"""The shipped examples stay complete: every setting in conf/spark-defaults.conf.example,
and the shell examples shellcheck clean."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from definity_spark.settings import DEFINITIONS

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_spark_defaults_example_lists_every_key_commented() -> None:
    text = (CONF / "spark-defaults.conf.example").read_text()
    keys = re.findall(r"^#(spark\.definity\.\S+)\s+\S", text, flags=re.M)
    assert sorted(keys) == sorted(d.conf_key for d in DEFINITIONS if not d.internal)
    # nothing active: the file is a menu, not a configuration
    assert all(not line.strip() or line.startswith("#") for line in text.splitlines())
    for d in (d for d in DEFINITIONS if not d.internal):
        assert d.env_var in text, d.env_var


@pytest.mark.parametrize("script", ["spark-submit.example.sh", "databricks/init.sh"])
def test_shell_examples_shellcheck_clean(script: str) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed")
    result = subprocess.run([shellcheck, str(CONF / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
