"""Issue 20, item 8: the ``.pth`` start hook never raises, even when the module it imports
is gone (a half-uninstalled package). Real interpreters, real ``site`` processing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PTH = Path(__file__).resolve().parent.parent / "definity_spark" / "_boot" / "definity_spark.pth"


def _start_python(site_dir: Path) -> subprocess.CompletedProcess:
    """A Python start that processes ``site_dir`` like site-packages (its .pth files)."""
    code = f"import site; site.addsitedir({str(site_dir)!r}); print('started')"
    return subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_pth_without_its_boot_module_starts_python_silently(tmp_path: Path) -> None:
    shutil.copy(PTH, tmp_path / "definity_spark.pth")  # _definity_spark_boot.py is gone
    result = _start_python(tmp_path)
    assert result.returncode == 0
    assert result.stdout == "started\n"
    assert result.stderr == "", result.stderr


def test_pth_whose_boot_module_raises_starts_python_silently(tmp_path: Path) -> None:
    shutil.copy(PTH, tmp_path / "definity_spark.pth")
    (tmp_path / "_definity_spark_boot.py").write_text("raise RuntimeError('half installed')\n")
    result = _start_python(tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "started\n", "")


def test_pth_still_runs_the_boot_module(tmp_path: Path) -> None:
    marker = tmp_path / "booted"
    shutil.copy(PTH, tmp_path / "definity_spark.pth")
    (tmp_path / "_definity_spark_boot.py").write_text(
        f"open({str(marker)!r}, 'w').write('yes')\n")
    result = _start_python(tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert marker.read_text() == "yes"
