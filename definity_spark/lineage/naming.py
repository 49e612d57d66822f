"""Dataset names: one canonical name per table, path or JDBC table (pure, no py4j).

Cross-application lineage only works when the same dataset gets the same name whether it
is read or written, from SQL or the DataFrame API, in any application. Every rule here is
documented in docs/naming.md; keep the two in step.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence

from definity_spark.lineage.facts import LeafFacts
from definity_spark.lineage.plan import simple_name
from definity_spark.redaction import userinfo_at

logger = logging.getLogger("definity_spark.lineage")

# the session catalog's names: Spark's, and Databricks' for the workspace Hive metastore
# under Unity Catalog (``hive_metastore.db.t`` is ``spark_catalog.db.t`` there)
SESSION_CATALOGS = frozenset({"spark_catalog", "hive_metastore"})

# Hive-style partition directory segment: key=value (the key a plain identifier)
_PARTITION_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=[^/=]*$")
_S3_SCHEMES = re.compile(r"^s3[an]://", re.IGNORECASE)
# Oracle thin: oracle:thin:user/password@host:1521/svc
_PORT = re.compile(r"\d{1,5}(?:/|$)")
_ORACLE_THIN = re.compile(r"^oracle:[a-z0-9]+:", re.IGNORECASE)
# ``format.`path``` identifiers (SQL on files, Delta tables by path): the session
# catalog's namespace is the format, the table name is the path
PATH_TABLE_FORMATS = frozenset({
    "delta", "parquet", "orc", "json", "csv", "text", "avro", "binaryfile"})
_DELTA_LOG = "/_delta_log"
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:/")


def table_name(catalog: str | None, namespace: Sequence[str], table: str) -> str:
    """``database.table`` for the session catalog, ``catalog.namespace.table`` otherwise.

    The session catalog (``spark_catalog``, or no catalog at all as in a v1
    ``TableIdentifier``) is dropped, and its names are lower-cased because Spark's session
    catalog is case-insensitive and stores them lower-cased; other catalogs keep the case
    they report.
    """
    parts = [p for p in namespace if p]
    if not catalog or catalog.lower() in SESSION_CATALOGS:
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
    if catalog and catalog.lower() not in SESSION_CATALOGS:
        return None
    parts = [p for p in namespace if p]
    if len(parts) != 1 or parts[0].lower() not in PATH_TABLE_FORMATS:
        return None
    if table.startswith("/") or _URI_SCHEME.match(table):
        return table
    return None


def path_name(uri: str, normalize_s3: bool = True, trim_partition_dirs: bool = True) -> str:
    """A file-system location as Spark qualifies it, without trailing slash.

    ``file:///x`` -> ``file:/x`` (Hadoop's ``Path`` prints local files that way), a
    ``user:password@`` authority removed, ``s3a://``
    and ``s3n://`` -> ``s3://`` (``normalize_s3``), trailing Hive-style partition directories
    (``/t/date=2025-01-01/h=3``) trimmed to the table root (``trim_partition_dirs``).
    """
    name = _without_password(uri.strip())
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


def _without_password(uri: str) -> str:
    """``s3a://KEY:SECRET@bucket/x`` -> ``s3a://bucket/x``: credentials in a file-system URI
    never reach a name. An authority without a password is kept (Azure's
    ``abfss://container@account...`` names the container, it is not a credential)."""
    slashes = uri.find("//")
    if slashes < 0:
        return uri
    begin = slashes + 2
    at = userinfo_at(uri, begin)
    colon = uri.find(":", begin, at) if at >= 0 else -1
    if colon < 0 or "/" in uri[begin:colon] or _PORT.match(uri, colon + 1):
        return uri  # no password; or host:port and a path holding an "@"
    return uri[:begin] + uri[at + 1:]


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
    never reaches a name: the user-info is removed *before* the URL is cut at ``?``/``;``,
    so a password holding ``?``, ``;``, ``/``, ``@`` or a blank goes whole
    (``redaction.userinfo_at`` finds its end).
    """
    base = url.strip()
    if base.lower().startswith("jdbc:"):
        base = base[5:]
    oracle = _ORACLE_THIN.match(base)
    if oracle:
        at = userinfo_at(base, oracle.end(), oracle=True)
        if at >= 0:
            base = base[:oracle.end()] + base[at:]
    else:
        slashes = base.find("//")
        if slashes >= 0:
            at = userinfo_at(base, slashes + 2)
            if at >= 0:
                base = base[:slashes + 2] + base[at + 1:]
    for sep in ("?", ";"):
        cut = base.find(sep)
        if cut >= 0:
            base = base[:cut]
    base = base.rstrip("/")
    return f"{base}/{table.strip()}"


def kafka_name(servers: str, topic: str) -> str:
    """``kafka://<bootstrap servers>/<topic>``: the servers as the client was given them
    (``kafka.bootstrap.servers``), lower-cased, without user-info, sorted and
    comma-separated, so the same cluster and topic have one name in batch and stream,
    whatever the order the servers were listed in."""
    hosts = []
    for server in servers.split(","):
        host = server.strip().lower()
        if "@" in host:  # never credentials in a name
            host = host.rsplit("@", 1)[1]
        if host and host not in hosts:
            hosts.append(host)
    return f"kafka://{','.join(sorted(hosts))}/{topic.strip()}"


def kafka_topics(subscribe: str | None, assign: str | None) -> list[str]:
    """The topics of Kafka's ``subscribe`` (comma-separated) or ``assign`` (JSON:
    ``{"topic": [partitions]}``) option."""
    topics: list[str] = []
    if subscribe:
        topics = [t.strip() for t in subscribe.split(",") if t.strip()]
    elif assign:
        try:
            topics = [str(t) for t in json.loads(assign)]
        except (ValueError, TypeError):
            logger.debug("Kafka assign option not understood")
    return topics


# leaves of a plan that are not datasets (data made in the query, references, targets)
_NOT_DATASETS = frozenset({
    "LocalRelation", "Range", "OneRowRelation", "CTERelationRef", "LogicalRDD",
    "ExternalRDD", "InMemoryRelation", "ResolvedIdentifier", "UnresolvedRelation",
    "ResolvedTable", "ResolvedNamespace",
})


def leaf_names(leaf: LeafFacts, normalize_s3: bool = True,
               trim_partition_dirs: bool = True) -> list[str]:
    """The datasets a plan leaf reads (several for a multi-path relation), by the rules
    above: its catalog table, else its JDBC table, else its paths; none for a leaf that
    is not a dataset."""
    kind = simple_name(leaf.cls)
    if kind in _NOT_DATASETS:
        return []
    if leaf.table is not None:
        catalog, namespace, table = leaf.table
        return [table_name(catalog, namespace, table)]
    if leaf.jdbc_url and leaf.jdbc_table:
        return [jdbc_name(leaf.jdbc_url, leaf.jdbc_table)]
    if leaf.kafka_servers:  # a subscribePattern alone names no topic: not a dataset
        return [kafka_name(leaf.kafka_servers, t) for t in leaf.kafka_topics]
    if leaf.paths:
        names: list[str] = []
        for p in leaf.paths:
            if _DELTA_LOG in p:  # Delta reading its own transaction log: not a dataset
                continue
            n = path_name(p, normalize_s3, trim_partition_dirs)
            if n not in names:
                names.append(n)
        return names
    logger.debug("leaf %s (%s) is not a known dataset", kind, leaf.relation_cls)
    return []
