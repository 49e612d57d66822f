#!/usr/bin/env bash
# Set up everything the tests (and the demo) need on a fresh Debian machine:
# Debian packages (JDBC drivers, PostgreSQL, Chromium, shellcheck, maven), a virtualenv
# with definity-spark installed editable plus pyspark and the test extras, and the
# table-format jars of that pyspark from Maven Central (Delta Lake, Iceberg, spark-avro,
# Spark's Kafka connector: .ci/fetch-jars.sh, into $VENV/share/definity-jars; a Kafka
# broker for the streaming tests into $VENV/share/definity-kafka; test-only, the plugin
# ships none).
#
#   VENV=.venv SPARK_VERSION=3.5.9 bash tests/setup.sh      (defaults shown)
#   SKIP_SYSTEM=1 bash tests/setup.sh                        (python side and jars only)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
SPARK_VERSION="${SPARK_VERSION:-3.5.9}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/pip" install -q "pyspark==${SPARK_VERSION}" -e ".[test]"

if [ -z "${SKIP_SYSTEM:-}" ]; then
  # Debian packages (JDBC drivers, PostgreSQL, Chromium, shellcheck, maven) + per-venv
  # extras (pandas; the Iceberg runtime jar wheel on Spark 3.5; the format jars)
  bash .ci/setup-deps.sh "$VENV/bin/python"
else
  bash .ci/fetch-jars.sh "$VENV/bin/python"
fi
echo "setup: $VENV ready (pyspark ${SPARK_VERSION})"
