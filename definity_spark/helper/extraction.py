"""Reading the driver's sessions in the helper process.

For each session the driver attaches (``O``), an ``ExtractionWorker`` reads the session's
callbacks exactly as the driver's would: it takes them from the driver's gatherer, by its
py4j reference, through this process's own py4j connection to the driver's JVM (the
gateway's address and secret came down the socket). Its sink is a ``TaskReporter`` that
numbers the task's transformations: it took the numbering over from the driver's
reporter (``N``), which sends here any write it still reads itself (``W``), so that the
numbers stay one sequence whichever process read the query. A processed mark goes back
to the driver (``M``) with the session's counts, its timings and, in tests, the
cross-check's differences since the last mark.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

from definity_spark import wire
from definity_spark._internal import contained
from definity_spark.lineage.rules import Options
from definity_spark.spark.facts import FactReader
from definity_spark.spark.listener import Py4jTuning
from definity_spark.spark.worker import ExtractionWorker
from definity_spark.task import TaskReporter

log = logging.getLogger("definity_spark.helper")


class HelperExtraction:
    """The helper's side: the py4j connection, the numbering reporter, the workers."""

    def __init__(self, settings: Any, delivery: Any,
                 send: Callable[[bytes, dict[str, Any]], None]) -> None:
        self.settings = settings
        self.delivery = delivery
        self._send = send
        self.reporter: TaskReporter | None = None
        self.workers: dict[int, ExtractionWorker] = {}
        self._gateway: Any = None
        self._tuning: Py4jTuning | None = None  # TCP_NODELAY on its own connections
        self._sent: dict[int, tuple[int, int]] = {}  # timings, differences sent, by session

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
            for payload in wire.numbered(bodies, 0):
                self.delivery.submit(payload)

    def attach(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            if self.reporter is None:
                return {"ok": False, "error": "the task's numbering was not handed over"}
            from py4j.java_gateway import JavaObject

            gateway = self._connect(request["gateway"])
            client = gateway._gateway_client
            key = int(request["key"])
            g = JavaObject(str(request["gatherer"]), client)
            reader = FactReader(gateway, JavaObject(str(request["session"]), client),
                                int(request["budget_ms"]), int(request["max_plan_nodes"]),
                                gatherer=g)
            worker = ExtractionWorker(reader, self.reporter, Options.of(self.settings), gatherer=g,
                                      on_mark=lambda n: self._mark(key, n),
                                      tuning=self._tuning)
            worker.cross_check = bool(request.get("cross_check"))
            self.workers[key] = worker
            worker.start()
            return {"ok": True}
        except Exception as exc:  # noqa: BLE001 - the driver reads the session itself
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}

    def detach(self, request: dict[str, Any]) -> dict[str, Any]:
        key = int(request["key"])
        worker = self.workers.pop(key, None)
        if worker is None:
            return {"ok": False}
        worker.stop(float(request.get("timeout", 1.0)))
        return dict(self._report(key, worker), ok=True)

    def counts(self) -> dict[str, Any]:
        r = self.reporter
        if r is None:
            return {"ok": False}
        return dict(r.counts(), ok=True)

    def close(self, timeout: float) -> None:
        """The driver closes (or went away): end the workers, then the connection."""
        for key in list(self.workers):
            with contained("helper.close_session"):
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
            self._tuning = Py4jTuning(self._gateway)
        return self._gateway

    def _report(self, key: int, worker: ExtractionWorker) -> dict[str, Any]:
        """The session's counts, and its timings and differences not sent yet."""
        done_x, done_m = self._sent.get(key, (0, 0))
        timings, mismatches = list(worker.extraction_ms), list(worker.fact_mismatches)
        self._sent[key] = (len(timings), len(mismatches))
        return {"stats": worker.counts(), "extraction_ms": timings[done_x:],
                "fact_mismatches": mismatches[done_m:]}

    def _mark(self, key: int, n: int) -> None:
        """On the session's worker: a mark is processed; tell the driver."""
        worker = self.workers.get(key)
        message: dict[str, Any] = {"key": key, "n": n}
        if worker is not None:
            message.update(self._report(key, worker))
        self._send(b"M", message)
