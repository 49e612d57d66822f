"""TCP_NODELAY on the JVM side of py4j's sockets (``listener.Py4jTuning``).

The helper process reads queries through its own, pooled py4j client (``JavaGateway``).
Its connections must be tuned like the driver's (a reply over 8 KiB otherwise stalls
~40 ms on delayed ACK), and a pass with no new connection must cost no py4j call: the
helper makes one per query read.
"""

from __future__ import annotations

from typing import Any

import pytest

from definity_spark.spark.listener import Py4jTuning

pytestmark = pytest.mark.spark


def _jvm_nodelay_by_port(spark: Any) -> dict[int, bool]:
    """TCP_NODELAY of each py4j server connection, by its client's port (read through the
    driver's own gateway)."""
    gw = spark.sparkContext._gateway
    field = gw.jvm.java.lang.Class.forName("py4j.GatewayServer").getDeclaredField(
        "connections")
    field.setAccessible(True)
    # one copy (toArray holds the list's lock): a connection may close meanwhile
    conns = field.get(gw.java_gateway_server).toArray()
    out = {}
    for conn in conns:
        sock = conn.getSocket() if conn is not None else None
        if sock is None:  # removed while copied, or not connected (yet, any more)
            continue
        out[sock.getPort()] = bool(sock.getTcpNoDelay())
    return out


def test_a_pooled_client_is_tuned_once_and_again_only_for_a_new_connection(
        spark: Any) -> None:
    from py4j.java_gateway import GatewayParameters, JavaGateway

    params = spark.sparkContext._gateway.gateway_parameters
    gateway = JavaGateway(gateway_parameters=GatewayParameters(
        address=params.address, port=params.port, auth_token=params.auth_token,
        auto_convert=True))
    client = gateway._gateway_client
    sent: list[str] = []
    send = client.send_command

    def counting(command: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(command)
        return send(command, *args, **kwargs)

    try:
        gateway.jvm.java.lang.System.currentTimeMillis()  # the pool's first connection
        client.send_command = counting
        tuning = Py4jTuning(gateway)

        tuning.server_connections()
        assert sent, "the first pass did not read the JVM's connections"
        [first] = list(client.deque)
        assert _jvm_nodelay_by_port(spark)[first.socket.getsockname()[1]] is True

        sent.clear()
        for _ in range(3):
            tuning.server_connections()
        assert sent == [], "a pass with no new connection made py4j calls"

        # a second connection, as a second thread calling at the same time opens one
        held = client._get_connection()
        second = client._get_connection()
        assert second is not held
        second_port = second.socket.getsockname()[1]
        client._give_back_connection(held)
        client._give_back_connection(second)
        assert _jvm_nodelay_by_port(spark)[second_port] is False  # py4j's default
        tuning.server_connections()
        assert sent, "a new connection of the pool was not looked at"
        assert _jvm_nodelay_by_port(spark)[second_port] is True

        sent.clear()
        tuning.server_connections()
        assert sent == []
    finally:
        client.send_command = send
        gateway.close()


def _gateway_like(spark: Any) -> Any:
    from py4j.java_gateway import GatewayParameters, JavaGateway

    params = spark.sparkContext._gateway.gateway_parameters
    return JavaGateway(gateway_parameters=GatewayParameters(
        address=params.address, port=params.port, auth_token=params.auth_token,
        auto_convert=True))


def test_a_new_connection_is_tuned_when_another_closed_meanwhile(spark: Any) -> None:
    # the number of the JVM's connections stays the same: it must not be taken for "none new"
    import time

    mine, other = _gateway_like(spark), _gateway_like(spark)
    try:
        mine.jvm.java.lang.System.currentTimeMillis()
        other.jvm.java.lang.System.currentTimeMillis()
        tuning = Py4jTuning(mine)
        tuning.server_connections()
        before = len(_jvm_nodelay_by_port(spark))
        client = mine._gateway_client
        held = client._get_connection()
        second = client._get_connection()  # a new one of ours
        second_port = second.socket.getsockname()[1]
        client._give_back_connection(held)
        client._give_back_connection(second)
        other.close()  # the other one goes: as many connections as before, one new
        deadline = time.monotonic() + 10
        while len(_jvm_nodelay_by_port(spark)) != before:
            assert time.monotonic() < deadline, "the closed connection stayed listed"
            time.sleep(0.05)
        assert _jvm_nodelay_by_port(spark)[second_port] is False
        tuning.server_connections()
        assert _jvm_nodelay_by_port(spark)[second_port] is True
    finally:
        mine.close()
        other.close()
