"""The listening sockets of ``tidings serve --processes N``: the port's connections spread."""

from __future__ import annotations

import socket

from tidings.runtime.supervisor import child_sockets, listening_socket


def _accept_all(sock: socket.socket) -> int:
    sock.setblocking(False)
    taken = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return taken
        conn.close()
        taken += 1


def test_each_child_gets_a_share_of_connections_opened_at_once() -> None:
    shared = listening_socket("127.0.0.1", 0)
    port = shared.getsockname()[1]
    # two children: each adds a socket of its own to the port's group
    first = child_sockets(shared.fileno())
    second = child_sockets(shared.fileno())
    clients: list[socket.socket] = []
    try:
        assert len(first) == len(second) == 2
        assert first[1].getsockname() == second[1].getsockname() == ("127.0.0.1", port)
        for _ in range(90):  # a pool of keep-alive connections, opened at once
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=60))
        # every connection is queued (the handshake is done) before anyone accepts
        own = [_accept_all(first[1]), _accept_all(second[1])]
        in_common = _accept_all(shared)
        assert sum(own) + in_common == 90
        # the kernel spreads them by address over the 3 sockets: each child's own socket
        # gets a share (all in one of them, or none in a child's, would be 1 in 10^9)
        assert min(own) > 0, own
    finally:
        for client in clients:
            client.close()
        first[0].detach()  # the shared socket's descriptor, closed once below
        second[0].detach()
        for sock in (first[1], second[1], shared):
            sock.close()


def test_a_child_alone_on_a_port_without_reuseport_serves_the_shared_socket() -> None:
    plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    plain.bind(("127.0.0.1", 0))  # no SO_REUSEPORT: nobody may join its port
    plain.listen(8)
    try:
        sockets = child_sockets(plain.fileno())
        assert len(sockets) == 1 and sockets[0].fileno() == plain.fileno()
        sockets[0].detach()
    finally:
        plain.close()
