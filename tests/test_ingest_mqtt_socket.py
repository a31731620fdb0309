"""The worker's buffered MQTT socket: paho's small reads served from one large `recv`."""

from __future__ import annotations

import socket

import pytest

from infrawatch.ingest.mqtt import _BufferedSocket


def test_small_reads_come_from_one_recv_and_pending_counts_what_is_left() -> None:
    a, b = socket.socketpair()
    try:
        b.setblocking(False)
        sock = _BufferedSocket(b)
        packets = [bytes([0x30, 5]) + b"hello", bytes([0x30, 3]) + b"abc"]
        a.sendall(b"".join(packets))
        got = []
        for _ in packets:  # as paho reads a packet: command byte, length byte, the rest
            cmd, length = sock.recv(1), sock.recv(1)
            got.append(cmd + length + sock.recv(length[0]))
        assert got == packets
        assert sock.pending() == 0
        a.sendall(b"\x30\x02xy")
        assert sock.recv(1) == b"\x30"
        assert sock.pending() == 3  # buffered: aiomqtt's read callback reads on while positive
        assert sock.recv(10) == b"\x02xy"  # a short read of what is buffered, never a blocking wait
        with pytest.raises(BlockingIOError):  # nothing buffered, nothing in the kernel: paho's "again"
            sock.recv(1)
        assert sock.fileno() == b.fileno()  # everything else is the socket's own
        a.close()
        assert sock.recv(1) == b""  # the peer closed: paho sees the connection lost
    finally:
        a.close()
        b.close()
