"""Interpreter-start cost of the definity-spark hook when the plugin is not enabled.

``definity_spark.pth`` runs at every Python start of the environment. This script builds
two throwaway virtual environments from the same interpreter, identical except for that
one file (both get a plain path entry to this checkout, so module lookup is the same):

* ``without``: only the path entry;
* ``with``: the path entry plus ``definity_spark.pth``.

It then runs ``python -c pass`` alternately in both (hyperfine-style: warm-up, then N
alternating pairs so that drift affects both sides equally), prints the medians and the
differences of wall time and of CPU time (user + system of the child; on a loaded
machine wall time mostly measures the load), and checks with ``-X importtime`` and
``sys.modules`` that the hook imports neither pyspark nor the plugin package at start.

Usage: python tests/perf/import_cost.py [--runs 60] [--python /usr/bin/python3]
Exit code 1 when the median paired CPU-time difference exceeds --budget-ms (default 5).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _make_venv(root: Path, python: str, with_hook: bool) -> Path:
    subprocess.run([python, "-m", "venv", "--without-pip", str(root)], check=True)
    site = subprocess.run(
        [str(root / "bin" / "python"), "-c",
         "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    site_dir = Path(site)
    # Same path entry in both: the checkout (how an editable install exposes the package).
    (site_dir / "_definity_path.pth").write_text(str(REPO) + "\n")
    if with_hook:
        boot = REPO / "definity_spark" / "_boot"  # what the wheel puts into site-packages
        shutil.copy(boot / "definity_spark.pth", site_dir / "definity_spark.pth")
        shutil.copy(boot / "_definity_spark_boot.py", site_dir / "_definity_spark_boot.py")
    return root / "bin" / "python"


def _run_once(python: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system of the child) of one start, in ms.

    CPU time is far less sensitive to other load on the machine than wall time.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([str(python), "-c", "pass"], check=True, env=env)
    wall = (time.perf_counter() - start) * 1000.0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000.0
    return wall, cpu


def _importtime(python: Path, env: dict[str, str]) -> list[str]:
    out = subprocess.run([str(python), "-X", "importtime", "-c", "pass"], env=env,
                         capture_output=True, text=True, check=True).stderr
    return [line for line in out.splitlines() if "definity" in line or "pyspark" in line]


def _loaded(python: Path, env: dict[str, str]) -> str:
    code = ("import sys; print(sorted(m for m in sys.modules if m.startswith(('pyspark', "
            "'py4j', 'definity', '_definity', 'logging', 'requests'))))")
    return subprocess.run([str(python), "-c", code], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


def main(argv: list[str] = None) -> int:  # type: ignore[assignment]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--budget-ms", type=float, default=5.0)
    args = parser.parse_args(argv)

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DEFINITY_", "PYTHON"))}
    with tempfile.TemporaryDirectory(prefix="definity-import-cost-") as tmp:
        base = Path(tmp)
        without = _make_venv(base / "without", args.python, with_hook=False)
        with_hook = _make_venv(base / "with", args.python, with_hook=True)
        for _ in range(args.warmup):
            _run_once(without, env)
            _run_once(with_hook, env)
        wall: dict[str, list[float]] = {"without": [], "with": []}
        cpu: dict[str, list[float]] = {"without": [], "with": []}
        for i in range(args.runs):
            # Alternate which side goes first, so neither side always follows the other.
            order = [("without", without), ("with", with_hook)]
            if i % 2:
                order.reverse()
            for name, python in order:
                w, c = _run_once(python, env)
                wall[name].append(w)
                cpu[name].append(c)
        print(f"python: {args.python} ({sys.version.split()[0]}), "
              f"runs: {args.runs} alternating pairs, load average {os.getloadavg()[0]:.1f}")
        costs = {}
        for label, series in (("wall", wall), ("cpu", cpu)):
            med_without = statistics.median(series["without"])
            med_with = statistics.median(series["with"])
            # Paired differences are less noisy than the difference of medians.
            diffs = [a - b for a, b in zip(series["with"], series["without"])]
            costs[label] = statistics.median(diffs)
            print(f"{label:4s} python -c pass: without .pth median {med_without:6.2f} ms, "
                  f"with .pth median {med_with:6.2f} ms; difference of medians "
                  f"{med_with - med_without:+.2f} ms, median paired difference "
                  f"{costs[label]:+.2f} ms")
        print("-X importtime lines (with the hook, plugin not enabled):")
        for line in _importtime(with_hook, env):
            print("   ", line)
        print("modules loaded at start with the hook:", _loaded(with_hook, env))
        disarmed = dict(env, DEFINITY_AUTOLOAD="0")
        print("modules loaded at start with DEFINITY_AUTOLOAD=0:", _loaded(with_hook, disarmed))
        # CPU time is the criterion: wall time on a loaded machine measures the load.
        cost = costs["cpu"]
        if cost > args.budget_ms:
            print(f"FAIL: added start cost {cost:.2f} ms exceeds {args.budget_ms} ms")
            return 1
        return 0


if __name__ == "__main__":
    sys.exit(main())
