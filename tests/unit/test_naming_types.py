"""Naming and type rules (pure)."""

from __future__ import annotations

import pytest

from definity_spark.lineage import naming, types


@pytest.mark.parametrize("catalog,ns,table,expected", [
    ("spark_catalog", ("shared_db",), "table_b", "shared_db.table_b"),
    (None, ("Shared_DB",), "Table_B", "shared_db.table_b"),
    ("iceberg", ("db", "sub"), "T", "iceberg.db.sub.T"),
    # Databricks Unity Catalog: a UC catalog is any other catalog; the workspace Hive
    # metastore (hive_metastore) is the session catalog under another name
    ("main", ("sales",), "orders", "main.sales.orders"),
    ("hive_metastore", ("DB",), "T", "db.t"),
    ("HIVE_METASTORE", ("db",), "t", "db.t"),
])
def test_table_name(catalog, ns, table, expected):
    assert naming.table_name(catalog, ns, table) == expected


@pytest.mark.parametrize("catalog,ns,table,expected", [
    ("spark_catalog", ("delta",), "/data/Events", "/data/Events"),  # case kept
    (None, ("parquet",), "s3a://bucket/t", "s3a://bucket/t"),
    ("spark_catalog", ("delta",), "file:/tmp/t", "file:/tmp/t"),
    ("spark_catalog", ("delta",), "events", None),  # a database named delta
    ("spark_catalog", ("sales",), "/data/t", None),  # not a format
    ("lake", ("delta",), "/data/t", None),  # another catalog's namespace
    ("spark_catalog", ("db", "delta"), "/data/t", None),
    ("hive_metastore", ("delta",), "/data/t", "/data/t"),
])
def test_path_table(catalog, ns, table, expected):
    assert naming.path_table(catalog, ns, table) == expected


@pytest.mark.parametrize("uri,expected", [
    ("file:/data/x/", "file:/data/x"),
    ("file:///data/x", "file:/data/x"),
    ("hdfs://nn:8020/x/", "hdfs://nn:8020/x"),
    ("s3a://bucket/x", "s3://bucket/x"),
    ("s3n://bucket/x", "s3://bucket/x"),
    ("s3://bucket/t/date=2025-01-01", "s3://bucket/t"),
    ("file:/t/date=2025-01-01/h=3/", "file:/t"),
    ("file:/t/notpartition", "file:/t/notpartition"),
])
def test_path_name(uri, expected):
    assert naming.path_name(uri) == expected


def test_path_settings_off():
    assert naming.path_name("s3a://b/t/d=1", normalize_s3=False,
                            trim_partition_dirs=False) == "s3a://b/t/d=1"


@pytest.mark.parametrize("url,table,expected", [
    ("jdbc:postgresql://db1:5432/shop", "public.orders", "postgresql://db1:5432/shop/public.orders"),
    ("jdbc:postgresql://bob:pw@db1:5432/shop?user=bob&password=pw", "public.orders",
     "postgresql://db1:5432/shop/public.orders"),
    ("jdbc:sqlite:/data/crm.db", "customers", "sqlite:/data/crm.db/customers"),
    ("jdbc:sqlserver://h:1433;databaseName=x;password=pw", "dbo.t", "sqlserver://h:1433/dbo.t"),
    ("jdbc:oracle:thin:scott/tiger@h:1521/svc", "t", "oracle:thin:@h:1521/svc/t"),
])
def test_jdbc_name_never_leaks_credentials(url, table, expected):
    name = naming.jdbc_name(url, table)
    assert name == expected
    assert "pw" not in name and "tiger" not in name and "password" not in name


@pytest.mark.parametrize("json_type,expected", [
    ("integer", "INTEGER"), ("long", "LONG"), ("string", "STRING"),
    ("decimal(10,2)", "DECIMAL(10,2)"),
    ({"type": "array", "elementType": "string", "containsNull": True}, "ARRAY<STRING>"),
    ({"type": "map", "keyType": "string", "valueType": "long"}, "MAP<STRING,BIGINT>"),
    ({"type": "struct", "fields": [{"name": "a", "type": "integer"},
                                   {"name": "b", "type": "string"}]}, "STRUCT<A:INT,B:STRING>"),
])
def test_type_name(json_type, expected):
    assert types.type_name(json_type) == expected
