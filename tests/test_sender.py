"""The sender thread on its own: real loopback sockets, one of them never read."""

from __future__ import annotations

import socket
import threading

from chat.outbox import Outbox
from chat.sender import Sender
from tests.peers import TIMEOUT_S

BIG = 8 * 1024 * 1024  # far more than the sockets' buffers hold


class Client:
    """The least a Sendable needs: a socket (ours) and an outbox; the peer's end to read."""

    def __init__(self, listener: socket.socket) -> None:
        self.peer = socket.socket()
        # Small buffers on both ends: a peer that does not read fills them after a few KiB.
        self.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.peer.connect(listener.getsockname())
        self.sock, _ = listener.accept()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.sock.setblocking(False)
        self.outbox = Outbox(2 * BIG)
        self.closed = threading.Event()

    @property
    def socket(self) -> socket.socket:
        return self.sock

    def send_queued(self) -> bool:
        data = self.outbox.claim()
        if data is None:
            return False
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        self.outbox.release(data[sent:])
        return sent < len(data)

    def close_socket(self) -> None:
        self.sock.close()
        self.closed.set()

    def read_exactly(self, size: int) -> bytes:
        self.peer.settimeout(TIMEOUT_S)
        data = bytearray()
        while len(data) < size:
            chunk = self.peer.recv(size - len(data))
            assert chunk, "connection closed early"
            data += chunk
        return bytes(data)


def test_a_full_socket_waits_while_the_others_get_theirs_and_nothing_is_reordered():
    sender = Sender()
    sender.start()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        stalled, quick = Client(listener), Client(listener)
        try:
            # Numbered chunks, so that order and completeness can be checked at the end.
            chunks = [b"%08d" % n + b"x" * 1016 for n in range(BIG // 1024)]
            for chunk in chunks[: len(chunks) // 2]:
                stalled.outbox.offer(chunk)
            sender.ready(stalled)  # its peer reads nothing yet: its socket fills up
            for n in range(100):
                quick.outbox.offer(b"line %d\n" % n)
                sender.ready(quick)
            expected = b"".join(b"line %d\n" % n for n in range(100))
            assert quick.read_exactly(len(expected)) == expected
            assert stalled.outbox.size > 0  # still waiting for its peer: nobody waited for it
            for chunk in chunks[len(chunks) // 2 :]:  # queued behind what is still unsent
                stalled.outbox.offer(chunk)
            sender.ready(stalled)
            assert stalled.read_exactly(BIG) == b"".join(chunks)
        finally:
            sender.retire(stalled)
            sender.retire(quick)
            sender.stop()
    assert stalled.closed.is_set()
    assert quick.closed.is_set()
    stalled.peer.close()
    quick.peer.close()
