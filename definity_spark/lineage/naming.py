"""Dataset names: one canonical name per table, path or JDBC table (pure, no py4j).

Cross-application lineage only works when the same dataset gets the same name whether it
is read or written, from SQL or the DataFrame API, in any application. Every rule here is
documented in docs/naming.md; keep the two in step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SESSION_CATALOG = "spark_catalog"

# Hive-style partition directory segment: key=value (the key a plain identifier)
_PARTITION_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=[^/=]*$")
_S3_SCHEMES = re.compile(r"^s3[an]://", re.IGNORECASE)
# jdbc:<sub>://user:password@host -> the user-info part of an authority
_USERINFO = re.compile(r"^([A-Za-z0-9+.\-:]*//)[^/@]*@")
# Oracle thin: oracle:thin:user/password@host:1521/svc
_ORACLE_THIN_USER = re.compile(r"^(oracle:thin:)[^@]*@", re.IGNORECASE)
# ``format.`path``` identifiers (SQL on files, Delta tables by path): the session
# catalog's namespace is the format, the table name is the path
PATH_TABLE_FORMATS = frozenset({
    "delta", "parquet", "orc", "json", "csv", "text", "avro", "binaryfile"})
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:/")


def table_name(catalog: str | None, namespace: Sequence[str], table: str) -> str:
    """``database.table`` for the session catalog, ``catalog.namespace.table`` otherwise.

    The session catalog (``spark_catalog``, or no catalog at all as in a v1
    ``TableIdentifier``) is dropped, and its names are lower-cased because Spark's session
    catalog is case-insensitive and stores them lower-cased; other catalogs keep the case
    they report.
    """
    parts = [p for p in namespace if p]
    if not catalog or catalog.lower() == SESSION_CATALOG:
        return ".".join([p.lower() for p in parts] + [table.lower()])
    return ".".join([catalog] + parts + [table])


def path_table(catalog: str | None, namespace: Sequence[str], table: str) -> str | None:
    """The path of a ``format.`path``` identifier, else None.

    ``INSERT INTO delta.`/data/t```, ``DeltaTable.forPath`` and ``SELECT ... FROM
    delta.`s3://b/t``` reach a path-based table through an identifier of the session
    catalog whose namespace is the format and whose name is the path, e.g. ``spark_catalog``,
    ``("delta",)``, ``/data/t``. That table is the path, not a ``database.table``: name it
    with ``path_name`` (after qualifying it, as Spark does for a path written by
    ``save()``), never with ``table_name``, which would lower-case it.
    """
    if catalog and catalog.lower() != SESSION_CATALOG:
        return None
    parts = [p for p in namespace if p]
    if len(parts) != 1 or parts[0].lower() not in PATH_TABLE_FORMATS:
        return None
    if table.startswith("/") or _URI_SCHEME.match(table):
        return table
    return None


def path_name(uri: str, normalize_s3: bool = True, trim_partition_dirs: bool = True) -> str:
    """A file-system location as Spark qualifies it, without trailing slash.

    ``file:///x`` -> ``file:/x`` (Hadoop's ``Path`` prints local files that way), ``s3a://``
    and ``s3n://`` -> ``s3://`` (``normalize_s3``), trailing Hive-style partition directories
    (``/t/date=2025-01-01/h=3``) trimmed to the table root (``trim_partition_dirs``).
    """
    name = uri.strip()
    if name.lower().startswith("file:///"):
        name = "file:/" + name[len("file:///"):]
    elif name.lower().startswith("file://") and not name.lower().startswith("file:///"):
        # file://localhost/x style: an authority on a local path is meaningless to Spark
        rest = name[len("file://"):]
        slash = rest.find("/")
        name = "file:" + (rest[slash:] if slash >= 0 else "/" + rest)
    if normalize_s3 and _S3_SCHEMES.match(name):
        name = "s3://" + name[len("s3a://"):]
    # keep "scheme:/" or "/" roots intact while stripping trailing slashes
    while name.endswith("/") and not name.endswith(":/") and not name.endswith("//") \
            and name != "/":
        name = name[:-1]
    if trim_partition_dirs:
        name = trim_partitions(name)
    return name


def trim_partitions(name: str) -> str:
    """Drop trailing ``key=value`` path segments (Hive-style partition directories)."""
    while True:
        cut = name.rfind("/")
        if cut <= 0:
            return name
        segment = name[cut + 1:]
        head = name[:cut]
        if not _PARTITION_SEGMENT.match(segment) or head.endswith(":") or head.endswith("/"):
            return name
        name = head


def jdbc_name(url: str, table: str) -> str:
    """``<url without jdbc:, user-info, ?query, ;parameters>/<table as given>``.

    ``jdbc:postgresql://u:pw@db1:5432/shop?ssl=true`` + ``public.orders`` ->
    ``postgresql://db1:5432/shop/public.orders``; ``jdbc:sqlite:/data/crm.db`` +
    ``customers`` -> ``sqlite:/data/crm.db/customers``. A user, password or URL parameter
    never reaches a name.
    """
    base = url.strip()
    if base.lower().startswith("jdbc:"):
        base = base[5:]
    for sep in ("?", ";"):
        cut = base.find(sep)
        if cut >= 0:
            base = base[:cut]
    base = _USERINFO.sub(r"\1", base)
    base = _ORACLE_THIN_USER.sub(r"\1@", base)
    base = base.rstrip("/")
    return f"{base}/{table.strip()}"
