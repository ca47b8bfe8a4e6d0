"""The waker (chat/waker.py): readers sleep until their socket has input, and no more than the
run slots ever run at once, however many wake together."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from chat.waker import Waker, new_park

pytestmark = pytest.mark.skipif(not hasattr(__import__("select"), "epoll"), reason="epoll only")

JOIN_S = 10.0


class Readers:
    """`count` reader threads on socket pairs: each takes a slot, waits for input, counts how
    many are running (between its wake-up and giving its slot back), and ends."""

    def __init__(self, waker: Waker, count: int, timeout: float | None = None) -> None:
        self.pairs = [socket.socketpair() for _ in range(count)]
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.woken: list[bool] = []
        self.asleep = threading.Semaphore(0)
        self.threads = [
            threading.Thread(target=self._read, args=(waker, ours, timeout))
            for ours, _ in self.pairs
        ]
        for thread in self.threads:
            thread.start()

    def _read(self, waker: Waker, sock: socket.socket, timeout: float | None) -> None:
        sock.setblocking(False)
        waker.take_slot(sock.fileno())
        try:
            self.asleep.release()
            woke = waker.wait_readable(sock.fileno(), new_park(), timeout)
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
                self.woken.append(woke)
            time.sleep(0.001)  # a little work while holding the slot: others pile up
            with self.lock:
                self.running -= 1
        finally:
            waker.give_slot()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(JOIN_S)
            assert not thread.is_alive()
        for ours, theirs in self.pairs:
            ours.close()
            theirs.close()


def test_readers_woken_at_once_run_a_few_at_a_time() -> None:
    waker = Waker(slots=3)
    waker.start()
    try:
        readers = Readers(waker, 40)
        for _ in readers.pairs:
            assert readers.asleep.acquire(timeout=JOIN_S)
        for _, theirs in readers.pairs:  # every client hangs up at once
            theirs.close()
        readers.join()
    finally:
        waker.stop()
    assert readers.woken == [True] * 40
    assert readers.most <= 3


def test_a_reader_whose_input_never_comes_times_out_and_keeps_its_slot_count() -> None:
    waker = Waker(slots=2)
    waker.start()
    try:
        readers = Readers(waker, 4, timeout=0.05)
        readers.join()
        # Every slot came back: two more readers with input both run.
        more = Readers(waker, 2)
        for _, theirs in more.pairs:
            theirs.send(b"x")
        more.join()
    finally:
        waker.stop()
    assert readers.woken == [False] * 4
    assert more.woken == [True, True]
