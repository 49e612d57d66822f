"""Databricks specifics: task/pipeline names from the platform, and the access mode.

Pure functions over plain mappings (the application's Spark conf and the calling
thread's local properties), plus one thin reader that takes those mappings from a live
session. ``definity_spark.activate`` uses them; nothing here touches delivery or payloads.

Keys read (all optional; Databricks sets them on its clusters, they are absent elsewhere).
They are the keys Databricks documents or that are widely used in public code; this
repository was not tested against a live workspace, only against recorded values:

=================================================  =========================================
``spark.databricks.clusterUsageTags.clusterId``     presence of Databricks (with the env var
                                                    ``DATABRICKS_RUNTIME_VERSION``)
``spark.databricks.clusterUsageTags.clusterName``   tag ``databricks_cluster``; fallback name
``spark.databricks.job.id``                         job run: pipeline ``databricks-job-<id>``
``spark.databricks.job.name``                       job run: pipeline name when present
``spark.databricks.job.runId``                      tag ``databricks_run_id``
``spark.databricks.job.parentRunId``                tag ``databricks_parent_run_id``
``spark.databricks.job.taskKey``                    job run: task name when no notebook path
``spark.databricks.notebook.path``                  task name (notebook file name); pipeline
                                                    name of a notebook session (its path)
``spark.databricks.clusterUsageTags.dataSecurityMode``  access mode (``USER_ISOLATION`` =
   / ``...clusterDataSecurityMode``                 shared, ``LEGACY_TABLE_ACL``)
``spark.databricks.pyspark.enablePy4JSecurity``     py4j whitelisting on (shared/table ACL)
``spark.databricks.acl.dfAclsEnabled``              table ACLs on (high concurrency clusters)
=================================================  =========================================

Local properties (``sc.getLocalProperty``) are read for the job and notebook keys too,
because Databricks sets them per command thread; a local property wins over the conf.

Name rules (explicit settings ``spark.definity.pipeline.name`` / ``task.name`` always win):

* job run (``spark.databricks.job.id`` present): pipeline = job name, else
  ``databricks-job-<job id>``; task = notebook file name, else the job's task key, else
  ``run``; one Definity task per job run (a job cluster runs one application).
* notebook session on an all-purpose cluster: pipeline = the notebook path, task = the
  notebook file name; each notebook is its own SparkSession and reports its own task.
* neither: the cluster name (Databricks' ``spark.app.name`` is "Databricks Shell" for all).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("definity_spark.databricks")

CLUSTER_ID = "spark.databricks.clusterUsageTags.clusterId"
CLUSTER_NAME = "spark.databricks.clusterUsageTags.clusterName"
JOB_ID = "spark.databricks.job.id"
JOB_NAME = "spark.databricks.job.name"
RUN_ID = "spark.databricks.job.runId"
PARENT_RUN_ID = "spark.databricks.job.parentRunId"
TASK_KEY = "spark.databricks.job.taskKey"
NOTEBOOK_PATH = "spark.databricks.notebook.path"
DATA_SECURITY_MODE_KEYS = (
    "spark.databricks.clusterUsageTags.dataSecurityMode",
    "spark.databricks.clusterUsageTags.clusterDataSecurityMode",
)
PY4J_SECURITY = "spark.databricks.pyspark.enablePy4JSecurity"
DF_ACLS = "spark.databricks.acl.dfAclsEnabled"
RUNTIME_ENV = "DATABRICKS_RUNTIME_VERSION"

# Every key the reader fetches from a live session (conf and local properties).
KEYS = (CLUSTER_ID, CLUSTER_NAME, JOB_ID, JOB_NAME, RUN_ID, PARENT_RUN_ID, TASK_KEY,
        NOTEBOOK_PATH, PY4J_SECURITY, DF_ACLS) + DATA_SECURITY_MODE_KEYS
LOCAL_PROPERTY_KEYS = (JOB_ID, JOB_NAME, RUN_ID, PARENT_RUN_ID, TASK_KEY, NOTEBOOK_PATH)

# Access modes (the Clusters API's data_security_mode) in which py4j is whitelisted and a
# Python object cannot be registered as a JVM listener (py4j callbacks).
SHARED_MODES = ("USER_ISOLATION", "LEGACY_TABLE_ACL", "SHARED", "STANDARD")

_shared_mode_logged = False


def _get(props: Mapping[str, str], key: str) -> str | None:
    value = props.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _merged(conf: Mapping[str, str], local_properties: Mapping[str, str] | None) -> dict[str, str]:
    merged = {k: str(v) for k, v in conf.items() if v is not None}
    for key, value in (local_properties or {}).items():
        if value is not None and str(value).strip():
            merged[key] = str(value)
    return merged


def is_databricks(conf: Mapping[str, str], environ: Mapping[str, str] | None = None) -> bool:
    """True on a Databricks cluster (its runtime env var, or its cluster usage tags)."""
    env = os.environ if environ is None else environ
    return bool(env.get(RUNTIME_ENV)) or _get(conf, CLUSTER_ID) is not None


def access_mode(conf: Mapping[str, str]) -> str | None:
    """The cluster's data security mode (``SINGLE_USER``, ``USER_ISOLATION``, ...) if known."""
    for key in DATA_SECURITY_MODE_KEYS:
        value = _get(conf, key)
        if value:
            return value.upper()
    return None


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def is_shared_access_mode(conf: Mapping[str, str]) -> bool:
    """True where py4j callbacks are unavailable: shared access mode, table ACL clusters.

    Detected from the data security mode, or from py4j whitelisting / table ACLs being on
    (``spark.databricks.pyspark.enablePy4JSecurity``, ``spark.databricks.acl.dfAclsEnabled``).
    """
    mode = access_mode(conf)
    if mode is not None and mode in SHARED_MODES:
        return True
    return _true(_get(conf, PY4J_SECURITY)) or _true(_get(conf, DF_ACLS))


def explain_shared_mode_once(logger: logging.Logger | None = None) -> None:
    """The one clear log line for shared access mode (logged once per process)."""
    global _shared_mode_logged
    if _shared_mode_logged:
        return
    _shared_mode_logged = True
    (logger or log).warning(
        "definity-spark: this Databricks cluster runs in shared access mode (py4j "
        "callbacks are not available), so the plugin stays off; use a single-user "
        "(dedicated) cluster, see docs/databricks.md")


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] or path


def derive_names(conf: Mapping[str, str],
                 local_properties: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Platform-derived defaults: ``pipeline_name``, ``task_name`` and ``tags``.

    Empty when nothing Databricks-specific is present. The caller applies them below
    explicit settings (``spark.definity.pipeline.name`` etc. win).
    """
    props = _merged(conf, local_properties)
    job_id = _get(props, JOB_ID)
    notebook = _get(props, NOTEBOOK_PATH)
    cluster = _get(props, CLUSTER_NAME)
    out: dict[str, Any] = {}
    tags: dict[str, str] = {}
    if job_id is not None:
        out["pipeline_name"] = _get(props, JOB_NAME) or f"databricks-job-{job_id}"
        out["task_name"] = (_basename(notebook) if notebook else None) or _get(
            props, TASK_KEY) or "run"
        tags["databricks_job_id"] = job_id
        run_id = _get(props, RUN_ID)
        if run_id is not None:
            tags["databricks_run_id"] = run_id
        parent = _get(props, PARENT_RUN_ID)
        if parent is not None:
            tags["databricks_parent_run_id"] = parent
    elif notebook is not None:
        out["pipeline_name"] = notebook
        out["task_name"] = _basename(notebook)
    elif cluster is not None:
        out["pipeline_name"] = cluster
        out["task_name"] = cluster
    if notebook is not None:
        tags["databricks_notebook_path"] = notebook
    if cluster is not None:
        tags["databricks_cluster"] = cluster
    if tags:
        out["tags"] = tags
    return out


def task_scope(conf: Mapping[str, str],
               local_properties: Mapping[str, str] | None = None,
               environ: Mapping[str, str] | None = None) -> str:
    """``"session"`` or ``"application"``: what one Definity task covers here.

    On a Databricks all-purpose cluster every notebook attached to the cluster shares one
    SparkContext (one Spark application) but has its own SparkSession: one task per
    notebook session. A job run (``spark.databricks.job.id``) and everything outside
    Databricks: one task per application.
    """
    props = _merged(conf, local_properties)
    if is_databricks(props, environ) and _get(props, JOB_ID) is None:
        return "session"
    return "application"


def read_properties(session: Any) -> dict[str, str]:
    """Thin reader: the Databricks keys from a live session's conf and local properties.

    Returns one mapping (local properties override conf). Reads only the keys above, one
    py4j call each; missing keys are skipped. Never raises.
    """
    out: dict[str, str] = {}
    for key in KEYS:
        try:
            value = session.conf.get(key, None)
        except Exception:  # noqa: BLE001 - a whitelisted/absent conf must not fail activation
            value = None
        if value is not None:
            out[key] = str(value)
    try:
        sc = session.sparkContext
        for key in LOCAL_PROPERTY_KEYS:
            value = sc.getLocalProperty(key)
            if value:
                out[key] = str(value)
    except Exception:  # noqa: BLE001
        pass
    return out
