#!/usr/bin/env bash
# The whole benchmark suite (issue 6): every workload with and without the plugin, A B A B,
# a fresh JVM per run; then extraction_profile.py (one JVM); then rewrites
# docs/performance.md and docs/perf/plan_size.png.
#
#   bash tests/perf/run_all.sh              # full suite, ~15 min on 2 idle cores
#   bash tests/perf/run_all.sh --quick      # smoke run, leaves the docs alone
#   PYTHON=.venv/bin/python bash tests/perf/run_all.sh --runs 7
#
# Extra arguments go to tests/perf/run.py (see --help). Needs the bench extra:
# pip install -e '.[bench]' (matplotlib, psutil) in the venv that has pyspark.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if [ -x /opt/venvs/spark35/bin/python ]; then PYTHON=/opt/venvs/spark35/bin/python
  elif [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python
  else PYTHON=python3; fi
fi
case " $* " in
  *" --quick "*|*" --report-only "*|*" --help "*|*" -h "*)
    exec "$PYTHON" tests/perf/run.py "$@" ;;
esac
# the workloads (fresh JVM per run), then the extraction cost against plan size in one
# JVM (results/extraction_profile.json), then the document, which states the whole time
start=$(date +%s)
"$PYTHON" tests/perf/run.py --no-report "$@"
"$PYTHON" tests/perf/extraction_profile.py --repeat 3
"$PYTHON" tests/perf/run.py --record-total "$start"
exec "$PYTHON" tests/perf/run.py --report-only "$@"
