"""Outbox: the bounded queue of bytes waiting to be sent to one client (its "SendQ")."""

from __future__ import annotations

import threading


class Outbox:
    """Bytes for one client, capped in bytes, drained in batches by the client's writer thread.

    `offer()` never blocks: it is called while the room lock is held, so it must not wait on a
    slow client. When the queue would exceed `max_bytes` it refuses, and the caller disconnects
    the client after releasing the room lock. `take_all()` hands the writer everything pending
    at once, so one `sendall()` carries many lines: the system-call cost of a busy room is paid
    per batch, not per line.

    Thread safety: `_lock` (a leaf lock: nothing else is acquired while holding it) guards the
    chunk list, the byte count and the closed flag. Any thread may offer; one writer takes.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0
        self._closed = False
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)

    def offer(self, data: bytes) -> bool:
        """Queues `data`; False only if the outbox is full (the client is too slow).

        After `close()` offers are discarded and accepted: the client is leaving anyway, and a
        refusal would wrongly blame it for being slow.
        """
        with self._lock:
            if self._closed:
                return True
            if self._size + len(data) > self._max_bytes:
                return False
            self._chunks.append(data)
            self._size += len(data)
            if len(self._chunks) == 1:  # the writer waits only on an empty outbox
                self._ready.notify()
            return True

    def take_all(self, timeout: float | None = None) -> bytes | None:
        """Waits for data and returns all of it; b"" on timeout, None once closed and drained."""
        with self._lock:
            if not self._chunks and not self._closed:
                self._ready.wait(timeout)
            if not self._chunks:
                return None if self._closed else b""
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            return data

    def close(self) -> None:
        """No more offers; the writer sends what is queued, then sees None. Idempotent."""
        with self._lock:
            self._closed = True
            self._ready.notify()

    @property
    def size(self) -> int:
        with self._lock:
            return self._size
