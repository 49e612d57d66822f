"""Regenerate (or check) docs/configuration.md from the settings definitions.

    python -m definity_spark._gen_config_doc           # write docs/configuration.md
    python -m definity_spark._gen_config_doc --check   # exit 1 if it is stale

The table itself is built by ``definity_spark.settings.render_configuration_doc()``; this
module only knows where the file lives (``docs/`` next to the package in a source
checkout) and is kept apart from ``settings`` so that ``python -m`` does not execute a
module the package has already imported.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from definity_spark.settings import REGENERATE_COMMAND, render_configuration_doc

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def is_current(path: Path = DEFAULT_PATH) -> bool:
    """True when ``path`` holds exactly what the definitions generate."""
    try:
        return path.read_text(encoding="utf-8") == render_configuration_doc()
    except OSError:
        return False


def write(path: Path = DEFAULT_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_configuration_doc(), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=REGENERATE_COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH,
                        help="output file (default: %(default)s)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the file is stale")
    args = parser.parse_args(argv)
    if args.check:
        if is_current(args.path):
            return 0
        # A command-line tool (not library code), so stderr is the right place.
        print(f"{args.path} is stale; regenerate it with: {REGENERATE_COMMAND}",
              file=sys.stderr)
        return 1
    write(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
