"""Databricks name derivation and access-mode detection (pure rules over recorded conf).

The conf mappings below are shaped like what a Databricks driver holds (keys documented
in definity_spark/databricks.py); no Databricks workspace is reachable from CI.
"""

from __future__ import annotations

import logging

import pytest

from definity_spark import databricks

CLUSTER = {
    "spark.app.name": "Databricks Shell",
    "spark.databricks.clusterUsageTags.clusterId": "0926-101010-abcd1234",
    "spark.databricks.clusterUsageTags.clusterName": "etl-cluster",
}


def test_job_run_names_and_tags() -> None:
    conf = dict(CLUSTER, **{"spark.databricks.job.id": "123",
                            "spark.databricks.job.runId": "456"})
    local = {"spark.databricks.notebook.path": "/Repos/etl/daily/orders"}
    names = databricks.derive_names(conf, local)
    assert names["pipeline_name"] == "databricks-job-123"
    assert names["task_name"] == "orders"
    assert names["tags"] == {"databricks_job_id": "123", "databricks_run_id": "456",
                             "databricks_notebook_path": "/Repos/etl/daily/orders",
                             "databricks_cluster": "etl-cluster"}


def test_job_name_and_task_key_when_present() -> None:
    conf = dict(CLUSTER, **{"spark.databricks.job.id": "7", "spark.databricks.job.name":
                            "nightly", "spark.databricks.job.taskKey": "load_orders",
                            "spark.databricks.job.parentRunId": "99"})
    names = databricks.derive_names(conf)
    assert (names["pipeline_name"], names["task_name"]) == ("nightly", "load_orders")
    assert names["tags"]["databricks_parent_run_id"] == "99"


def test_local_property_wins_over_conf() -> None:
    conf = dict(CLUSTER, **{"spark.databricks.job.id": "1"})
    names = databricks.derive_names(conf, {"spark.databricks.job.id": "2",
                                           "spark.databricks.job.runId": ""})
    assert names["pipeline_name"] == "databricks-job-2"
    assert "databricks_run_id" not in names["tags"]  # empty local property is ignored


def test_notebook_session_on_all_purpose_cluster() -> None:
    names = databricks.derive_names(CLUSTER, {
        "spark.databricks.notebook.path": "/Users/ana@example.com/explore/"})
    assert names["pipeline_name"] == "/Users/ana@example.com/explore/"
    assert names["task_name"] == "explore"


def test_cluster_name_fallback_and_nothing_outside_databricks() -> None:
    names = databricks.derive_names(CLUSTER)
    assert (names["pipeline_name"], names["task_name"]) == ("etl-cluster", "etl-cluster")
    assert databricks.derive_names({"spark.app.name": "local-app"}) == {}


def test_is_databricks() -> None:
    assert databricks.is_databricks(CLUSTER, environ={})
    assert databricks.is_databricks({}, environ={"DATABRICKS_RUNTIME_VERSION": "15.4"})
    assert not databricks.is_databricks({"spark.app.name": "x"}, environ={})


@pytest.mark.parametrize("conf, shared", [
    ({"spark.databricks.clusterUsageTags.dataSecurityMode": "USER_ISOLATION"}, True),
    ({"spark.databricks.clusterUsageTags.clusterDataSecurityMode": "user_isolation"}, True),
    ({"spark.databricks.clusterUsageTags.dataSecurityMode": "LEGACY_TABLE_ACL"}, True),
    ({"spark.databricks.clusterUsageTags.dataSecurityMode": "SINGLE_USER"}, False),
    ({"spark.databricks.clusterUsageTags.dataSecurityMode": "NONE"}, False),
    ({"spark.databricks.pyspark.enablePy4JSecurity": "true"}, True),
    ({"spark.databricks.acl.dfAclsEnabled": "true"}, True),
    ({"spark.databricks.acl.dfAclsEnabled": "false"}, False),
    ({}, False),
])
def test_shared_access_mode(conf: dict, shared: bool) -> None:
    assert databricks.is_shared_access_mode(conf) is shared


def test_shared_mode_line_logged_once(caplog: pytest.LogCaptureFixture,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(databricks, "_shared_mode_logged", False)
    with caplog.at_level(logging.WARNING, logger="definity_spark"):
        databricks.explain_shared_mode_once()
        databricks.explain_shared_mode_once()
    lines = [r.getMessage() for r in caplog.records if "shared access mode" in r.getMessage()]
    assert len(lines) == 1 and "single-user" in lines[0]


def test_task_scope() -> None:
    notebook = {"spark.databricks.notebook.path": "/Users/ana/explore"}
    assert databricks.task_scope(CLUSTER, notebook, environ={}) == "session"
    job = dict(CLUSTER, **{"spark.databricks.job.id": "5"})
    assert databricks.task_scope(job, notebook, environ={}) == "application"
    assert databricks.task_scope({"spark.app.name": "x"}, environ={}) == "application"
