"""Waker: the one thread that waits for input on every reader's socket, and the run slots that
let at most a few readers run at once.

Each client keeps its own reader thread (chat/connection.py). What changes is how a reader
waits: instead of sleeping in its own `poll()`, it gives back its run slot, registers its socket
in the waker's epoll and sleeps on a lock of its own. The waker thread wakes a sleeping reader
when its socket has input (or EOF), but only once it holds a free run slot for it.

Why: a thread that wakes from `poll()` must take the interpreter lock to go on, and a thread
that waits for that lock wakes every switch interval (5 ms) to ask for it. 10,000 clients that
hang up at the same moment woke 10,000 readers at once: the kernel spent its time waking
threads that asked for the interpreter and went back to sleep, and the process made almost no
progress (SIGTERM at that moment took 20 s to over 300 s; 9,000 threads woken by another
process took 45 s in a bare test, and 1.1 s through a waker with 4 slots:
docs/performance.md). A reader asleep on its lock is not runnable at all, so at most
`RUN_SLOTS` readers (plus the accept, sender and main threads) ever ask for the interpreter.

Where there is no epoll (not Linux), `wait_readable` falls back to the reader's own `poll()`
(the slots still bound how many readers run at once).

Thousands of readers asleep on locks are thousands of waiters in the kernel's futex hash table,
and every wake-up of any lock in the process (the interpreter lock's hand-overs above all) walks
the waiters of its bucket. Linux 6.16 and later give each process a table of its own sized by the
number of CPUs, not of threads (16 buckets on 2 cores): with 10,000 readers asleep that was
about 600 waiters walked per wake-up, a third of the server's CPU while clients registered, and
registration slowed as more clients were connected (docs/performance.md, #14).
`widen_futex_hash()` asks for a bucket per expected sleeper.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import os
import queue
import select
import sys
import threading
from collections.abc import Callable, Iterator

log = logging.getLogger("chat.waker")

# Readers running at once. The interpreter runs one thread at a time anyway; a few more let a
# reader that waits for a lock or a system call be overlapped by another. Not the number of
# clients: every client keeps its thread, asleep until it has input.
RUN_SLOTS = 8
# Readers not registered yet (newcomers) run in slots of their own, this many at once: a burst
# of arrivals (everyone at 9:00) cannot fill the run slots that chatting users need, and fewer
# threads ask for the interpreter at once (docs/performance.md, #14: the burst).
NEWCOMER_SLOTS = 2


class Waker:
    """The waker thread, its epoll, and the run slots.

    A reader holds a run slot while it runs: `take_slot()` ... `give_slot()` around its life,
    `outside()` around any wait that could be long (for its client to read, for another
    reader), so that a sleeping reader never holds one. `wait_readable()` gives the slot back
    while asleep and returns holding one.

    Thread safety: `_lock` (a leaf lock, held for a dict update) guards `_sleeping` and
    `_sleeping_newcomers` (fd -> the lock its reader sleeps on) and `_newcomers` (the threads
    holding a newcomer's slot). The epoll object is used by readers (register, modify) and the
    waker thread (poll), which the kernel allows. Run slots are tokens in a `queue.SimpleQueue`:
    a thread waiting for one sleeps in C without asking for the interpreter lock, and one
    `put()` wakes one waiter. Readers not registered yet run in newcomers' slots of their own
    (`NEWCOMER_SLOTS`), which the waker thread never waits for: it releases a newcomer's lock
    and the newcomer takes its slot itself, so a burst of arrivals neither fills the run slots
    nor holds up the waking of registered readers.
    """

    def __init__(
        self, slots: int = RUN_SLOTS, sleepers: int = 0, newcomer_slots: int = NEWCOMER_SLOTS
    ) -> None:
        self._slot_count = slots
        # Newcomers' slots: a reader starts in one and moves to the run slots once it is
        # registered (wait_readable's `newcomer`). Threads holding one are in `_newcomers`.
        self._newcomer_count = newcomer_slots
        self._newcomer_slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(newcomer_slots):
            self._newcomer_slots.put(None)
        self._newcomers: set[int] = set()  # thread idents (only while registering)
        self._sleepers = sleepers  # how many readers may sleep at once (the futex hash's size)
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(slots):
            self._slots.put(None)
        self._lock = threading.Lock()
        self._sleeping: dict[int, _thread.LockType] = {}
        self._sleeping_newcomers: dict[int, _thread.LockType] = {}  # (no tuple per sleeper)
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._wake_r = self._wake_w = -1
        self._stopping = False
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self._epoll is None:
            return
        widen_futex_hash(self._sleepers)
        self._wake_r, self._wake_w = os.pipe()
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self.thread = threading.Thread(target=self._run, name="waker")
        self.thread.start()

    def stop(self) -> None:
        """Ends the thread; call once no reader sleeps any more (every reader has finished)."""
        if self.thread is not None:
            self._stopping = True
            os.write(self._wake_w, b"x")
            self.thread.join()
            os.close(self._wake_r)
            os.close(self._wake_w)
        if self._epoll is not None:
            self._epoll.close()

    # -- for reader threads --------------------------------------------------------------------

    def take_slot(self, fd: int) -> None:
        """A reader starts: waits for a newcomer's slot (without asking for the interpreter),
        and registers its socket `fd` (disarmed until its first `wait_readable`)."""
        self._take(newcomer=True)
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLONESHOT)

    def give_slot(self) -> None:
        """A reader ends (its socket is closed by the sender, which takes it out of epoll)."""
        self._give()

    @contextlib.contextmanager
    def every_slot(self) -> Iterator[None]:
        """Holds every run slot: no reader runs meanwhile (each one finishes what it is doing
        and sleeps). For the shutdown's work on every connection at once, which would
        otherwise compete for the interpreter with thousands of readers it wakes. Never call
        it from a reader (it would wait for its own slot)."""
        for _ in range(self._slot_count):
            self._slots.get()
        for _ in range(self._newcomer_count):
            self._newcomer_slots.get()
        try:
            yield
        finally:
            for _ in range(self._newcomer_count):
                self._newcomer_slots.put(None)
            for _ in range(self._slot_count):
                self._slots.put(None)

    @contextlib.contextmanager
    def outside(self) -> Iterator[None]:
        """Gives the caller's run slot back around a wait that may be long, and takes one again
        after it (a reader that waits for its client or for another reader must not keep the
        others from running)."""
        newcomer = self._give()
        try:
            yield
        finally:
            self._take(newcomer)

    def wait_readable(
        self, fd: int, park: _thread.LockType, timeout: float | None, newcomer: bool = False
    ) -> bool:
        """Sleeps until `fd` has input (or EOF, or an error), at most `timeout` seconds (None:
        no limit); True if it has. Called by the reader of `fd` holding a slot, with its own
        `park` lock, held (acquired) by the reader between calls; returns holding a run slot,
        or a newcomer's slot if `newcomer` (the reader is not registered yet)."""
        if self._epoll is None:
            self._give()
            try:
                return _poll_readable(fd, timeout)
            finally:
                self._take(newcomer)
        with self._lock:
            (self._sleeping_newcomers if newcomer else self._sleeping)[fd] = park
        # (registered by take_slot(), so no exception: its traceback would keep a frame object
        # alive, per sleeping reader, for as long as it sleeps)
        self._epoll.modify(fd, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT)
        self._give()
        if park.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            woke = True  # the waker took a run slot for us (a newcomer takes its own below)
        else:
            with self._lock:
                woke = self._pop_locked(fd) is None
            if woke:
                # The waker woke us in the same instant: it releases `park` right after
                # taking us out of `_sleeping` (nothing blocks in between).
                park.acquire()
            else:
                self._take(newcomer)
                return False
        if newcomer:
            self._take(newcomer=True)
        return True

    def _take(self, newcomer: bool) -> None:
        """Waits for a slot of the kind (in C, not asking for the interpreter)."""
        if newcomer:
            self._newcomer_slots.get()
            with self._lock:
                self._newcomers.add(threading.get_ident())
        else:
            self._slots.get()

    def _give(self) -> bool:
        """Gives back the slot the calling thread holds; whether it was a newcomer's."""
        ident = threading.get_ident()
        with self._lock:
            newcomer = ident in self._newcomers
            self._newcomers.discard(ident)
        (self._newcomer_slots if newcomer else self._slots).put(None)
        return newcomer

    # -- the waker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        assert self._epoll is not None
        while not self._stopping:
            try:
                ready = self._epoll.poll()
            except InterruptedError:  # pragma: no cover - retried by Python itself
                continue
            for fd, _events in ready:
                if fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                with self._lock:
                    took = fd in self._sleeping  # (a newcomer takes a newcomer's slot itself)
                    if not took and fd not in self._sleeping_newcomers:
                        continue  # its reader timed out meanwhile, or has gone
                if took:
                    self._slots.get()  # the bound: wait until a reader gives its slot back
                with self._lock:
                    sleeper = self._pop_locked(fd)
                if sleeper is None:  # its reader timed out meanwhile
                    if took:
                        self._slots.put(None)
                    continue
                park, newcomer = sleeper
                if took and newcomer:  # (it timed out and sleeps again, now the other kind)
                    self._slots.put(None)
                elif not took and not newcomer:
                    self._slots.get()
                park.release()

    def _pop_locked(self, fd: int) -> tuple[_thread.LockType, bool] | None:
        """Takes the sleeper on `fd` out: (its lock, whether a newcomer), or None."""
        park = self._sleeping.pop(fd, None)
        if park is not None:
            return park, False
        park = self._sleeping_newcomers.pop(fd, None)
        return None if park is None else (park, True)


def new_park() -> _thread.LockType:
    """A reader's own lock to sleep on in `Waker.wait_readable` (made held)."""
    park = _thread.allocate_lock()
    park.acquire()
    return park


# prctl(2) options of Linux 6.16 and later (linux/prctl.h): the process's own futex hash table.
_PR_FUTEX_HASH = 78
_PR_FUTEX_HASH_SET_SLOTS = 1
_PR_FUTEX_HASH_GET_SLOTS = 2
# At most this many buckets (64 bytes of kernel memory each: 8 MiB), whatever is asked for.
MAX_FUTEX_SLOTS = 1 << 17


def futex_hash_slots() -> int | None:
    """The buckets of this process's own futex hash table; 0 if it uses the kernel's global
    table, None where there is no such thing (not Linux, or a kernel older than 6.16)."""
    prctl = _prctl()
    if prctl is None:
        return None
    slots = prctl(_PR_FUTEX_HASH, _PR_FUTEX_HASH_GET_SLOTS, 0, 0, 0)
    return None if slots < 0 else int(slots)


def widen_futex_hash(sleepers: int) -> int | None:
    """Gives this process's futex hash table at least a bucket per expected sleeper (a power of
    two, at most MAX_FUTEX_SLOTS) if it has fewer; returns its size then (None: no such table).
    Never makes it smaller; leaves a process on the kernel's global table there."""
    current = futex_hash_slots()
    if not current:  # no private table (None), or the global one (0)
        return current
    wanted = min(MAX_FUTEX_SLOTS, 1 << max(0, sleepers - 1).bit_length())
    if wanted <= current:
        return current
    prctl = _prctl()
    assert prctl is not None
    if prctl(_PR_FUTEX_HASH, _PR_FUTEX_HASH_SET_SLOTS, wanted, 0, 0) != 0:
        log.debug("futex hash: %d buckets kept (could not have %d)", current, wanted)
        return current
    log.debug("futex hash: %d buckets instead of %d", wanted, current)
    return wanted


def _prctl() -> Callable[[int, int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # (only here: nothing else needs it)

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):  # pragma: no cover - a Linux without a C library's prctl
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def _poll_readable(fd: int, timeout: float | None) -> bool:
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else max(0.0, timeout) * 1000))
    return bool(select.select([fd], [], [], timeout)[0])
