#!/bin/bash
# definity-spark: report a spark-submit application by configuration only.
# app.py needs no import or call: definity-spark, installed in the driver's Python
# (pip install definity-spark), attaches when the application creates its SparkSession.
#
#   DEFINITY_SERVER_URL=https://app.definity.run DEFINITY_TOKEN=... \
#     bash conf/spark-submit.example.sh app.py [args...]
#
# The token comes from the environment so that it is not visible in `ps` output
# (--conf spark.definity.token=... works too, but shows in the process list).
set -euo pipefail

: "${DEFINITY_SERVER_URL:?set DEFINITY_SERVER_URL (or start a local collector: definity-spark collector)}"
: "${DEFINITY_TOKEN:?set DEFINITY_TOKEN}"
export DEFINITY_TOKEN

# The driver must run the Python where definity-spark is installed.
PYTHON="${PYSPARK_DRIVER_PYTHON:-$(command -v python3)}"

exec spark-submit \
  --conf spark.pyspark.driver.python="$PYTHON" \
  --conf spark.definity.enabled=true \
  --conf spark.definity.server="$DEFINITY_SERVER_URL" \
  --conf spark.definity.env.name="${DEFINITY_ENV:-dev}" \
  --conf spark.definity.pipeline.name="${DEFINITY_PIPELINE_NAME:-my-pipeline}" \
  "$@"
