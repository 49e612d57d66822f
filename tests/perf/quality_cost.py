"""What opt-in data quality (``spark.definity.quality.columns``) costs a job: the same
work with the plugin activated, without and with ``*:*`` (every column of every write
measured), each run in a fresh interpreter and JVM.

Work: the 22 TPC-H queries as CTAS (/work/shared/benchmarks/tpch, the corpus
tests/perf/workloads.py's plan_sweep runs, here over generated data: ``--sf`` of the
TPC-H row counts, made once by ``--prepare``), then one large parquet write (``--rows``
rows of 8 columns: ~1 GB of parquet at the default). Each statement is timed alone
(wall), the plugin flushed after it (untimed).

    python tests/perf/quality_cost.py --prepare            # the TPC-H data, once
    python tests/perf/quality_cost.py --mode off --out /tmp/q-off.json
    python tests/perf/quality_cost.py --mode on --out /tmp/q-on.json
    python tests/perf/quality_cost.py --compare /tmp/q-off.json /tmp/q-on.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import create_tpch_tables, tpch_query  # noqa: E402

BASE = os.path.join(tempfile.gettempdir(), "definity-quality-perf")
NATIONS = ["ALGERIA", "ARGENTINA", "BRAZIL", "CANADA", "EGYPT", "ETHIOPIA", "FRANCE",
           "GERMANY", "INDIA", "INDONESIA", "IRAN", "IRAQ", "JAPAN", "JORDAN", "KENYA",
           "MOROCCO", "MOZAMBIQUE", "PERU", "CHINA", "ROMANIA", "SAUDI ARABIA", "VIETNAM",
           "RUSSIA", "UNITED KINGDOM", "UNITED STATES"]
NATION_REGION = [0, 1, 1, 1, 4, 0, 3, 3, 2, 2, 4, 4, 2, 4, 0, 0, 0, 1, 2, 3, 4, 2, 3, 3, 1]
REGIONS = ["AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST"]
COLORS = ["forest", "green", "blue", "ivory", "red", "almond", "khaki", "lace"]
TYPE1 = ["STANDARD", "SMALL", "MEDIUM", "LARGE", "ECONOMY", "PROMO"]
TYPE2 = ["ANODIZED", "BURNISHED", "PLATED", "POLISHED", "BRUSHED"]
TYPE3 = ["TIN", "NICKEL", "BRASS", "STEEL", "COPPER"]
SIZES = ["SM", "LG", "MED", "JUMBO", "WRAP"]
CONTAINERS = ["CASE", "BOX", "BAG", "JAR", "PKG", "PACK", "CAN", "DRUM"]
SEGMENTS = ["AUTOMOBILE", "BUILDING", "FURNITURE", "MACHINERY", "HOUSEHOLD"]
PRIORITIES = ["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"]
INSTRUCTIONS = ["DELIVER IN PERSON", "COLLECT COD", "NONE", "TAKE BACK RETURN"]
MODES = ["REG AIR", "AIR", "RAIL", "SHIP", "TRUCK", "MAIL", "FOB"]


def _pick(values: list[str], expr: str) -> str:
    """A SQL expression choosing one of ``values`` by ``expr`` (an integer)."""
    quoted = ", ".join("'" + v + "'" for v in values)
    return f"element_at(array({quoted}), CAST(pmod({expr}, {len(values)}) AS INT) + 1)"


def _session(mode: str | None) -> Any:
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master("local[2]").appName(f"quality-cost-{mode}")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "8")
            .config("spark.driver.memory", "2g")
            .config("spark.sql.warehouse.dir", os.path.join(BASE, "warehouse"))
            .config("spark.hadoop.javax.jdo.option.ConnectionURL",
                    f"jdbc:derby:;databaseName={BASE}/metastore_db;create=true")
            .enableHiveSupport().getOrCreate())


def prepare(sf: float) -> None:
    """The TPC-H tables with generated rows (keys consistent across tables; the values
    the queries filter on drawn from TPC-H's vocabularies, so that they return rows)."""
    if os.path.exists(BASE):
        shutil.rmtree(BASE)
    os.makedirs(BASE)
    spark = _session("prepare")
    spark.sparkContext.setLogLevel("ERROR")
    create_tpch_tables(spark)
    n_part, n_supp = int(200_000 * sf), int(10_000 * sf)
    n_cust, n_ord = int(150_000 * sf), int(1_500_000 * sf)
    q = n_supp // 4
    phone = "concat(CAST(10 + pmod(id, 25) AS STRING), '-555-0100')"
    money = "CAST(pmod(id * 37, 11000) - 1000 AS DECIMAL(15,2))"
    ship = "date_add(DATE'1992-01-01', CAST(pmod(id * 31, 2400) AS INT))"
    columns: dict[str, tuple[int, list[str]]] = {
        "region": (5, ["CAST(id AS INT)", _pick(REGIONS, "id"), "concat('r', id)"]),
        "nation": (25, [
            "CAST(id AS INT)", _pick(NATIONS, "id"),
            f"CAST(element_at(array({','.join(map(str, NATION_REGION))}), "
            "CAST(id AS INT) + 1) AS INT)", "concat('n', id)"]),
        "part": (n_part, [
            "id + 1", f"concat({_pick(COLORS, 'id')}, ' ', {_pick(COLORS, 'id div 5')})",
            "concat('Manufacturer#', pmod(id, 5) + 1)",
            "concat('Brand#', pmod(id, 5) + 1, pmod(id div 5, 5) + 1)",
            f"concat({_pick(TYPE1, 'id')}, ' ', {_pick(TYPE2, 'id div 6')}, ' ', "
            f"{_pick(TYPE3, 'id div 30')})",
            "CAST(pmod(id, 50) + 1 AS INT)",
            f"concat({_pick(SIZES, 'id div 7')}, ' ', {_pick(CONTAINERS, 'id div 3')})",
            "CAST(900 + pmod(id, 1000) / 10 AS DECIMAL(15,2))", "concat('p', id)"]),
        "supplier": (n_supp, [
            "id + 1", "concat('Supplier#', id + 1)", "concat('addr', id)",
            "CAST(pmod(id, 25) AS INT)", phone, money,
            "IF(pmod(id, 50) = 0, 'Customer whose Complaints', concat('s', id))"]),
        "partsupp": (4 * n_part, [
            f"pmod(id, {n_part}) + 1",
            f"pmod(pmod(id, {n_part}) + (id div {n_part}) * {q}, {n_supp}) + 1",
            "CAST(pmod(id * 3, 9999) + 1 AS INT)", "CAST(pmod(id, 1000) + 1 AS DECIMAL(15,2))",
            "concat('ps', id)"]),
        "customer": (n_cust, [
            "id + 1", "concat('Customer#', id + 1)", "concat('addr', id)",
            "CAST(pmod(id, 25) AS INT)", phone, money, _pick(SEGMENTS, "id"),
            "concat('c', id)"]),
        "orders": (n_ord, [
            "id + 1", f"pmod(id * 7, {n_cust}) + 1", _pick(["F", "O", "P"], "id"),
            "CAST(pmod(id * 13, 400000) + 1000 AS DECIMAL(15,2))",
            "date_add(DATE'1992-01-01', CAST(pmod(id * 17, 2400) AS INT))",
            _pick(PRIORITIES, "id"), "concat('Clerk#', pmod(id, 1000))", "0",
            "IF(pmod(id, 40) = 0, 'special requests', concat('o', id))"]),
        "lineitem": (4 * n_ord, [
            "(id div 4) + 1", f"pmod(id * 7, {n_part}) + 1",
            f"pmod(pmod(id * 7, {n_part}) + pmod(id, 4) * {q}, {n_supp}) + 1",
            "CAST(pmod(id, 4) + 1 AS INT)", "CAST(pmod(id, 50) + 1 AS DECIMAL(15,2))",
            "CAST((pmod(id, 50) + 1) * 901.5 AS DECIMAL(15,2))",
            "CAST(pmod(id, 11) / 100 AS DECIMAL(15,2))",
            "CAST(pmod(id, 9) / 100 AS DECIMAL(15,2))", _pick(["R", "A", "N"], "id"),
            _pick(["O", "F"], "id div 3"), ship, f"date_add({ship}, 30)",
            f"date_add({ship}, CAST(pmod(id, 30) + 1 AS INT))", _pick(INSTRUCTIONS, "id"),
            _pick(MODES, "id div 2"), "concat('l', id)"]),
    }
    inserts = {t: (rows, ", ".join(cols)) for t, (rows, cols) in columns.items()}
    for table, (rows, select) in inserts.items():
        spark.sql(f"INSERT OVERWRITE TABLE tpch.{table} SELECT {select} FROM range({rows})")
    spark.stop()


def run(mode: str, rows: int) -> dict[str, Any]:
    import definity_spark

    spark = _session(mode)
    spark.sparkContext.setLogLevel("ERROR")
    spark.sql("DROP DATABASE IF EXISTS out CASCADE")
    spark.sql("CREATE DATABASE out")
    big = os.path.join(BASE, "big")
    shutil.rmtree(big, ignore_errors=True)
    events = os.path.join(BASE, f"events-{mode}.jsonl")
    if os.path.exists(events):
        os.remove(events)
    settings = {"quality_columns": "*:*"} if mode == "on" else {}
    handle = definity_spark.activate(spark, events_file=events, pipeline_name="quality-cost",
                                     task_name=mode, flush_timeout=120.0, **settings)
    spark.sql("USE tpch")
    spark.sql("CREATE TABLE out.warm USING parquet AS SELECT * FROM region")  # warm-up
    handle.flush(timeout=120)
    result: dict[str, Any] = {"mode": mode, "load": os.getloadavg()[0], "tpch": {}}
    for q in range(1, 23):
        t0 = time.perf_counter()
        spark.sql(f"CREATE TABLE out.q{q} USING parquet AS {tpch_query(q)}")
        result["tpch"][f"q{q}"] = time.perf_counter() - t0
        handle.flush(timeout=120)
    t0 = time.perf_counter()
    spark.range(rows).selectExpr(
        "id", "id * 2.5 AS x", "CAST(id % 1000 AS INT) AS k",
        "IF(id % 10 = 0, NULL, concat('name-', id)) AS name",
        "date_add(DATE'2020-01-01', CAST(id % 3000 AS INT)) AS day",
        "CAST(id % 100000 AS DECIMAL(12,2)) AS amount", "rand(7) AS r", "id % 3 = 0 AS flag",
    ).write.parquet(big)
    result["big_write_s"] = time.perf_counter() - t0
    handle.flush(timeout=120)
    result["big_bytes"] = sum(os.path.getsize(os.path.join(d, f))
                              for d, _, files in os.walk(big) for f in files)
    result["tpch_total_s"] = sum(result["tpch"].values())
    with open(events) as handle_file:
        column_metrics = sum(1 for line in handle_file for m in
                             json.loads(line)["body"].get("metrics", ())
                             if m.get("asset_type") == "column")
    result["column_metrics_sent"] = column_metrics
    definity_spark.deactivate(spark)
    spark.stop()
    return result


def compare(off_path: str, on_path: str) -> None:
    with open(off_path) as f:
        off = json.load(f)
    with open(on_path) as f:
        on = json.load(f)
    print(f"{'':10} {'off s':>8} {'on s':>8} {'on/off':>7}")
    for q in off["tpch"]:
        print(f"{q:10} {off['tpch'][q]:8.3f} {on['tpch'][q]:8.3f} "
              f"{on['tpch'][q] / off['tpch'][q]:7.3f}")
    for key in ("tpch_total_s", "big_write_s"):
        print(f"{key:10} {off[key]:8.2f} {on[key]:8.2f} {on[key] / off[key]:7.3f}")
    print(f"big write: {off['big_bytes'] / 1e9:.2f} GB; column metrics sent: "
          f"off {off['column_metrics_sent']}, on {on['column_metrics_sent']}; "
          f"load: off {off['load']:.2f}, on {on['load']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true")
    parser.add_argument("--sf", type=float, default=0.1)
    parser.add_argument("--mode", choices=("off", "on"))
    parser.add_argument("--rows", type=int, default=30_000_000)
    parser.add_argument("--out")
    parser.add_argument("--compare", nargs=2)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.sf)
    if args.mode:
        result = run(args.mode, args.rows)
        text = json.dumps(result, indent=1)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        print(text)
    if args.compare:
        compare(*args.compare)


if __name__ == "__main__":
    main()
