"""Runners: which thread serves a connection. One thread per connection is the server's way;
the classroom compares it with serving one at a time and with a thread pool (chat/classroom.py).

A runner is told to `run()` a connection's reader (`connection.serve`) and, once the reader has
finished, to `reap()` it; `close()` waits for every thread it started.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

Serve = Callable[[], None]


class Runner(Protocol):
    def run(self, key: object, serve: Serve, name: str) -> None:
        """Starts `serve` for the connection `key`; returns at once (or, for the serial
        classroom runner, when the connection is over)."""
        ...

    def reap(self, key: object) -> None:
        """`key`'s reader has finished: join its thread if it had its own."""
        ...

    def close(self) -> None:
        """Every connection has finished: wait for every thread this runner started."""
        ...


class ThreadPerConnection:
    """A new thread for each connection, joined after the connection ends (no daemon threads:
    the server can prove that nothing is left behind).

    Thread safety: `_lock` guards `_threads`; `run()` is called by the accept thread, `reap()`
    by the server after a reader finished.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[object, threading.Thread] = {}

    def run(self, key: object, serve: Serve, name: str) -> None:
        thread = threading.Thread(target=serve, name=name)
        with self._lock:
            self._threads[key] = thread
        thread.start()

    def reap(self, key: object) -> None:
        with self._lock:
            thread = self._threads.pop(key, None)
        if thread is not None:
            thread.join()

    def close(self) -> None:
        with self._lock:
            threads, self._threads = list(self._threads.values()), {}
        for thread in threads:
            thread.join()
