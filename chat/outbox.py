"""Outbox: the bounded queue of bytes waiting to be sent to one client (its "SendQ")."""

from __future__ import annotations

import threading


class Outbox:
    """Bytes for one client, capped in bytes, sent by whichever thread holds the claim.

    Any thread may `offer()`; it never blocks, because it is called under the room lock. When
    the queue would exceed `max_bytes` it refuses, and the caller disconnects the client after
    releasing the room lock.

    Sending is a claim: `claim()` hands out everything pending to one thread at a time, which
    sends it and calls `release()` with whatever it could not send. Two kinds of thread claim:

    * the thread that just queued a message (`Session.flush()`), right after it left the room
      lock, with a send that never blocks. In a healthy room this is the only path: no thread is
      woken to deliver a message, which is what makes fan-out cheap under the GIL;
    * the client's own writer thread (`claim_waiting()`), woken only when a release leaves bytes
      behind: the client's socket buffer was full, or more arrived during the send. It may block
      in `sendall()` for as long as the client is slow, holding the claim, while everyone else
      just queues (up to `max_bytes`).

    One claim at a time keeps the bytes in order: the queue is FIFO, and a remainder goes back in
    front of what was queued meanwhile. Claimed bytes count against `max_bytes` until released,
    so a client's memory is bounded by `max_bytes` whoever is sending.

    Thread safety: `_lock` (a leaf lock: nothing else is acquired while holding it) guards the
    chunks, the byte count, the claim flag and the closed flag. No I/O happens under it.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._chunks: list[bytes] = []
        self._size = 0  # queued bytes plus claimed bytes not yet released
        self._claimed = 0  # bytes handed out by the current claim; 0: nobody is sending
        self._closed = False
        self._lock = threading.Lock()
        self._writer_needed = threading.Condition(self._lock)

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
            self._chunks.append(data)
            self._size += len(data)
            return True

    def claim(self) -> bytes | None:
        """Everything pending, if nobody else is sending and anything is there; else None."""
        with self._lock:
            if self._claimed or not self._chunks:
                return None
            return self._take_locked()

    def claim_waiting(self) -> bytes | None:
        """For the writer thread: waits until bytes are left unsent, claims them.

        Returns None once the outbox is closed and empty: the writer's work is done.
        """
        with self._lock:
            while self._claimed or (not self._chunks and not self._closed):
                self._writer_needed.wait()
            if not self._chunks:
                return None
            return self._take_locked()

    def release(self, unsent: bytes = b"") -> None:
        """Ends a claim; `unsent` goes back in front. Wakes the writer if bytes are left."""
        with self._lock:
            if unsent:
                self._chunks.insert(0, unsent)
            self._size -= self._claimed - len(unsent)
            self._claimed = 0
            if self._chunks or self._closed:
                self._writer_needed.notify()

    def close(self) -> None:
        """No more offers; the writer sends what is queued, then sees None. Idempotent."""
        with self._lock:
            self._closed = True
            self._writer_needed.notify()

    @property
    def size(self) -> int:
        with self._lock:
            return self._size

    def _take_locked(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        # Never 0 (no empty chunk is queued); `_size` keeps counting these bytes until release().
        self._claimed = len(data)
        return data
