"""The collector's database file: where it lives, its schema, its mode.

The file (and a directory made for it) is private to the user (0600 / 0700), like the
spool. ``store.Store`` reads and writes it.
"""

from __future__ import annotations

import os
import stat
import sys

SCHEMA_VERSION = 3  # 2: tfs.column_lineage, payloads.idem_key; 3: metrics.tf_id

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payloads (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at  TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    task_id      TEXT,
    source       TEXT NOT NULL,
    content_type TEXT,
    raw          BLOB NOT NULL,
    idem_key     TEXT
);
CREATE INDEX IF NOT EXISTS payloads_task ON payloads (task_id, seq);
CREATE TABLE IF NOT EXISTS tasks (
    task_id     TEXT PRIMARY KEY,
    app_name    TEXT,
    task_name   TEXT,
    task_type   TEXT,
    env         TEXT,
    app_pit     TEXT,
    tags        TEXT,
    status      TEXT,
    started_at  TEXT,
    ended_at    TEXT,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tfs (
    task_id     TEXT NOT NULL,
    tf_id       INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    status      TEXT,
    query_str   TEXT,
    inputs      TEXT NOT NULL,
    output_name TEXT NOT NULL,
    column_lineage TEXT,
    PRIMARY KEY (task_id, tf_id)
);
CREATE TABLE IF NOT EXISTS datasets (
    seq         INTEGER PRIMARY KEY,
    task_id     TEXT NOT NULL,
    tf_id       INTEGER,
    ds_name     TEXT NOT NULL,
    ds_type     TEXT,
    received_at TEXT NOT NULL,
    metadata    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS datasets_task ON datasets (task_id, seq);
CREATE TABLE IF NOT EXISTS metrics (
    seq         INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    task_id     TEXT NOT NULL,
    asset_name  TEXT NOT NULL,
    asset_type  TEXT,
    metric_type TEXT NOT NULL,
    value       REAL,
    value_json  TEXT NOT NULL,
    received_at TEXT NOT NULL,
    tf_id       INTEGER,
    PRIMARY KEY (seq, idx)
);
CREATE INDEX IF NOT EXISTS metrics_task ON metrics (task_id, seq);
"""


def default_db_path() -> str:
    """Where the collector keeps its database unless told otherwise.

    ``DEFINITY_COLLECTOR_DB`` wins; else the user's data dir (XDG on Linux,
    ``~/Library/Application Support`` on macOS, ``%LOCALAPPDATA%`` on Windows).
    """
    explicit = os.environ.get("DEFINITY_COLLECTOR_DB")
    if explicit:
        return explicit
    home = os.path.expanduser("~")
    if sys.platform == "darwin":
        base = os.path.join(home, "Library", "Application Support")
    elif os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
    else:
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share")
    return os.path.join(base, "definity-spark", "collector.db")


def _create_private(path: str) -> None:
    """The database file (and a new directory for it) private to the user, like the spool:
    it holds table names, queries and schemas. SQLite gives its -wal/-shm files the mode of
    the database file."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    os.close(fd)
    _make_private(path)


def _make_private(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if stat.S_IMODE(st.st_mode) & 0o077 and (not hasattr(os, "getuid")
                                             or st.st_uid == os.getuid()):
        try:
            os.chmod(path, 0o600)  # an older file, made before the collector did this
        except OSError:
            pass


__all__ = ["default_db_path", "SCHEMA_VERSION"]
