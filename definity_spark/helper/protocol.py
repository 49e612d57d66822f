"""The frames between the driver and its helper process, over a socket pair.

A frame is a 5-byte header (kind, 1 byte; body length, 4 bytes big-endian) and a body.

Driver -> helper:
  ``S`` start (pickle: the settings, the log level; always the first frame: the token
  travels down the socket, never in argv or the environment); ``P`` a payload (endpoint,
  ``\\n``, JSON body); ``W`` one write read in the driver, to be numbered (JSON list of
  ``[endpoint, body]``, ``tf_id`` 0); ``N`` take over the task's numbering; ``O`` read a
  session (JSON: its key, the gateway's address and secret, the session's and the
  gatherer's py4j ids); ``Z`` stop reading a session; ``K`` the task's counts; ``F``
  flush, ``T`` stats, ``C`` close (JSON with ``id`` and ``timeout``).

Helper -> driver:
  ``Y`` ready (JSON: ``describe``); ``R`` a reply (JSON: ``id``, ``ok``, ...); ``L`` a log
  record, logged again in the driver; ``M`` a mark of ``SessionObserver.drain`` was
  processed (``key``, ``n``, the session's counts, timings and cross-check differences).
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from definity_spark.wire import RawPayload

HEADER = struct.Struct("!cI")


def frame(kind: bytes, body: bytes) -> bytes:
    return HEADER.pack(kind, len(body)) + body


def read_frame(stream: BinaryIO) -> tuple[bytes, bytes] | None:
    """The next frame, or None at the end of the stream (a short read is an end too)."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    kind, length = HEADER.unpack(header)
    body = stream.read(length) if length else b""
    if len(body) < length:
        return None
    return kind, body


def frames(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The frames in bytes that were not written, in order."""
    stream = io.BytesIO(data)
    while True:
        found = read_frame(stream)
        if found is None:
            return
        yield found


def payload_frame(payload: Any) -> bytes:
    body = json.dumps(payload.to_json(), separators=(",", ":"), ensure_ascii=False)
    return frame(b"P", f"{payload.endpoint}\n{body}".encode())


def payload_of(body: bytes) -> RawPayload:
    """The payload in the body of a ``P`` frame."""
    endpoint, _, text = body.partition(b"\n")
    return RawPayload(endpoint=endpoint.decode(), body=json.loads(text))


def group_frame(payloads: Sequence[Any]) -> bytes:
    """One write's payloads (``tf_id`` 0) for the helper to number (``W``)."""
    return frame(b"W", json.dumps([[p.endpoint, p.to_json()] for p in payloads],
                                  separators=(",", ":"), ensure_ascii=False).encode())
