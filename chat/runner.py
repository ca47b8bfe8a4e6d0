"""Runners: which thread serves a connection. One thread per connection is the server's way;
the classroom compares it with serving one at a time and with a thread pool (chat/classroom.py).

A runner is told to `run()` a connection's reader (`connection.serve`) and, once the reader has
finished, to `reap()` it; `close()` waits for every thread it started.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
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
        self._excepthook = _shared_excepthook()

    def run(self, key: object, serve: Serve, name: str) -> None:
        thread = _ReaderThread(serve, name, self._excepthook)
        with self._lock:
            self._threads[key] = thread
        thread.start()
        _forget_start_event(thread)

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


class _ReaderThread(threading.Thread):
    """A connection's reader thread, made lean (issue #14: one per client, so each byte counts
    10,000 times): `run()` calls `serve` directly (no `*args, **kwargs` call, which made a dict
    that lived as long as the thread, and one C-level call less under the reader's frames); the
    arguments are one shared empty mapping instead of a new dict; and the hook that reports an
    uncaught exception is one closure for every reader (`_shared_excepthook`) instead of one
    each (410 bytes). Behaves as any Thread otherwise: not a daemon, joined by the runner."""

    def __init__(self, serve: Serve, name: str, excepthook: object | None) -> None:
        super().__init__(name=name, kwargs=_NO_ARGUMENTS)
        # threading keeps a weak reference to every Thread ever made, for CPython's own test
        # suite (`_dangling`): 140 bytes per reader that nothing of ours reads.
        dangling = getattr(threading, "_dangling", None)
        if dangling is not None:
            dangling.discard(self)
        self._serve = serve
        if excepthook is not None:
            self._invoke_excepthook = excepthook

    def run(self) -> None:
        self._serve()


_NO_ARGUMENTS: Mapping[str, object] = MappingProxyType({})


def _shared_excepthook() -> object | None:
    """CPython's threading gives every Thread its own closure that calls threading.excepthook
    (read when an exception happens, so one closure serves every thread alike); None where
    threading has no such thing (then each thread keeps its own)."""
    make = getattr(threading, "_make_invoke_excepthook", None)
    return None if make is None else make()


# Issue #14, memory per idle client: a started Thread keeps the Event that start() waited on
# (an Event, its Condition and the Condition's deque: about 1 KiB each, 10 MiB for 10,000
# readers), although it is only ever asked is_set() again. A started thread gets one shared
# Event that is set. CPython's threading keeps it in `_started` (3.8 to 3.13); where it does
# not, nothing is changed.
_STARTED = threading.Event()
_STARTED.set()


def _forget_start_event(thread: threading.Thread) -> None:
    started = getattr(thread, "_started", None)
    if type(started) is threading.Event and started.is_set():
        thread._started = _STARTED  # type: ignore[attr-defined]
