"""Extraction in the delivery helper process (``spark.definity.extraction.process``).

In the driver, the JVM listener's pump hands each callback to the helper as the text the
gatherer answered (``ProcessDelivery.forward``), then the gatherer itself (a last text,
``{"pull": ...}``): from then on the helper's worker takes the callbacks from the JVM
(``SessionObserver._pull``), and the driver's interpreter does no per-query work. Here,
in the helper, a ``SessionObserver`` per session reads them exactly as the driver's
would: it connects to the driver's JVM through py4j (the gateway's address and secret
came down the socket) and uses the driver's gatherer and session by their py4j
references, for the reads that are not answered with the callback (nested writes,
failures). Its sink is a ``TaskReporter`` that numbers the task's transformations: it
took the numbering over from the driver's reporter (``N``), which sends its own writes
here to be numbered (``W``), so that the numbers stay one sequence whichever process
read the query.

Frames (``process.py``): ``N`` take over the numbering; ``O`` attach a session (reply:
``ok``, ``error``); ``Q`` a callback (session key, ``\\n``, the gatherer's text); ``W`` a
write of the driver (``[endpoint, body]`` pairs, ``tf_id`` 0); ``Z`` detach a session
(reply: its observer's counts); ``K`` the task's counts. To the driver: ``M`` a mark of
``SessionObserver.drain`` was processed (``key``, ``n``, the observer's counts).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from definity_spark._internal import contained
from definity_spark.delivery.process import numbered
from definity_spark.task import TaskReporter

log = logging.getLogger("definity_spark.spark")


class HelperExtraction:
    """The helper's side: the py4j connection, the numbering reporter, the observers."""

    def __init__(self, settings: Any, delivery: Any,
                 send: Callable[[bytes, dict[str, Any]], None]) -> None:
        self.settings = settings
        self.delivery = delivery
        self._send = send
        self.reporter: TaskReporter | None = None
        self.observers: dict[int, Any] = {}
        self._gateway: Any = None
        self._sent: dict[int, tuple[int, int]] = {}  # timings sent so far, by session

    # -- frames ---------------------------------------------------------------------------
    def numbering(self, fields: dict[str, Any]) -> None:
        if self.reporter is not None:
            return
        self.reporter = TaskReporter(
            delivery=self.delivery, task_id=str(fields["task_id"]),
            app_name=str(fields["app_name"]), task_name=str(fields["task_name"]),
            env=fields.get("env"), app_pit=fields.get("app_pit"), tags=fields.get("tags"))
        self.reporter.continue_from(int(fields["tf"]))

    def group(self, body: bytes) -> None:
        bodies = json.loads(body)
        if self.reporter is not None:
            self.reporter.on_group(bodies)
        else:  # (not sent before N)
            for payload in numbered(bodies, 0):
                self.delivery.submit(payload)

    def attach(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            if self.reporter is None:
                return {"ok": False, "error": "the task's numbering was not handed over"}
            from py4j.java_gateway import JavaObject

            from definity_spark.spark.observer import SessionObserver

            gateway = self._connect(request["gateway"])
            client = gateway._gateway_client
            key = int(request["key"])
            observer = SessionObserver(JavaObject(str(request["session"]), client),
                                       self.settings, self.reporter, gateway=gateway)
            observer.light_reads = bool(request.get("light_reads", True))
            observer.run_in_helper(JavaObject(str(request["gatherer"]), client),
                                   lambda n: self._mark(key, n))
            self.observers[key] = observer
            return {"ok": True}
        except Exception as exc:  # noqa: BLE001 - the driver reads the session itself
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}

    def take(self, body: bytes) -> None:
        key, _, text = body.decode().partition("\n")
        observer = self.observers.get(int(key))
        if observer is not None:
            observer.take(text)

    def detach(self, request: dict[str, Any]) -> dict[str, Any]:
        observer = self.observers.pop(int(request["key"]), None)
        if observer is None:
            return {"ok": False}
        observer.stop_in_helper(float(request.get("timeout", 1.0)))
        return {"ok": True, "observer": dict(observer.stats)}

    def counts(self) -> dict[str, Any]:
        r = self.reporter
        if r is None:
            return {"ok": False}
        return dict(r.counts(), ok=True)

    def close(self, timeout: float) -> None:
        """The driver closes (or went away): end the observers, then the connection."""
        for key in list(self.observers):
            with contained("helper.close_observer"):
                self.detach({"key": key, "timeout": timeout})
        if self._gateway is not None:
            with contained("helper.close_gateway"):
                self._gateway.close()
            self._gateway = None

    # -- internals ------------------------------------------------------------------------
    def _connect(self, where: dict[str, Any]) -> Any:
        if self._gateway is None:
            from py4j.java_gateway import GatewayParameters, JavaGateway

            self._gateway = JavaGateway(gateway_parameters=GatewayParameters(
                address=str(where["address"]), port=int(where["port"]),
                auth_token=where.get("token"), auto_convert=True))
        return self._gateway

    def _mark(self, key: int, n: int) -> None:
        """On the session's worker: a mark is processed; its counts and the timings since
        the last one go to the driver (the benchmark reads them there)."""
        observer = self.observers.get(key)
        message: dict[str, Any] = {"key": key, "n": n, "stats": {}}
        if observer is not None:
            done_x, done_h = self._sent.get(key, (0, 0))
            x, h = list(observer.extraction_ms), list(observer.handle_ms)
            self._sent[key] = (len(x), len(h))
            message.update(stats=dict(observer.stats), extraction_ms=x[done_x:],
                           handle_ms=h[done_h:])
        self._send(b"M", message)
