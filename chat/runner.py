"""Runners: which thread serves a connection. One thread per connection is the server's way;
the classroom compares it with serving one at a time and with a thread pool (chat/classroom.py).

A runner is told to `run()` a connection's reader (`connection.serve`) and, once the reader has
finished, to `reap()` it; `close()` waits for every thread it started.
"""

from __future__ import annotations

import _thread
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
    by the server after a reader finished. A runner with threads not yet joined is listed in
    `_RUNNERS` (under `_RUNNERS_LOCK`, taken inside `_lock`) for the interpreter's exit
    (`_join_readers_at_exit`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: dict[object, threading.Thread] = {}
        self._excepthook = _shared_excepthook()

    def run(self, key: object, serve: Serve, name: str) -> None:
        thread = _ReaderThread(serve, name, self._excepthook)
        with self._lock:
            if not self._threads:
                with _RUNNERS_LOCK:
                    _RUNNERS.add(self)
            self._threads[key] = thread
        thread.start()
        _forget_start_event(thread)

    def reap(self, key: object) -> None:
        with self._lock:
            thread = self._threads.pop(key, None)
            self._unlist_if_empty_locked()
        if thread is not None:
            thread.join()

    def close(self) -> None:
        with self._lock:
            threads, self._threads = list(self._threads.values()), {}
            self._unlist_if_empty_locked()
        for thread in threads:
            thread.join()

    def _unlist_if_empty_locked(self) -> None:
        if not self._threads:
            with _RUNNERS_LOCK:
                _RUNNERS.discard(self)

    def _unjoined(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._threads.values())


class _ReaderThread(threading.Thread):
    """A connection's reader thread, made lean (issue #14: one per client, so each byte counts
    10,000 times): `run()` calls `serve` directly (no `*args, **kwargs` call, which made a dict
    that lived as long as the thread, and one C-level call less under the reader's frames); the
    arguments are one shared empty mapping instead of a new dict; and the hook that reports an
    uncaught exception is one closure for every reader (`_shared_excepthook`) instead of one
    each (410 bytes); and its start does not scan every other reader (`_set_tstate_lock`).
    Behaves as any Thread otherwise: not a daemon, joined by the runner, and waited for at the
    interpreter's exit like any non-daemon thread (`_join_readers_at_exit`)."""

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

    def _set_tstate_lock(self) -> None:
        """Issue #14, the burst: CPython 3.11's `Thread._set_tstate_lock` (run by every new
        thread before `start()` returns) also puts the thread's lock in `threading._shutdown_locks`,
        the set the interpreter's exit waits on, and first scans that whole set for the locks of
        threads that have ended (`_maintain_shutdown_locks`; `join()` scans it again): with
        thousands of readers connected, a list of thousands of locks built at each accept and at
        each join, under a lock every starting and ending thread takes. A reader's lock stays out
        of that set: the runner already knows every reader it has not joined, and the interpreter's
        exit waits for those itself (`_join_readers_at_exit`, one of threading's own exit hooks,
        which run before it waits for the threads in that set). Where CPython differs (3.13
        replaced all this; no `_set_sentinel`), threading's own method runs."""
        if not _LEAN_START or _set_sentinel is None:
            super()._set_tstate_lock()  # type: ignore[misc]
            return
        lock = _set_sentinel()  # released by the interpreter once this thread's state is gone
        lock.acquire()
        self._tstate_lock = lock


_NO_ARGUMENTS: Mapping[str, object] = MappingProxyType({})


def _shared_excepthook() -> object | None:
    """CPython's threading gives every Thread its own closure that calls threading.excepthook
    (read when an exception happens, so one closure serves every thread alike); None where
    threading has no such thing (then each thread keeps its own)."""
    make = getattr(threading, "_make_invoke_excepthook", None)
    return None if make is None else make()


# Issue #14, the burst (see `_ReaderThread._set_tstate_lock`): the runners whose readers are not
# all joined yet, and the hook that makes the interpreter's exit wait for those readers exactly as
# it waits for any other non-daemon thread (an exit without `ChatServer.stop()`: a script or a test
# that forgot it, an exception in the main thread). Threading calls its exit hooks in the main
# thread before it waits for the threads in `_shutdown_locks`; a hook joins every reader of every
# listed runner, again until a round finds none alive (a reader may start while it joins).
_RUNNERS: set[ThreadPerConnection] = set()
_RUNNERS_LOCK = threading.Lock()
_set_sentinel: Callable[[], _thread.LockType] | None = getattr(_thread, "_set_sentinel", None)
_register_atexit: Callable[[Callable[[], None]], None] | None = getattr(
    threading, "_register_atexit", None
)
_LEAN_START = (
    _set_sentinel is not None
    and _register_atexit is not None
    and hasattr(threading.Thread, "_set_tstate_lock")
    and hasattr(threading, "_shutdown_locks")
)


def _join_readers_at_exit() -> None:
    while True:
        with _RUNNERS_LOCK:
            runners = list(_RUNNERS)
        alive = [t for runner in runners for t in runner._unjoined() if t.is_alive()]
        if not alive:
            return
        for thread in alive:
            thread.join()


if _LEAN_START and _register_atexit is not None:
    _register_atexit(_join_readers_at_exit)


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
