"""SQLite persistence of the local collector.

Two layers in one database file:

* ``payloads``: every accepted payload exactly as it arrived (the request body bytes),
  with its endpoint, arrival time, arrival order (``seq``) and idempotency key. This is
  the record other rooms' tests compare byte-for-byte, and the source of truth. A payload
  whose key is already there is a duplicate (a retry of a request stored before its answer
  got lost, a second replay): ``add_once`` keeps the first and stores nothing.
* ``tasks`` / ``tfs`` / ``datasets`` / ``metrics``: the structure the read API needs,
  written in the same transaction as the raw payload.

One connection shared by every request thread behind a lock: the collector is a local
tool with modest load, and a single writer keeps arrival order == ``seq`` order. The
file survives restarts; ``:memory:`` works for throwaway stores.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from definity_spark import wire
from definity_spark.collector.db import _SCHEMA, SCHEMA_VERSION, _create_private, _make_private
from definity_spark.collector.validate import schema_fields

logger = logging.getLogger("definity_spark.collector")


def utc_now() -> str:
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


class Store:
    """The collector's database: ``add()`` accepted payloads, read them back for the API."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            _create_private(path)
        self._lock = threading.RLock()
        # check_same_thread=False: request threads share this connection under self._lock.
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30.0,
                                     isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            if path != ":memory:":
                # WAL: readers (e.g. a second process inspecting the file) never block writes.
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            # a database of schema 1 gets the columns of schema 2
            columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(tfs)")}
            if "column_lineage" not in columns:
                self._conn.execute("ALTER TABLE tfs ADD COLUMN column_lineage TEXT")
            columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(payloads)")}
            if "idem_key" not in columns:
                self._conn.execute("ALTER TABLE payloads ADD COLUMN idem_key TEXT")
            # and those of schema 3 (older rows: no tf_id)
            columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(metrics)")}
            if "tf_id" not in columns:
                self._conn.execute("ALTER TABLE metrics ADD COLUMN tf_id INTEGER")
            self._conn.execute("CREATE INDEX IF NOT EXISTS metrics_asset "
                               "ON metrics (asset_name, metric_type, seq)")
            self._conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS payloads_key "
                               "ON payloads (idem_key)")
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        if path != ":memory:":
            for side in ("-wal", "-shm", "-journal"):
                _make_private(path + side)

    # -- writing -----------------------------------------------------------------------

    def add(self, endpoint: str, raw: bytes, body: Mapping[str, Any], source: str = "http",
            content_type: str | None = None, key: str | None = None) -> int:
        """Store one validated payload (raw bytes + structure) atomically; return its seq
        (the first copy's, for a duplicate of ``key``)."""
        return self.add_once(endpoint, raw, body, source, content_type, key)[0]

    def add_once(self, endpoint: str, raw: bytes, body: Mapping[str, Any],
                 source: str = "http", content_type: str | None = None,
                 key: str | None = None) -> tuple[int, bool]:
        """``(seq, duplicate)``: a payload whose idempotency ``key`` is already stored is
        not stored again (``duplicate`` True, the first copy's seq); any other is."""
        received_at = utc_now()
        task_id = body.get("task_id")
        task_id = task_id if isinstance(task_id, str) else None
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if key is not None:
                    known = conn.execute("SELECT seq FROM payloads WHERE idem_key = ?",
                                         (key,)).fetchone()
                    if known is not None:
                        conn.execute("COMMIT")
                        return int(known[0]), True
                cur = conn.execute(
                    "INSERT INTO payloads (received_at, endpoint, task_id, source, content_type,"
                    " raw, idem_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (received_at, endpoint, task_id, source, content_type, bytes(raw), key))
                seq = int(cur.lastrowid)
                if task_id is not None:
                    self._index(conn, seq, received_at, endpoint, task_id, body)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return seq, False

    def _index(self, conn: sqlite3.Connection, seq: int, received_at: str, endpoint: str,
               task_id: str, body: Mapping[str, Any]) -> None:
        # Every payload makes its task known, even one whose start was never received.
        conn.execute(
            "INSERT INTO tasks (task_id, first_seq, last_seq) VALUES (?, ?, ?) "
            "ON CONFLICT (task_id) DO UPDATE SET last_seq = excluded.last_seq",
            (task_id, seq, seq))
        if endpoint == wire.TASK:
            if body.get("status") == "start":
                tags = body.get("tags")
                conn.execute(
                    "UPDATE tasks SET app_name = ?, task_name = ?, task_type = ?, env = ?,"
                    " app_pit = ?, tags = ?, started_at = ?,"
                    " status = CASE WHEN ended_at IS NULL THEN 'start' ELSE status END"
                    " WHERE task_id = ?",
                    (body.get("app_name"), body.get("task_name"), body.get("task_type"),
                     body.get("env"), body.get("app_pit"),
                     _dumps(tags) if isinstance(tags, dict) else None, received_at, task_id))
            else:
                conn.execute("UPDATE tasks SET status = 'end', ended_at = ? WHERE task_id = ?",
                             (received_at, task_id))
        elif endpoint == wire.TF:
            # A resent tf (same task_id + tf_id, e.g. a retry) replaces the structured row;
            # the raw log keeps both copies.
            column_lineage = body.get("column_lineage")
            conn.execute(
                "INSERT OR REPLACE INTO tfs (task_id, tf_id, seq, received_at, status, query_str,"
                " inputs, output_name, column_lineage) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (task_id, int(body["tf_id"]), seq, received_at, body.get("status"),
                 body.get("query_str"), _dumps(body.get("input_datasets") or {}),
                 body["output"]["name"],
                 None if column_lineage is None else _dumps(column_lineage)))
        elif endpoint == wire.DATASET:
            tf_id = body.get("tf_id")
            conn.execute(
                "INSERT INTO datasets (seq, task_id, tf_id, ds_name, ds_type, received_at,"
                " metadata) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, task_id, tf_id, body["ds_name"], body.get("ds_type"), received_at,
                 _dumps(body.get("metadata") or [])))
        elif endpoint == wire.METRICS:
            tf_id = body.get("tf_id")
            for idx, metric in enumerate(body.get("metrics") or []):
                conn.execute(
                    "INSERT INTO metrics (seq, idx, task_id, asset_name, asset_type, metric_type,"
                    " value, value_json, received_at, tf_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, idx, task_id, metric["asset_name"], metric.get("asset_type"),
                     metric["metric_type"], float(metric["value"]), json.dumps(metric["value"]),
                     received_at, tf_id))

    def clear(self) -> None:
        """Forget everything (tests that reuse one collector)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            for table in ("payloads", "tasks", "tfs", "datasets", "metrics"):
                self._conn.execute(f"DELETE FROM {table}")
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- reading -----------------------------------------------------------------------

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, tuple(params)))

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM payloads")[0][0])

    def payloads(self, task_id: str | None = None, endpoint: str | None = None,
                 since: int = 0) -> list[dict[str, Any]]:
        """Accepted payloads in arrival order: seq, received_at, endpoint, source, body, raw."""
        sql = "SELECT * FROM payloads WHERE seq > ?"
        params: list[Any] = [since]
        if task_id is not None:
            sql += " AND task_id = ?"
            params.append(task_id)
        if endpoint is not None:
            sql += " AND endpoint = ?"
            params.append(endpoint)
        return [self._payload(row) for row in self._query(sql + " ORDER BY seq", params)]

    @staticmethod
    def _payload(row: sqlite3.Row) -> dict[str, Any]:
        raw = bytes(row["raw"]).decode("utf-8", errors="replace")
        return {
            "seq": row["seq"],
            "received_at": row["received_at"],
            "endpoint": row["endpoint"],
            "task_id": row["task_id"],
            "source": row["source"],
            "content_type": row["content_type"],
            "idempotency_key": row["idem_key"],
            "body": json.loads(raw),
            "raw": raw,
        }

    def tasks(self, task_id: str | None = None) -> list[dict[str, Any]]:
        """Every task known (or the one with ``task_id``), oldest first, with counts."""
        where = "" if task_id is None else " WHERE t.task_id = ?"
        rows = self._query(
            "SELECT t.*,"
            " (SELECT COUNT(*) FROM tfs WHERE tfs.task_id = t.task_id) AS n_tfs,"
            " (SELECT COUNT(*) FROM datasets d WHERE d.task_id = t.task_id) AS n_datasets,"
            " (SELECT COUNT(*) FROM metrics m WHERE m.task_id = t.task_id) AS n_metrics,"
            " (SELECT COUNT(*) FROM payloads p WHERE p.task_id = t.task_id) AS n_payloads"
            " FROM tasks t" + where + " ORDER BY t.first_seq",
            () if task_id is None else (task_id,))
        return [self._task(row) for row in rows]

    @staticmethod
    def _task(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "task_id": row["task_id"],
            "app_name": row["app_name"],
            "task_name": row["task_name"],
            "task_type": row["task_type"],
            "env": row["env"],
            "app_pit": row["app_pit"],
            "tags": _loads(row["tags"]) or {},
            # None: payloads arrived for a task whose start was never received.
            "status": row["status"],
            "started_at": row["started_at"],
            "ended_at": row["ended_at"],
            "counts": {
                "tfs": row["n_tfs"],
                "datasets": row["n_datasets"],
                "metrics": row["n_metrics"],
                "payloads": row["n_payloads"],
            },
        }

    def task(self, task_id: str) -> dict[str, Any] | None:
        """One task with its transformations, dataset schemas, metrics and raw payloads."""
        rows = self.tasks(task_id)
        if not rows:
            return None
        task = rows[0]
        task["transformations"] = [
            self._tf(row) for row in self._query(
                "SELECT * FROM tfs WHERE task_id = ? ORDER BY tf_id", (task_id,))]
        task["datasets"] = [
            self._dataset(row) for row in self._query(
                "SELECT * FROM datasets WHERE task_id = ? ORDER BY seq", (task_id,))]
        task["metrics"] = [
            {"asset_name": row["asset_name"], "asset_type": row["asset_type"],
             "metric_type": row["metric_type"], "value": json.loads(row["value_json"]),
             "tf_id": row["tf_id"], "received_at": row["received_at"], "seq": row["seq"]}
            for row in self._query(
                "SELECT * FROM metrics WHERE task_id = ? ORDER BY seq, idx", (task_id,))]
        task["raw"] = self.payloads(task_id=task_id)
        return task

    @staticmethod
    def _tf(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "tf_id": row["tf_id"],
            "status": row["status"],
            "query_str": row["query_str"],
            "input_datasets": json.loads(row["inputs"]),
            "output": {"name": row["output_name"]},
            "column_lineage": _loads(row["column_lineage"]),
            "received_at": row["received_at"],
            "seq": row["seq"],
        }

    @staticmethod
    def _dataset(row: sqlite3.Row) -> dict[str, Any]:
        metadata = json.loads(row["metadata"])
        return {
            "ds_name": row["ds_name"],
            "ds_type": row["ds_type"],
            "tf_id": row["tf_id"],
            "fields": schema_fields(metadata),
            "metadata": metadata,
            "received_at": row["received_at"],
            "seq": row["seq"],
        }

    def metric_history(self, asset_name: str, metric_type: str,
                       asset_type: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """One metric of one asset across tasks, oldest first (the latest ``limit``): e.g.
        the rows written to a dataset by each run (``cnt``). Each point names its task
        (app, task name, pit) and tf."""
        sql = ("SELECT m.task_id, m.tf_id, m.value_json, m.received_at, m.seq, m.asset_type,"
               " t.app_name, t.task_name, t.app_pit FROM metrics m"
               " LEFT JOIN tasks t ON t.task_id = m.task_id"
               " WHERE m.asset_name = ? AND m.metric_type = ?")
        params: list[Any] = [asset_name, metric_type]
        if asset_type is not None:
            sql += " AND m.asset_type = ?"
            params.append(asset_type)
        rows = self._query(sql + " ORDER BY m.seq DESC, m.idx DESC LIMIT ?",
                           params + [max(1, int(limit))])
        return [{"task_id": row["task_id"], "tf_id": row["tf_id"],
                 "value": json.loads(row["value_json"]), "asset_type": row["asset_type"],
                 "app_name": row["app_name"], "task_name": row["task_name"],
                 "app_pit": row["app_pit"], "received_at": row["received_at"],
                 "seq": row["seq"]} for row in reversed(rows)]

    def lineage(self) -> dict[str, list[dict[str, Any]]]:
        """The dataset graph across all tasks, linked by dataset name.

        Nodes: one per dataset name (``dataset:<name>``) and one per task
        (``task:<task_id>``). Edges: dataset -> task for each input of each of the task's
        tfs, task -> dataset for each tf output; one edge per pair, listing the tf ids.
        """
        nodes: dict[str, dict[str, Any]] = {}
        edges: dict[tuple, dict[str, Any]] = {}

        def dataset_node(name: str) -> str:
            node_id = "dataset:" + name
            if node_id not in nodes:
                nodes[node_id] = {"id": node_id, "kind": "dataset", "label": name,
                                  "name": name, "ds_type": None, "fields": []}
            return node_id

        def edge(source: str, target: str, tf_id: int,
                 columns: list[str] | None = None) -> None:
            item = edges.setdefault((source, target), {"source": source, "target": target,
                                                       "tf_ids": []})
            if tf_id not in item["tf_ids"]:
                item["tf_ids"].append(tf_id)
            if columns is not None:
                known = item.setdefault("columns", [])
                known.extend(c for c in columns if c not in known)

        for task in self.tasks():
            node_id = "task:" + task["task_id"]
            nodes[node_id] = {
                "id": node_id, "kind": "task",
                "label": task["task_name"] or task["task_id"],
                "task_id": task["task_id"], "app_name": task["app_name"],
                "task_name": task["task_name"], "env": task["env"],
                "app_pit": task["app_pit"], "status": task["status"],
            }
        for row in self._query("SELECT * FROM tfs ORDER BY seq"):
            task_node = "task:" + row["task_id"]
            for name, spec in json.loads(row["inputs"]).items():
                columns = spec.get("columns") if isinstance(spec, dict) else None
                edge(dataset_node(name), task_node, row["tf_id"], columns)
            edge(task_node, dataset_node(row["output_name"]), row["tf_id"])
        # Schemas: the latest one received for each name (also makes schema-only datasets
        # visible as nodes).
        for row in self._query("SELECT * FROM datasets ORDER BY seq"):
            node = nodes[dataset_node(row["ds_name"])]
            node["fields"] = schema_fields(json.loads(row["metadata"]))
            if row["ds_type"]:
                node["ds_type"] = row["ds_type"]
        return {"nodes": list(nodes.values()), "edges": list(edges.values())}


    def column_upstream(self, dataset: str, column: str,
                        max_columns: int = 500) -> dict[str, Any]:
        """Where one column comes from, across transformations and tasks.

        Walks up from ``(dataset, column)``: every tf (of any task) that wrote ``dataset``
        with column lineage for ``column`` gives edges to the input columns it derives
        from (``direct`` / ``indirect``), which are walked up the same way, so a dataset
        written by one application and read by another joins up by its name. The
        transformation-wide dependencies of each tf met (``indirect_all``) are listed
        per column (``decided_by``) without being walked. Answer: ``nodes`` (one per
        dataset column, ``id`` = ``dataset|column``, ``depth`` = hops from the start),
        ``edges`` (``source`` upstream -> ``target``, ``kind``, the ``tfs`` giving it),
        ``truncated`` when more than ``max_columns`` columns were met.
        """
        writers: dict[str, list[dict[str, Any]]] = {}
        for row in self._query(
                "SELECT tfs.task_id, tfs.tf_id, tfs.output_name, tfs.column_lineage,"
                " tasks.app_name, tasks.task_name FROM tfs LEFT JOIN tasks"
                " ON tasks.task_id = tfs.task_id"
                " WHERE tfs.column_lineage IS NOT NULL ORDER BY tfs.seq"):
            lineage = _loads(row["column_lineage"])
            if isinstance(lineage, dict):
                writers.setdefault(row["output_name"], []).append({
                    "task_id": row["task_id"], "tf_id": row["tf_id"],
                    "app_name": row["app_name"], "task_name": row["task_name"],
                    "lineage": lineage})

        def node_id(ds: str, col: str) -> str:
            return f"{ds}|{col}"

        start = node_id(dataset, column)
        nodes: dict[str, dict[str, Any]] = {
            start: {"id": start, "dataset": dataset, "column": column, "depth": 0,
                    "decided_by": []}}
        edges: dict[tuple[str, str, str], dict[str, Any]] = {}
        queue = [(dataset, column)]
        truncated = False
        while queue:
            ds, col = queue.pop(0)
            target = node_id(ds, col)
            for tf in writers.get(ds, ()):
                ref = {k: tf[k] for k in ("task_id", "tf_id", "app_name", "task_name")}
                entry = next((c for c in tf["lineage"].get("columns") or ()
                              if isinstance(c, dict) and c.get("name") == col), None)
                if entry is None:
                    continue
                for src_ds, src_cols in (tf["lineage"].get("indirect_all") or {}).items():
                    for src_col in src_cols:
                        nodes[target]["decided_by"].append(
                            {"dataset": src_ds, "column": src_col, **ref})
                for kind in ("direct", "indirect"):
                    for src_ds, src_cols in (entry.get(kind) or {}).items():
                        for src_col in src_cols:
                            source = node_id(src_ds, src_col)
                            if source not in nodes:
                                if len(nodes) >= max_columns:
                                    truncated = True
                                    continue
                                nodes[source] = {
                                    "id": source, "dataset": src_ds, "column": src_col,
                                    "depth": nodes[target]["depth"] + 1, "decided_by": []}
                                queue.append((src_ds, src_col))
                            edge = edges.setdefault((source, target, kind), {
                                "source": source, "target": target, "kind": kind,
                                "tfs": []})
                            if ref not in edge["tfs"]:
                                edge["tfs"].append(ref)
        return {"dataset": dataset, "column": column, "nodes": list(nodes.values()),
                "edges": list(edges.values()), "truncated": truncated}


__all__ = ["Store", "utc_now"]
