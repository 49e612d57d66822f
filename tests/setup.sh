#!/usr/bin/env bash
# Set up everything the tests (and the demo) need on a fresh Debian machine:
# Debian packages (JDBC drivers, PostgreSQL, Chromium, shellcheck) and a virtualenv with
# definity-spark installed editable plus pyspark and the test extras.
#
#   VENV=.venv SPARK_VERSION=3.5.9 bash tests/setup.sh      (defaults shown)
#   SKIP_SYSTEM=1 bash tests/setup.sh                        (python side only)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
SPARK_VERSION="${SPARK_VERSION:-3.5.9}"
PYTHON="${PYTHON:-python3}"

if [ -z "${SKIP_SYSTEM:-}" ]; then
  if [ -x .ci/setup-deps.sh ] || [ -f .ci/setup-deps.sh ]; then
    bash .ci/setup-deps.sh
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/pip" install -q "pyspark==${SPARK_VERSION}" -e ".[test]"
if [ "${SPARK_VERSION%%.*}" = "3" ]; then
  # Iceberg runtime jar for Spark 3.5 (pinned: 1.0.3 ships a trimmed jar)
  "$VENV/bin/pip" install -q "snowpark-connect-deps-iceberg==1.0.2" || \
    echo "setup: Iceberg jar wheel unavailable; Iceberg tests will be skipped" >&2
fi
echo "setup: $VENV ready (pyspark ${SPARK_VERSION})"
