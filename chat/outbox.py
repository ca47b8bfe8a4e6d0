"""Outbox: the bounded queue of bytes waiting to be sent to one client (its "SendQ")."""

from __future__ import annotations

import _thread
import threading
from typing import Protocol

from chat import events as ev


class Output(Protocol):
    """Where a connection's bytes go: the Outbox below, or the classroom's naive direct send.

    The connection queues with `offer()` (never blocks in the real design), the sender thread
    moves bytes with `claim()`/`release()`, and the end of a session uses the rest.
    """

    # Why a client whose output refused a line is disconnected.
    refusal_reason: str

    def offer(self, data: bytes) -> bool: ...
    def claim(self) -> bytes | None: ...
    def release(self, unsent: bytes = b"") -> None: ...
    def close(self) -> None: ...
    def discard(self) -> None: ...
    @property
    def drained(self) -> bool: ...
    def wait_drained(self, timeout: float) -> bool: ...
    def wait_room(self, nbytes: int, timeout: float) -> bool: ...
    @property
    def size(self) -> int:
        """Bytes queued and not sent yet."""
        ...


class Outbox:
    """Bytes for one client, capped in bytes, handed to the sender thread all at once.

    Any thread may `offer()`; it never blocks, because it is called under the hub lock. When the
    queue would exceed `max_bytes` it refuses, and the caller disconnects the client after
    releasing the hub lock.

    The sender thread (chat/sender.py) takes everything pending with `claim()`, sends what the
    socket takes without blocking, and gives the rest back with `release()`; the rest goes back
    in front of what was queued meanwhile, so the bytes stay in order. Claimed bytes count
    against `max_bytes` until released, so a client's memory is bounded by `max_bytes` however
    slow it is. `claim()` hands out one claim at a time (a second one gets None), so a second
    sending thread (a test, a demo) cannot reorder the bytes either.

    Thread safety: `_lock` (a leaf lock: nothing else is acquired while holding it) guards the
    chunks, the byte count, the claim and the closed flag. No I/O happens under it.
    """

    __slots__ = ("_changed", "_chunks", "_claimed", "_closed", "_lock", "_max_bytes", "_size")

    refusal_reason = ev.LeaveReason.SENDQ_EXCEEDED

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        # What waits to be sent; None when nothing does (an idle client keeps no list, #14).
        self._chunks: list[bytes] | None = None
        self._size = 0  # queued bytes plus claimed bytes not yet released
        self._claimed = 0  # bytes handed out by the current claim; 0: nobody is sending
        self._closed = False
        self._lock = threading.Lock()
        # Made by the first wait_drained() or wait_room(): most clients never need one.
        self._changed: threading.Condition | None = None

    def offer(self, data: bytes) -> bool:
        """Queues `data`; False only if the outbox is full (the client is too slow).

        After `close()` offers are discarded and accepted: the client is leaving anyway, and a
        refusal would wrongly blame it for being slow.
        """
        with self._lock:
            if self._closed or not data:
                return True
            if self._size + len(data) > self._max_bytes:
                return False
            if self._chunks is None:
                self._chunks = [data]
            else:
                self._chunks.append(data)
            self._size += len(data)
            return True

    def claim(self) -> bytes | None:
        """Everything pending, if nobody else is sending and anything is there; else None."""
        with self._lock:
            if self._claimed or self._chunks is None:
                return None
            data = b"".join(self._chunks)
            self._chunks = None
            # Never 0 (no empty chunk is queued); `_size` counts these bytes until release().
            self._claimed = len(data)
            return data

    def release(self, unsent: bytes = b"") -> None:
        """Ends a claim; `unsent` goes back in front of anything queued meanwhile."""
        with self._lock:
            if unsent:
                self._chunks = [unsent] if self._chunks is None else [unsent, *self._chunks]
            self._size -= self._claimed - len(unsent)
            self._claimed = 0
            if self._changed is not None:
                self._changed.notify_all()

    def close(self) -> None:
        """No more offers; what is queued may still be claimed and sent. Idempotent."""
        with self._lock:
            self._closed = True
            if self._changed is not None:
                self._changed.notify_all()

    def discard(self) -> None:
        """Closes and forgets what is queued: the client is gone, or is being cut off."""
        with self._lock:
            self._closed = True
            if self._chunks is not None:
                self._size -= sum(map(len, self._chunks))
                self._chunks = None
            if self._changed is not None:
                self._changed.notify_all()

    @property
    def drained(self) -> bool:
        """Closed, and every byte sent: the client has been told everything."""
        with self._lock:
            return self._is_drained_locked()

    def wait_drained(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds for `drained`; returns it."""
        with self._lock:
            if self._changed is None:
                self._changed = threading.Condition(self._lock)
            return self._changed.wait_for(self._is_drained_locked, timeout)

    def wait_room(self, nbytes: int, timeout: float) -> bool:
        """Waits up to `timeout` seconds until `nbytes` more would fit (or the outbox is
        closed); returns whether they fit. Only a connection's own reader calls this, to send a
        reply too large for one offer in pieces: it waits for its own client, nobody else.
        More than the whole queue never fits: False at once, not after `timeout`."""
        with self._lock:
            if nbytes > self._max_bytes:
                return self._closed
            if self._changed is None:
                self._changed = threading.Condition(self._lock)
            return self._changed.wait_for(
                lambda: self._closed or self._size + nbytes <= self._max_bytes, timeout
            )

    @property
    def size(self) -> int:
        with self._lock:
            return self._size

    @property
    def lock(self) -> _thread.LockType:
        """The leaf lock that guards this outbox. Its connection guards its own few flags with
        it too: one lock per client instead of two (#14). Both hold it for an assignment or
        one non-blocking system call and take no other lock meanwhile, so sharing it cannot
        deadlock; it only means they never hold it at the same moment."""
        return self._lock

    def _is_drained_locked(self) -> bool:
        return self._closed and self._size == 0
