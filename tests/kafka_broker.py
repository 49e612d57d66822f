"""A real Apache Kafka broker for the streaming tests: KRaft mode, one node, on loopback.

Its classpath is what ``.ci/fetch-jars.sh`` resolved from Maven Central into
``<venv>/share/definity-kafka/lib`` (``org.apache.kafka:kafka_2.13`` and its runtime
dependencies); Spark talks to it through ``spark-sql-kafka-0-10`` (the same script puts
that into ``<venv>/share/definity-jars``). ``KafkaBroker.start()`` formats a fresh log
directory and starts the broker in its own JVM; ``stop()`` ends it and removes the
directory. Topics are created when first written (``auto.create.topics.enable``).
"""

from __future__ import annotations

import base64
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid


def broker_dir() -> str:
    return os.path.join(sys.prefix, "share", "definity-kafka", "lib")


def available() -> bool:
    return bool(glob.glob(os.path.join(broker_dir(), "kafka_2.13-*.jar")))


def spark_jars() -> list[str]:
    """The Kafka connector jars for this venv's Spark (``[]`` when not fetched)."""
    folder = os.path.join(sys.prefix, "share", "definity-jars")
    found = []
    for prefix in ("spark-sql-kafka-0-10_", "spark-token-provider-kafka-0-10_",
                   "kafka-clients-", "commons-pool2-"):
        hits = sorted(glob.glob(os.path.join(folder, prefix + "*.jar")))
        if len(hits) != 1:
            return []
        found.append(hits[0])
    return found


def _free_ports(count: int) -> list[int]:
    """Ports free on loopback, held together while chosen so that they differ."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _cluster_id() -> str:
    """A random cluster id as Kafka writes them: one starting with '-' reads as an option."""
    while True:
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster.startswith("-"):
            return cluster


class KafkaBroker:
    """One broker + controller (KRaft) on two free loopback ports."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="definity-kafka-")
        self.port, self.controller_port = _free_ports(2)
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None
        self._log = None

    def _java(self, *argv: str, **kw: object) -> list[str]:
        return ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true", "-cp", os.path.join(broker_dir(), "*"), *argv]

    def start(self, timeout: float = 90.0) -> KafkaBroker:
        props = os.path.join(self.dir, "server.properties")
        with open(props, "w", encoding="utf-8") as handle:
            handle.write("\n".join([
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                f"CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={os.path.join(self.dir, 'data')}",
                "num.partitions=1",
                "auto.create.topics.enable=true",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.flush.interval.messages=1000000",
                "num.network.threads=1",
                "num.io.threads=2",
                "background.threads=2",
                "",
            ]))
        formatted = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", _cluster_id(), "-c", props),
            capture_output=True, timeout=120)
        if formatted.returncode:
            raise RuntimeError(f"formatting Kafka's storage failed: {formatted.stderr[-2000:]!r}")
        self._log = open(os.path.join(self.dir, "broker.log"), "wb")  # noqa: SIM115
        self._proc = subprocess.Popen(self._java("kafka.Kafka", props), stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the Kafka broker exited: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the Kafka broker did not listen within {timeout} s")

    def log_tail(self, n: int = 3000) -> str:
        try:
            with open(os.path.join(self.dir, "broker.log"), "rb") as handle:
                return handle.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.dir, ignore_errors=True)
