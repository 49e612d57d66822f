"""A minimal stand-in for the Definity server: answers every POST ``200 {}`` and counts.

    python tests/perf/sink.py            # prints its port, serves until stdin closes

The benchmark's collector (``definity_spark.collector``) stores every payload in SQLite:
~1.6 ms of CPU per small write (three reports) on the same two cores as the job, where
the Definity server in production runs on another machine. Even in Linux's idle
scheduling class that CPU slows the job: on this machine a busy idle-class process makes
small writes ~17 % slower (``tests/perf/notes.md``). The runs that measure the plugin's
effect on small writes to a percent (``small_writes_ab``) report to this instead: HTTP/1.1
keep-alive, one asyncio loop, no parsing beyond the request line and Content-Length, in
the idle class. ``GET /counts`` answers the requests counted so far, by path.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import socket
import sys
import threading

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
COUNTS: collections.Counter = collections.Counter()


class _Sink(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[:end + 4 + length]
            method, path = (head[0].split(" ") + ["", ""])[:2]
            if method == "GET" and path == "/counts":
                body = json.dumps(COUNTS).encode()
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            else:
                COUNTS[path] += 1
                self.transport.write(OK)  # type: ignore[attr-defined]


def main() -> int:
    if hasattr(os, "sched_setscheduler"):  # like the benchmark's collector
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    os.nice(19)
    loop = asyncio.new_event_loop()
    sock = socket.create_server(("127.0.0.1", 0))
    server = loop.run_until_complete(loop.create_server(_Sink, sock=sock))
    print(sock.getsockname()[1], flush=True)
    # ends when the parent closes our stdin (or goes away)
    threading.Thread(target=lambda: (sys.stdin.read(), loop.call_soon_threadsafe(loop.stop)),
                     daemon=True).start()
    loop.run_forever()
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
