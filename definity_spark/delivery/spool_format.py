"""The spool's files as the writer (``spool.Spool``) and the replay both read them.

Which files in a directory are spool files, the records of one, its cursor, the server
it was meant for, and whether a directory may be replayed from at all. The layout is
described in ``spool``'s docstring.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from definity_spark.delivery.file import write_line
from definity_spark.wire import ENDPOINTS

log = logging.getLogger("definity_spark.delivery")

SUFFIX = ".jsonl"
CURSOR_SUFFIX = ".cursor"


def unsafe_dir(spool_dir: str) -> str | None:
    """Why ``spool_dir`` must not be replayed from, or None: a directory another user owns
    or may write to could hold records planted to send the token elsewhere or to inject
    reports."""
    try:
        st = os.stat(spool_dir)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"not readable ({type(exc).__name__})"
    if not stat.S_ISDIR(st.st_mode):
        return "not a directory"
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return f"owned by another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def destination_of(server_url: str | None) -> str | None:
    """The server a spool file is meant for, as recorded in its first line:
    ``scheme://host[:port]/path`` in lower case, never the URL's user-info."""
    if not server_url:
        return None
    try:
        parts = urlsplit(server_url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    netloc = host if port in (None, default) else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"


def file_destination(path: str) -> str | None:
    """The destination in a spool file's first line, or None (an older file, or none)."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(4096)
        record = json.loads(first.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    dest = record.get("dest") if isinstance(record, dict) else None
    return dest if isinstance(dest, str) else None


def pending_count(path: str, data: bytes | None = None) -> int:
    """How many reports of a spool file are still to be sent (unacked, past the cursor)."""
    if data is None:
        with open(path, "rb") as fh:
            data = fh.read()
    records, _ = read_records(data)
    return max(0, len(records) - read_cursor(path))


def spool_files(spool_dir: str) -> list[str]:
    """Spool files in time order (their names start with the creation stamp): regular
    files only, a FIFO or a link named like one is not a spool file."""
    directory = os.path.abspath(os.path.expanduser(spool_dir))
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    out = []
    for entry in entries:
        name = entry.name
        if not (name.endswith(SUFFIX) and "__" in name and not name.startswith(".")):
            continue
        try:
            regular = entry.is_file(follow_symlinks=False)
        except OSError:
            regular = False
        if regular:
            out.append(entry.path)
        else:
            log.warning("definity-spark: %s is named like a spool file but is not a regular "
                        "file; ignored", entry.path)
    return sorted(out)


def read_records(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The payload records of a spool file in send order (acked ones removed), and the
    number of lines that could not be read (a torn last line after a crash, or a record
    whose endpoint is not one of the four of the reporting API: never sent)."""
    payloads: list[dict[str, Any]] = []
    acked = set()
    corrupt = 0
    lines = data.split(b"\n")
    # the element after the last newline is empty for a well-formed file, or a torn write
    if lines and lines[-1].strip():
        corrupt += 1
    for raw in lines[:-1]:
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            corrupt += 1
            continue
        if not isinstance(record, dict):
            corrupt += 1
        elif "dest" in record and len(record) == 1:
            continue  # the header: which server the file's reports were meant for
        elif "ack" in record:
            acked.add(record["ack"])
        elif isinstance(record.get("body"), dict) and record.get("endpoint") in ENDPOINTS:
            payloads.append(record)
        else:
            corrupt += 1
    payloads = [r for r in payloads if r.get("seq") not in acked]
    # Stable sort: records without a seq (written by hand) keep their file order at the end.
    payloads.sort(key=lambda r: (0, r["seq"]) if isinstance(r.get("seq"), int) else (1, 0))
    return payloads, corrupt


def record_key(file_name: str, record: Mapping[str, Any], index: int) -> str:
    """The idempotency key to send a spool record with: the one it was spooled with, or,
    for a record of an older version without one, a key made from its file and number
    (the same at every replay of that file)."""
    key = record.get("key")
    if isinstance(key, str) and key:
        return key
    seq = record.get("seq")
    stem = file_name[:-len(SUFFIX)] if file_name.endswith(SUFFIX) else file_name
    return f"spool-{stem}-{seq if isinstance(seq, int) else f'n{index}'}"


def read_cursor(path: str) -> int:
    try:
        with open(path + CURSOR_SUFFIX, encoding="utf-8") as fh:
            return max(0, int(json.load(fh).get("accepted", 0)))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def write_cursor(path: str, accepted: int) -> None:
    """Replace the cursor atomically: write a temporary file, fsync, rename."""
    target = path + CURSOR_SUFFIX
    tmp = f"{target}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    try:
        write_line(fd, json.dumps({"accepted": accepted}).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)


def _remove(path: str) -> None:
    for p in (path + CURSOR_SUFFIX, path):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass
