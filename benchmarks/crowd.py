"""A crowd: thousands of real text clients in this one process, read by one selector loop.

Shared by benchmarks/big_room.py (and so benchmarks/shutdown.py) and
tests/test_shutdown_stress.py. Each client registers (a nickname, then waits for its
welcome); from then on only its last bytes are kept, enough to see whether the goodbye came
before its EOF. Standard library only, so that a test can load this file by its path.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Callable

GOODBYE = b"*** server shutting down"
WELCOME = b"* Hello "
# Connections opened, then welcomed, at a time: well under the server's listen backlog.
CONNECT_BATCH = 64
KEEP_BYTES = 64  # of each welcomed client's input: a marker split between two reads is seen


class Crowd:
    """Text clients of one server, on one selector, read by the thread that calls `pump()`.

    `welcomed`, `eof` and `goodbye_before_eof` hold client indexes (0 .. count - 1).
    """

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.welcomed: set[int] = set()
        self.seen: dict[int, bytes] = {}
        self.eof: set[int] = set()
        self.goodbye_before_eof: set[int] = set()

    def join(self, count: int, prefix: str = "u", timeout_s: float = 300.0) -> None:
        """Connects and registers clients until there are `count`, named prefix + index."""
        deadline = time.monotonic() + timeout_s
        while len(self.socks) < count:
            for _ in range(min(CONNECT_BATCH, count - len(self.socks))):
                sock = socket.create_connection(self.address)
                sock.setblocking(False)
                index = len(self.socks)
                self.socks.append(sock)
                self.seen[index] = b""
                self.selector.register(sock, selectors.EVENT_READ, index)
                sock.send(f"{prefix}{index}\n".encode())
            self.pump(lambda: len(self.welcomed) == len(self.socks), deadline)

    def pump(self, done: Callable[[], bool], deadline: float) -> None:
        """Reads what the clients get until `done()`; TimeoutError after `deadline`."""
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError("the clients did not get what they waited for in time")
            for key, _ in self.selector.select(0.5):
                index = key.data
                assert isinstance(key.fileobj, socket.socket)
                try:
                    data = key.fileobj.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:  # a reset: the client saw no clean end
                    data = b""
                if not data:
                    self.eof.add(index)
                    if GOODBYE in self.seen[index]:
                        self.goodbye_before_eof.add(index)
                    self.selector.unregister(key.fileobj)
                    continue
                if index not in self.welcomed:
                    self.seen[index] += data
                    if WELCOME in self.seen[index]:
                        self.welcomed.add(index)
                        self.seen[index] = b""  # from now on only the end matters
                else:
                    self.seen[index] = self.seen[index][-KEEP_BYTES:] + data

    def hang_up(self) -> None:
        """Every client closes its socket at once."""
        for sock in self.socks:
            with contextlib.suppress(KeyError):  # (unregistered already at its EOF)
                self.selector.unregister(sock)
            sock.close()

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.selector.close()
