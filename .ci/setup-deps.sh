#!/usr/bin/env bash
# Installs what the integration suite (tests/integration) needs beyond pyspark:
#
#   Debian: openjdk (Java 17, only if no java is on PATH), libxerial-sqlite-jdbc-java
#           (/usr/share/java/sqlite-jdbc.jar), libpostgresql-jdbc-java
#           (/usr/share/java/postgresql.jar), postgresql (a real server, started by the
#           suite itself on a free loopback port), plus chromium, chromium-driver and the
#           shell linter, used by other suites of the repo.
#           maven (mvn, only if none is on PATH) for the format jars below.
#   PyPI, into each Python given as an argument (or $VENV/bin/python if it exists):
#           pandas (toPandas scenario), and on Spark 3.5 only the Iceberg runtime jar
#           wheel snowpark-connect-deps-iceberg==1.0.2 (pinned: 1.0.3 ships a trimmed
#           jar that fails on the first CREATE TABLE).
#   Maven Central, for each of those Pythons: the Delta Lake, Iceberg (Spark 4) and
#           spark-avro jars of its pyspark, into <venv>/share/definity-jars
#           (.ci/fetch-jars.sh; cached in ~/.m2).
#
#   bash .ci/setup-deps.sh                        # Debian packages (+ $VENV if set)
#   bash .ci/setup-deps.sh .venv/bin/python ...   # Debian packages + PyPI extras
#
# Idempotent: packages already installed are not fetched again; safe to run repeatedly.
set -euo pipefail

DEBIAN_PACKAGES=(
  libxerial-sqlite-jdbc-java
  libpostgresql-jdbc-java
  postgresql
  chromium
  chromium-driver
  shellcheck
)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ! command -v java >/dev/null 2>&1; then
  missing+=(openjdk-17-jre-headless)
fi
if ! command -v mvn >/dev/null 2>&1; then
  missing+=(maven)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup-deps: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # (the suite starts its own PostgreSQL server; the Debian default cluster is not used)
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup-deps: Debian packages present"
fi

# PyPI extras for each Python interpreter the suite runs under.
pythons=("$@")
if [ "${#pythons[@]}" -eq 0 ] && [ -n "${VENV:-}" ] && [ -x "${VENV}/bin/python" ]; then
  pythons=("${VENV}/bin/python")
fi
for py in "${pythons[@]}"; do
  if [ ! -x "$py" ]; then
    echo "setup-deps: $py is not an executable Python; skipped" >&2
    continue
  fi
  spark_major_minor="$("$py" -c 'import pyspark; print(".".join(pyspark.__version__.split(".")[:2]))' 2>/dev/null || echo none)"
  if ! "$py" -c 'import pandas' >/dev/null 2>&1; then
    echo "setup-deps: installing pandas into $py"
    "$py" -m pip install -q "pandas>=2.2" || echo "setup-deps: pandas unavailable; the toPandas scenario will skip" >&2
  fi
  if [ "$spark_major_minor" = "3.5" ]; then
    if ! "$py" -c 'import snowpark_connect_deps_iceberg as m, sys; sys.exit(m.__version__ != "1.0.2")' >/dev/null 2>&1; then
      echo "setup-deps: installing snowpark-connect-deps-iceberg==1.0.2 into $py"
      "$py" -m pip install -q --no-deps "snowpark-connect-deps-iceberg==1.0.2"
    fi
  fi
  bash "$(dirname "$0")/fetch-jars.sh" "$py"
done
echo "setup-deps: done"
