#!/usr/bin/env bash
# Fetches the table-format jars the integration suite hands to Spark (spark.jars): Delta
# Lake, the Iceberg Spark runtime and spark-avro, for the pyspark of each Python given,
# from Maven Central with mvn (downloads cached in ~/.m2), into <venv>/share/definity-jars.
# Test set-up only: the plugin itself ships no jar and needs none.
#
#   bash .ci/fetch-jars.sh .venv/bin/python [.venv4/bin/python ...]
#
# Which jars, by the venv's pyspark (Scala 2.12 for 3.5, 2.13 for 4.x):
#   3.5.x  spark-avro_2.12 (same version), delta-spark_2.12 + delta-storage 3.3.3
#          (Iceberg on 3.5 comes from the PyPI wheel, .ci/setup-deps.sh)
#   4.1.x  spark-avro_2.13 4.1.1, iceberg-spark-runtime-4.1_2.13 1.12.0: the newest
#          Spark 4.x with an Iceberg runtime (none is published for 4.2 or 4.3)
#   4.2.x  spark-avro_2.13 4.2.0, delta-spark_4.2_2.13 + delta-storage 4.4.0: the newest
#          Spark 4.x with a Delta release (Delta 4.4.0 is built on Spark 4.2.0; there is no
#          delta-spark_4.3_2.13)
#   4.3.x  spark-avro_2.13 4.2.0
# spark-avro on 4.x: Central serves 4.1.1 and 4.2.0 but not 4.1.4, 4.2.1 or 4.3.0. The
# 4.x jar is thin (the file format itself, AvroFileFormat, is in spark-sql: 4.1 on; the
# jar adds the source's registration, its V2 table and to_avro/from_avro), and 4.2.0's
# reads and writes avro on 4.2.1 and 4.3.0 (tests/integration/test_it_inputs_files.py).
#
# Kafka (Structured Streaming tests, issue 24), also into <venv>/share/definity-jars:
#   3.5.x  spark-sql-kafka-0-10_2.12 + spark-token-provider-kafka-0-10_2.12 3.5.7 (Central
#          has no 3.5.8 or 3.5.9), kafka-clients 3.4.1, commons-pool2 2.11.1 (its POM's)
#   4.x    spark-sql-kafka-0-10_2.13 + spark-token-provider-kafka-0-10_2.13 4.2.0 (none
#          newer on Central), kafka-clients 3.9.2, commons-pool2 2.13.1 (its POM's)
# and a Kafka broker for the tests to start in KRaft mode on loopback
# (tests/kafka_broker.py): org.apache.kafka:kafka_2.13 with its runtime dependencies, into
# <venv>/share/definity-kafka (its own JVM's classpath, never Spark's). And spark-avro of
# the other Scala line (3.5.7; 2.13 for 3.5, 2.12 for 4.x) into
# <venv>/share/definity-wrong-scala, for tests/test_bad_input.py.
#
# Idempotent: a jar already in the folder is not fetched again (nor is mvn started), and
# jars of other versions left by an earlier pin are removed. Needs mvn (Debian: maven).
set -euo pipefail

DELTA_SPARK35=3.3.3
DELTA_SPARK4=4.4.0
ICEBERG_SPARK4=1.12.0
AVRO_SPARK41=4.1.1
AVRO_SPARK42=4.2.0
KAFKA_SQL_SPARK35=3.5.7
KAFKA_SQL_SPARK4=4.2.0
KAFKA_BROKER=3.9.2

if [ "$#" -eq 0 ]; then
  echo "usage: fetch-jars.sh PYTHON..." >&2
  exit 2
fi

for py in "$@"; do
  read -r version dir < <("$py" -c 'import os, sys, pyspark
print(pyspark.__version__, os.path.join(sys.prefix, "share", "definity-jars"))')
  kafka35=("org.apache.spark:spark-sql-kafka-0-10_2.12:${KAFKA_SQL_SPARK35}"
           "org.apache.spark:spark-token-provider-kafka-0-10_2.12:${KAFKA_SQL_SPARK35}"
           "org.apache.kafka:kafka-clients:3.4.1"
           "org.apache.commons:commons-pool2:2.11.1")
  kafka4=("org.apache.spark:spark-sql-kafka-0-10_2.13:${KAFKA_SQL_SPARK4}"
          "org.apache.spark:spark-token-provider-kafka-0-10_2.13:${KAFKA_SQL_SPARK4}"
          "org.apache.kafka:kafka-clients:3.9.2"
          "org.apache.commons:commons-pool2:2.13.1")
  case "$version" in
    3.5.*) wanted=("org.apache.spark:spark-avro_2.12:${version}"
                   "io.delta:delta-spark_2.12:${DELTA_SPARK35}"
                   "io.delta:delta-storage:${DELTA_SPARK35}" "${kafka35[@]}") ;;
    4.1.*) wanted=("org.apache.spark:spark-avro_2.13:${AVRO_SPARK41}"
                   "org.apache.iceberg:iceberg-spark-runtime-4.1_2.13:${ICEBERG_SPARK4}"
                   "${kafka4[@]}") ;;
    4.2.*) wanted=("org.apache.spark:spark-avro_2.13:${AVRO_SPARK42}"
                   "io.delta:delta-spark_4.2_2.13:${DELTA_SPARK4}"
                   "io.delta:delta-storage:${DELTA_SPARK4}" "${kafka4[@]}") ;;
    4.3.*) wanted=("org.apache.spark:spark-avro_2.13:${AVRO_SPARK42}" "${kafka4[@]}") ;;
    *) echo "fetch-jars: no format jars for pyspark ${version}"; continue ;;
  esac
  mkdir -p "$dir"
  keep=()
  for coords in "${wanted[@]}"; do
    IFS=: read -r _group artifact artifact_version <<<"$coords"
    jar="${artifact}-${artifact_version}.jar"
    keep+=("$jar")
    if [ -s "$dir/$jar" ]; then
      continue
    fi
    if ! command -v mvn >/dev/null 2>&1; then
      echo "fetch-jars: mvn not found (apt-get install maven)" >&2
      exit 1
    fi
    echo "fetch-jars: $coords -> $dir"
    mvn -q -B dependency:copy -Dartifact="$coords" -DoutputDirectory="$dir"
    test -s "$dir/$jar"
  done
  for existing in "$dir"/*.jar; do
    [ -e "$existing" ] || continue
    name=$(basename "$existing")
    if [[ " ${keep[*]} " != *" ${name} "* ]]; then
      echo "fetch-jars: removing $name (not pinned for pyspark ${version})"
      rm -f "$existing"
    fi
  done
  echo "fetch-jars: pyspark ${version}: ${keep[*]}"

  # the Kafka broker of the streaming tests: its runtime classpath, resolved by mvn
  broker="$(dirname "$dir")/definity-kafka"
  stamp="$broker/.kafka_2.13-${KAFKA_BROKER}"
  if [ ! -e "$stamp" ]; then
    if ! command -v mvn >/dev/null 2>&1; then
      echo "fetch-jars: mvn not found (apt-get install maven)" >&2
      exit 1
    fi
    echo "fetch-jars: org.apache.kafka:kafka_2.13:${KAFKA_BROKER} (+ runtime deps) -> $broker"
    rm -rf "$broker"
    mkdir -p "$broker"
    cat >"$broker/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>definity.test</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>${KAFKA_BROKER}</version></dependency>
  </dependencies>
</project>
POM
    mvn -q -B -f "$broker/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$broker/lib"
    test -s "$broker/lib/kafka_2.13-${KAFKA_BROKER}.jar"
    touch "$stamp"
  fi

  # spark-avro of the other Scala line, into <venv>/share/definity-wrong-scala: a format
  # jar that cannot work on this Spark (tests/test_bad_input.py), never on Spark's path
  case "$version" in
    3.5.*) wrong="org.apache.spark:spark-avro_2.13:3.5.7" ;;
    *) wrong="org.apache.spark:spark-avro_2.12:3.5.7" ;;
  esac
  wrong_dir="$(dirname "$dir")/definity-wrong-scala"
  IFS=: read -r _group wrong_artifact wrong_version <<<"$wrong"
  if [ ! -s "$wrong_dir/${wrong_artifact}-${wrong_version}.jar" ]; then
    echo "fetch-jars: $wrong -> $wrong_dir"
    rm -rf "$wrong_dir"
    mkdir -p "$wrong_dir"
    mvn -q -B dependency:copy -Dartifact="$wrong" -DoutputDirectory="$wrong_dir"
    test -s "$wrong_dir/${wrong_artifact}-${wrong_version}.jar"
  fi
done
