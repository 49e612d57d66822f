"""Issue 3, outputs written by path: ``df.write.<format>(path)`` in every format and save
mode, with ``partitionBy`` (partition columns last in the schema), and
``INSERT OVERWRITE [LOCAL] DIRECTORY`` (datasource and Hive serde).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from it_helpers import (
    PEOPLE,
    Task,
    expect_no_tf,
    expect_write,
    file_name,
    people_df,
)

pytestmark = pytest.mark.spark

N = len(PEOPLE)


@pytest.fixture(scope="module")
def module_data(spark: Any, module_dir: Path) -> dict[str, Path]:
    src = module_dir / "src" / "people"
    people_df(spark).coalesce(1).write.parquet(str(src))
    existing = module_dir / "out" / "existing"
    spark.range(2).write.parquet(str(existing))
    return {"src": src, "existing": existing}


def _out(module_dir: Path, name: str) -> str:
    return str(module_dir / "out" / name)


@pytest.mark.parametrize("fmt", ["parquet", "orc", "json", "csv"])
def test_write_each_format(task: Task, module_data: dict[str, Path], module_dir: Path,
                           fmt: str) -> None:
    src = module_data["src"]
    out = _out(module_dir, f"as_{fmt}")
    batch = task.run(lambda: getattr(
        task.spark.read.parquet(str(src)).select("id", "city").write, fmt)(out))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["id", "city"]},
                 schema=["id-INTEGER", "city-STRING"], cnt=N, ds_type="path")


def test_write_text(task: Task, module_data: dict[str, Path], module_dir: Path) -> None:
    src = module_data["src"]
    out = _out(module_dir, "as_text")
    batch = task.run(lambda: task.spark.read.parquet(str(src)).select("name").write.text(out))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["name"]},
                 schema=["name-STRING"], cnt=N, ds_type="path")


def test_format_save(task: Task, module_data: dict[str, Path], module_dir: Path) -> None:
    src = module_data["src"]
    out = _out(module_dir, "format_save")
    batch = task.run(lambda: task.spark.read.parquet(str(src)).select("age").write
                     .format("orc").mode("errorifexists").save(out))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["age"]},
                 schema=["age-INTEGER"], cnt=N, ds_type="path")


def test_mode_error_on_existing_path_is_no_tf(task: Task, module_data: dict[str, Path]) -> None:
    from pyspark.errors import AnalysisException

    existing = str(module_data["existing"])
    batch, exc = task.run_failing(lambda: task.spark.range(3).write.parquet(existing),
                                  AnalysisException)
    assert "already exists" in str(exc)
    expect_no_tf(batch)


def test_mode_append(task: Task, module_data: dict[str, Path], module_dir: Path) -> None:
    out = _out(module_dir, "append")
    task.spark.range(2).write.parquet(out)
    task.run(lambda: None)  # consume the setup write
    batch = task.run(lambda: task.spark.range(5).write.mode("append").parquet(out))
    expect_write(batch, output=file_name(out), inputs={}, schema=["id-LONG"], cnt=5,
                 ds_type="path")


def test_mode_overwrite(task: Task, module_data: dict[str, Path], module_dir: Path) -> None:
    src = module_data["src"]
    out = _out(module_dir, "overwrite")
    task.spark.range(2).write.parquet(out)
    task.run(lambda: None)  # consume the setup write
    batch = task.run(lambda: task.spark.read.parquet(str(src)).where("city = 'Paris'")
                     .write.mode("overwrite").parquet(out))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["id", "name", "age",
                                                                         "city"]},
                 schema=["id-INTEGER", "name-STRING", "age-INTEGER", "city-STRING"], cnt=2,
                 ds_type="path")


def test_mode_ignore_on_new_path_writes(task: Task, module_dir: Path) -> None:
    out = _out(module_dir, "ignore_new")
    batch = task.run(lambda: task.spark.range(4).write.mode("ignore").parquet(out))
    expect_write(batch, output=file_name(out), inputs={}, schema=["id-LONG"], cnt=4,
                 ds_type="path")


def test_mode_ignore_on_existing_path_writes_nothing(task: Task,
                                                     module_data: dict[str, Path]) -> None:
    # Spark runs the command but skips the insertion: nothing was written, so no tf.
    existing = str(module_data["existing"])
    batch = task.run(lambda: task.spark.range(9).write.mode("ignore").parquet(existing))
    expect_no_tf(batch)
    assert task.spark.read.parquet(existing).count() == 2  # really nothing written


def test_partition_by_puts_partition_columns_last(task: Task, module_data: dict[str, Path],
                                                  module_dir: Path) -> None:
    src = module_data["src"]
    out = _out(module_dir, "by_city_age")
    batch = task.run(lambda: task.spark.read.parquet(str(src))
                     .select("age", "city", "id", "name")
                     .write.partitionBy("city", "age").parquet(out))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["id", "name", "age",
                                                                         "city"]},
                 schema=["id-INTEGER", "name-STRING", "city-STRING", "age-INTEGER"], cnt=N,
                 ds_type="path")


def test_partition_by_append_keeps_table_root_name(task: Task, module_dir: Path) -> None:
    out = _out(module_dir, "by_city_append")

    def action() -> None:
        people_df(task.spark).write.partitionBy("city").parquet(out)
        people_df(task.spark).where("city = 'Oslo'").write.mode("append") \
            .partitionBy("city").parquet(out)

    batch = task.run(action)
    assert [t["output"]["name"] for t in batch.tfs] == [file_name(out)] * 2, batch.summary()
    assert [d["metadata"][-1]["info_value"] for d in batch.datasets] == ["city-STRING"] * 2


def test_insert_overwrite_directory_datasource(task: Task, module_data: dict[str, Path],
                                               module_dir: Path) -> None:
    src = module_data["src"]
    out = _out(module_dir, "dir_parquet")
    sql = (f"INSERT OVERWRITE DIRECTORY '{out}' USING parquet "
           f"SELECT id, name FROM parquet.`{src}` WHERE age > 30")
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["id", "name", "age"]},
                 schema=["id-INTEGER", "name-STRING"], cnt=2, ds_type="path", query_str=sql)


def test_insert_overwrite_local_directory_hive(task: Task, module_data: dict[str, Path],
                                               module_dir: Path) -> None:
    src = module_data["src"]
    out = _out(module_dir, "dir_hive")
    sql = (f"INSERT OVERWRITE LOCAL DIRECTORY '{out}' STORED AS TEXTFILE "
           f"SELECT name, city FROM parquet.`{src}`")
    batch = task.run(lambda: task.spark.sql(sql))
    expect_write(batch, output=file_name(out), inputs={file_name(src): ["name", "city"]},
                 schema=["name-STRING", "city-STRING"], cnt=N, ds_type="path", query_str=sql)
