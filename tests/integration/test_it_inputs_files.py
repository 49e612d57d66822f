"""Issue 3, inputs read by path: every built-in file format, partition directories,
temp views over paths, cached DataFrames, and in-memory data (which is not a dataset).

Each scenario reads, writes one parquet path, and asserts the exact /log/tf (input names
and the columns read, in the input's schema order), /log/dataset and cnt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from it_helpers import (
    AVRO_LINES,
    PEOPLE,
    PEOPLE_COLS,
    PEOPLE_DDL,
    PEOPLE_SCHEMA,
    Task,
    avro_jar,
    expect_write,
    file_name,
    people_df,
    require_format,
)

pytestmark = pytest.mark.spark

OVER_30 = sum(1 for p in PEOPLE if p[2] > 30)


@pytest.fixture(scope="module")
def module_data(spark: Any, module_dir: Path) -> dict[str, Path]:
    src = module_dir / "src"
    df = people_df(spark).coalesce(1)
    paths = {fmt: src / f"people_{fmt}" for fmt in ("parquet", "orc", "json", "csv", "text")}
    df.write.parquet(str(paths["parquet"]))
    df.write.orc(str(paths["orc"]))
    df.write.json(str(paths["json"]))
    df.write.option("header", True).csv(str(paths["csv"]))
    df.select("name").write.text(str(paths["text"]))
    paths["by_city"] = src / "people_by_city"
    df.write.partitionBy("city").parquet(str(paths["by_city"]))
    return paths


def _out(module_dir: Path, name: str) -> str:
    return str(module_dir / "out" / name)


@pytest.mark.parametrize("fmt", ["parquet", "orc", "csv"])
def test_read_by_path_typed_formats(task: Task, module_data: dict[str, Path],
                                    module_dir: Path, fmt: str) -> None:
    src = module_data[fmt]
    out = _out(module_dir, f"from_{fmt}")

    def action() -> None:
        reader = task.spark.read
        if fmt == "csv":
            reader = reader.schema(PEOPLE_DDL).option("header", True)
        df = reader.format(fmt).load(str(src))
        df.where("age > 30").select("name", "id").write.parquet(out)

    batch = task.run(action)
    expect_write(batch, output=file_name(out),
                 inputs={file_name(src): ["id", "name", "age"]},
                 schema=["name-STRING", "id-INTEGER"], cnt=OVER_30, ds_type="path")


def test_read_json_inferred_schema_order(task: Task, module_data: dict[str, Path],
                                         module_dir: Path) -> None:
    # JSON schema inference sorts fields: age, city, id, name. Columns follow THAT order.
    src = module_data["json"]
    out = _out(module_dir, "from_json")
    batch = task.run(lambda: task.spark.read.json(str(src))
                     .select("name", "id").write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["id", "name"]},
                 schema=["name-STRING", "id-LONG"], cnt=len(PEOPLE), ds_type="path")


def test_read_text(task: Task, module_data: dict[str, Path], module_dir: Path) -> None:
    src = module_data["text"]
    out = _out(module_dir, "from_text")
    batch = task.run(lambda: task.spark.read.text(str(src)).write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["value"]},
                 schema=["value-STRING"], cnt=len(PEOPLE), ds_type="path")


def test_write_and_read_avro(task: Task, module_dir: Path) -> None:
    """spark-avro (an external module of Spark, from Maven Central: .ci/fetch-jars.sh):
    an avro path is written and read like any built-in file format."""
    require_format("spark-avro", AVRO_LINES, avro_jar() is not None)
    src = module_dir / "src" / "people_avro"
    batch = task.run(lambda: people_df(task.spark).coalesce(1).write.format("avro")
                     .save(str(src)))
    expect_write(batch, output=file_name(src), inputs={}, schema=PEOPLE_SCHEMA,
                 cnt=len(PEOPLE), ds_type="path")
    out = _out(module_dir, "from_avro")
    batch = task.run(lambda: task.spark.read.format("avro").load(str(src))
                     .select("id").write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["id"]},
                 schema=["id-INTEGER"], cnt=len(PEOPLE), ds_type="path")


def test_select_star_reads_all_columns(task: Task, module_data: dict[str, Path],
                                       module_dir: Path) -> None:
    src = module_data["parquet"]
    out = _out(module_dir, "star")
    batch = task.run(lambda: task.spark.sql(f"SELECT * FROM parquet.`{src}`")
                     .write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={file_name(src): PEOPLE_COLS},
                 schema=["id-INTEGER", "name-STRING", "age-INTEGER", "city-STRING"],
                 cnt=len(PEOPLE), ds_type="path")


def test_partitioned_path_read_whole_table(task: Task, module_data: dict[str, Path],
                                           module_dir: Path) -> None:
    # a partitioned path reads back with the partition column last: id, name, age, city
    src = module_data["by_city"]
    out = _out(module_dir, "paris")
    batch = task.run(lambda: task.spark.read.parquet(str(src)).where("city = 'Paris'")
                     .select("id").write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["id", "city"]},
                 schema=["id-INTEGER"], cnt=2, ds_type="path")


def test_partition_directory_trimmed_to_table_root(task: Task, module_data: dict[str, Path],
                                                   module_dir: Path) -> None:
    src = module_data["by_city"]
    out = _out(module_dir, "oslo")
    batch = task.run(lambda: task.spark.read.parquet(str(src / "city=Oslo"))
                     .select("name").write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["name"]},
                 schema=["name-STRING"], cnt=1, ds_type="path")


def test_trailing_slash_is_not_part_of_the_name(task: Task, module_data: dict[str, Path],
                                                module_dir: Path) -> None:
    src = module_data["parquet"]
    out = _out(module_dir, "slash")
    batch = task.run(lambda: task.spark.read.parquet(str(src) + "/").select("age")
                     .write.parquet(out + "/"))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["age"]},
                 schema=["age-INTEGER"], cnt=len(PEOPLE), ds_type="path")


def test_temp_view_over_path(task: Task, module_data: dict[str, Path], module_dir: Path) -> None:
    src = module_data["orc"]
    out = _out(module_dir, "tv_path")
    task.spark.read.orc(str(src)).createOrReplaceTempView("it_files_people")
    batch = task.run(lambda: task.spark.sql(
        "SELECT city, count(*) AS n FROM it_files_people GROUP BY city").write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["city"]},
                 schema=["city-STRING", "n-LONG"], cnt=3, ds_type="path")


def test_cached_dataframe_reports_its_source(task: Task, module_data: dict[str, Path],
                                             module_dir: Path) -> None:
    src = module_data["parquet"]
    out = _out(module_dir, "from_cache")
    cached = task.spark.read.parquet(str(src)).cache()

    def action() -> None:
        assert cached.count() == len(PEOPLE)  # materialise the cache (read-only: no tf)
        cached.select("id", "age").write.parquet(out)

    try:
        batch = task.run(action)
    finally:
        cached.unpersist()
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["id", "age"]},
                 schema=["id-INTEGER", "age-INTEGER"], cnt=len(PEOPLE), ds_type="path")


def test_two_paths_join(task: Task, module_data: dict[str, Path], module_dir: Path) -> None:
    left, right = module_data["parquet"], module_data["orc"]
    out = _out(module_dir, "self_join")

    def action() -> None:
        a = task.spark.read.parquet(str(left)).select("id", "name")
        b = task.spark.read.orc(str(right)).select("id", "city")
        a.join(b, "id").write.parquet(out)

    batch = task.run(action)
    expect_write(batch, output=file_name(out),
                 inputs={file_name(left): ["id", "name"], file_name(right): ["id", "city"]},
                 schema=["id-INTEGER", "name-STRING", "city-STRING"], cnt=len(PEOPLE),
                 ds_type="path")


def test_create_dataframe_is_not_a_dataset(task: Task, module_dir: Path) -> None:
    out = _out(module_dir, "mem")
    batch = task.run(lambda: people_df(task.spark).write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={},
                 schema=["id-INTEGER", "name-STRING", "age-INTEGER", "city-STRING"],
                 cnt=len(PEOPLE), ds_type="path")


def test_range_is_not_a_dataset(task: Task, module_dir: Path) -> None:
    out = _out(module_dir, "range")
    batch = task.run(lambda: task.spark.range(7).write.parquet(out))
    expect_write(batch, output=file_name(out), inputs={}, schema=["id-LONG"], cnt=7,
                 ds_type="path")


def test_in_memory_joined_with_a_path(task: Task, module_data: dict[str, Path],
                                      module_dir: Path) -> None:
    src = module_data["parquet"]
    out = _out(module_dir, "mem_join")

    def action() -> None:
        labels = task.spark.createDataFrame([(1, "gold"), (3, "silver")], "id INT, tier STRING")
        task.spark.read.parquet(str(src)).join(labels, "id").select("name", "tier") \
            .write.parquet(out)

    batch = task.run(action)
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["id", "name"]},
                 schema=["name-STRING", "tier-STRING"], cnt=2, ds_type="path")
