"""Sender: the one thread that writes to every client's socket.

Any thread that queued output for a client (in its Outbox) calls `ready(connection)`. The sender
thread then sends everything that client has queued in one non-blocking `send()`. What a socket
does not take waits until that socket is writable again (a selector), while the sender goes on
with everyone else: a slow client costs the others nothing; its outbox fills up and the hub
drops it.

Why one thread for all clients, and not one writer per client:

* **Coalescing.** While the sender sends to one client, messages for the others pile up in
  their outboxes, and each client gets all of its pending lines in one system call. The busier
  the room, the more lines per `send()`; when the room is quiet, every line goes out at once.
* **No wake-up per delivery.** A message to 100 members wakes one thread, not 100.
* **Memory.** A thread costs about 16 KiB; one per client is the reader.
* **No send races a close.** Only this thread sends (after the first greeting) and only it
  closes a client socket, so a socket number is never reused under a send in flight.

Thread safety: `_lock` (a leaf lock) guards `_ready`, `_retired`, `_woken`, `_stopping`,
`_taken` and `_rounds` (`_idle` is a Condition on it, for `wait_idle()`); everything else (the
selector, the set of blocked connections) belongs to the sender thread.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from typing import Protocol

log = logging.getLogger("chat.sender")


class Sendable(Protocol):
    """What the sender needs of a connection."""

    @property
    def socket(self) -> socket.socket: ...

    def send_queued(self) -> bool:
        """Sends what is queued without blocking; True if the socket is full (wait for it)."""
        ...

    def close_socket(self) -> None: ...


class Sender:
    """The sender thread and its to-do list; `start()`, then `ready()` from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[Sendable, None] = {}  # an insertion-ordered set: first come, first sent
        self._retired: list[Sendable] = []
        self._woken = False  # a wake-up byte is on its way: no need to send another
        self._stopping = False
        self._blocked: set[Sendable] = set()  # waiting for their socket to drain
        self._taken = 0  # rounds of the sender's loop that took their to-do list (wait_idle)
        self._rounds = 0  # rounds of the sender's loop completed (for wait_idle)
        self._idle = threading.Condition(self._lock)
        self.thread = threading.Thread(target=self._run, name="sender")

    def start(self) -> None:
        """Opens the wake-up socket pair and the selector, starts the thread."""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self.thread.start()

    def ready(self, session: Sendable) -> None:
        """`session` has something queued: send it soon. Never blocks; any thread."""
        with self._lock:
            self._ready[session] = None
            wake = not self._woken
            self._woken = True
        if wake:
            self._wake()

    def retire(self, session: Sendable) -> None:
        """`session` is over: close its socket, after any send in progress. Any thread."""
        with self._lock:
            self._retired.append(session)
            wake = not self._woken
            self._woken = True
        if wake:
            self._wake()

    def wait_idle(self, timeout: float) -> bool:
        """Waits, at most `timeout` seconds, until the sender has sent what every client had
        queued when this was called (as much as each socket takes: a client whose socket is
        full is not waited for). A real wake-up for the shutdown's goodbyes, not a poll."""
        with self._idle:
            # The first round to take its to-do list after this call: one in progress may have
            # taken it before what was queued. Woken below if no wake-up is on its way.
            wanted = self._taken + 1
            wake = not self._woken
            self._woken = True
        if wake:
            self._wake()
        with self._idle:
            return self._idle.wait_for(lambda: self._rounds >= wanted and not self._ready, timeout)

    def stop(self) -> None:
        """Closes what is retired, then ends the thread; call after every session is retired."""
        with self._lock:
            self._stopping = True
        self._wake()
        self.thread.join()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the sender thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            writable: list[Sendable] = []
            for key, _ in self._selector.select():
                if key.data is None:  # the wake-up socket
                    with contextlib.suppress(BlockingIOError):
                        self._wake_r.recv(4096)
                    continue
                self._unblock(key.data)
                writable.append(key.data)
            with self._lock:
                ready = list(self._ready)
                self._ready.clear()
                retired, self._retired = self._retired, []
                self._woken = False
                self._taken += 1
                stopping = self._stopping
            for session in writable + ready:
                if session not in self._blocked:  # else: its socket is still full
                    self._send(session)
            for session in retired:
                self._unblock(session)
                try:
                    session.close_socket()
                except Exception:  # see _send
                    log.exception("closing %r failed", session)
            with self._lock:
                self._rounds += 1
                if not self._ready:
                    self._idle.notify_all()
            if stopping:
                return

    def _send(self, session: Sendable) -> None:
        try:
            if session.send_queued():
                self._selector.register(session.socket, selectors.EVENT_WRITE, session)
                self._blocked.add(session)
        except Exception:  # a bug must cost one client, never the thread every client needs
            log.exception("sending to %r failed", session)

    def _unblock(self, session: Sendable) -> None:
        if session in self._blocked:
            self._blocked.discard(session)
            self._selector.unregister(session.socket)

    def _wake(self) -> None:
        # BlockingIOError: the socket pair is full, so a wake-up is pending anyway. OSError: the
        # sender has stopped, and there is nobody left to wake.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
