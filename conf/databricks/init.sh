#!/bin/bash
# definity-spark: cluster-scoped init script for Databricks.
#
# Installs definity-spark into the cluster's Python and turns it on for the driver, so
# every notebook and job on the cluster reports to Definity with no code change.
# Configure it with cluster environment variables (Compute > your cluster > Advanced
# options > Spark > Environment variables); see docs/databricks.md:
#
#   DEFINITY_WHEEL=/Volumes/<catalog>/<schema>/<volume>/definity_spark-<v>-py3-none-any.whl
#       a wheel on a Volume or Workspace path, or instead:
#   DEFINITY_PIP_SPEC=definity-spark==<v>      (default: definity-spark)
#   DEFINITY_PIP_INDEX_URL=https://...         (optional private package index)
#   DEFINITY_SERVER_URL=https://app.definity.run
#   DEFINITY_TOKEN={{secrets/<scope>/<key>}}   (resolved by Databricks; never written here)
#   DEFINITY_ENV=production                    (optional)
#
# Only the driver needs the plugin; on workers the script does nothing.
# If the install fails, the script says so loudly in the init script log and exits 0:
# the cluster starts, without the plugin.
#
# For tests, every path is under DEFINITY_ROOT (default: /), and DEFINITY_PIP /
# DEFINITY_PYTHON / DEFINITY_PIP_ARGS override the pip, the python and extra pip args.

set -u

ROOT="${DEFINITY_ROOT:-}"
ROOT="${ROOT%/}"
PIP="${DEFINITY_PIP:-$ROOT/databricks/python/bin/pip}"
PYTHON="${DEFINITY_PYTHON:-$(dirname "$PIP")/python}"
CONF_FILE="$ROOT/databricks/driver/conf/00-definity.conf"
ENV_FILE="$ROOT/etc/environment"
TAG="[definity-spark init]"

log() { echo "$TAG $*"; }
fail() {
  # Loud in the init script log (stderr and stdout both land there), never fatal.
  echo "$TAG ERROR: $*" >&2
  echo "$TAG ERROR: $*"
  echo "$TAG ERROR: the cluster starts WITHOUT definity-spark; nothing was enabled." >&2
  exit 0
}

if [ -n "${DB_IS_DRIVER:-}" ] && [ "${DB_IS_DRIVER}" != "TRUE" ]; then
  log "worker node: nothing to do (the plugin runs on the driver only)"
  exit 0
fi

if [ ! -x "$PIP" ]; then
  fail "pip not found at $PIP (set DEFINITY_PIP)"
fi

# 1. Install. pyspark is the cluster's own: definity-spark never depends on it.
pip_args=(install --disable-pip-version-check --no-input)
if [ -n "${DEFINITY_PIP_ARGS:-}" ]; then
  # Word splitting intended: a list of extra pip arguments.
  # shellcheck disable=SC2206
  pip_args+=(${DEFINITY_PIP_ARGS})
fi
if [ -n "${DEFINITY_WHEEL:-}" ]; then
  if [ ! -f "$DEFINITY_WHEEL" ]; then
    fail "DEFINITY_WHEEL=$DEFINITY_WHEEL does not exist or is not readable from the cluster"
  fi
  source_desc="wheel $DEFINITY_WHEEL"
  pip_args+=("$DEFINITY_WHEEL")
else
  spec="${DEFINITY_PIP_SPEC:-definity-spark}"
  source_desc="$spec"
  if [ -n "${DEFINITY_PIP_INDEX_URL:-}" ]; then
    pip_args+=(--index-url "$DEFINITY_PIP_INDEX_URL")
    # the index URL may carry credentials: name only its host in the log
    source_desc="$spec from index $(echo "$DEFINITY_PIP_INDEX_URL" | sed -E 's#^([a-z+]+://)([^@/]*@)?([^/]*).*#\1\3#')"
  fi
  pip_args+=("$spec")
fi

log "installing $source_desc with $PIP"
pip_out="$(mktemp)"
"$PIP" "${pip_args[@]}" >"$pip_out" 2>&1
status=$?
if [ "$status" -ne 0 ]; then
  tail -n 30 "$pip_out" | sed "s/^/$TAG pip: /" >&2
  rm -f "$pip_out"
  fail "installing $source_desc failed (pip exit $status)"
fi
tail -n 2 "$pip_out" | sed "s/^/$TAG pip: /"
rm -f "$pip_out"

# 2. Check: a fresh interpreter must arm the hook (definity_spark.pth in site-packages).
if ! "$PYTHON" -c "import sys; sys.exit(0 if 'definity_spark.autoload' in sys.modules else 3)"; then
  fail "definity-spark installed but its start hook is not armed in $PYTHON"
fi
version="$("$PYTHON" -c "from importlib.metadata import version; print(version('definity-spark'))" 2>/dev/null || echo unknown)"

# 3. Turn it on for the driver: Spark conf (read when the driver starts) ...
mkdir -p "$(dirname "$CONF_FILE")" || fail "cannot create $(dirname "$CONF_FILE")"
{
  echo "# written by the definity-spark init script; see docs/databricks.md"
  echo "[driver] {"
  echo "  \"spark.definity.enabled\" = \"true\""
  if [ -n "${DEFINITY_SERVER_URL:-}" ]; then
    echo "  \"spark.definity.server\" = \"${DEFINITY_SERVER_URL}\""
  fi
  if [ -n "${DEFINITY_ENV:-}" ]; then
    echo "  \"spark.definity.env.name\" = \"${DEFINITY_ENV}\""
  fi
  echo "}"
} >"$CONF_FILE" || fail "cannot write $CONF_FILE"

# ... and the environment (for Python processes that read it). The token is never
# written anywhere: it reaches the driver as the cluster's DEFINITY_TOKEN variable.
mkdir -p "$(dirname "$ENV_FILE")" || fail "cannot create $(dirname "$ENV_FILE")"
touch "$ENV_FILE" || fail "cannot write $ENV_FILE"
tmp_env="$(mktemp)"
grep -v -E '^(DEFINITY_ENABLED|DEFINITY_SERVER_URL|DEFINITY_ENV)=' "$ENV_FILE" >"$tmp_env" || true
{
  echo "DEFINITY_ENABLED=true"
  if [ -n "${DEFINITY_SERVER_URL:-}" ]; then echo "DEFINITY_SERVER_URL=${DEFINITY_SERVER_URL}"; fi
  if [ -n "${DEFINITY_ENV:-}" ]; then echo "DEFINITY_ENV=${DEFINITY_ENV}"; fi
} >>"$tmp_env"
cat "$tmp_env" >"$ENV_FILE" || fail "cannot write $ENV_FILE"
rm -f "$tmp_env"

if [ -z "${DEFINITY_SERVER_URL:-}" ]; then
  log "WARNING: DEFINITY_SERVER_URL is not set; events go to a local JSONL file on the driver"
fi
if [ -z "${DEFINITY_TOKEN:-}" ]; then
  log "WARNING: DEFINITY_TOKEN is not set (add it as a cluster environment variable from a secret)"
fi
log "definity-spark $version installed and enabled for the driver ($CONF_FILE, $ENV_FILE)"
exit 0
