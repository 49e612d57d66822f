"""docs/configuration.md is generated from the settings definitions and must be current."""

from __future__ import annotations

from pathlib import Path

from definity_spark import _gen_config_doc
from definity_spark.settings import DEFINITIONS, REGENERATE_COMMAND, render_configuration_doc

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_configuration_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == render_configuration_doc(), (
        "docs/configuration.md is stale; regenerate it with: " + REGENERATE_COMMAND
    )


def test_doc_has_a_row_per_setting_and_says_it_is_generated():
    text = DOC.read_text(encoding="utf-8")
    assert "do not edit by hand" in text and REGENERATE_COMMAND in text
    rows = [line for line in text.splitlines() if line.startswith("| `spark.definity.")]
    assert len(rows) == len(DEFINITIONS)
    # the user's table first, the internal switches in a section of their own after it
    ordered = [d for d in DEFINITIONS if not d.internal] + [d for d in DEFINITIONS if d.internal]
    internal_at = text.index("## Internal switches")
    for d, row in zip(ordered, rows):
        assert (text.index(row) > internal_at) == d.internal, d.name
        assert row.startswith(f"| `{d.conf_key}` | `{d.env_var}` |")
        # every row has the same number of cells (no unescaped '|' in a default or doc)
        assert row.replace("\\|", "").count("|") == 7


def test_check_mode_detects_a_stale_file(tmp_path):
    target = tmp_path / "configuration.md"
    assert _gen_config_doc.main(["--check", str(target)]) == 1  # missing
    assert _gen_config_doc.main([str(target)]) == 0
    assert _gen_config_doc.main(["--check", str(target)]) == 0
    target.write_text(target.read_text() + "edited by hand\n")
    assert _gen_config_doc.main(["--check", str(target)]) == 1
