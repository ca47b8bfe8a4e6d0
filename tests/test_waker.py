"""The waker (chat/waker.py): readers sleep until their socket has input, and no more than the
run slots ever run at once, however many wake together."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest

from chat.waker import Waker, futex_hash_slots, new_park, widen_futex_hash
from tests.peers import wait_until

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


def test_arrivals_holding_every_newcomer_slot_do_not_keep_a_registered_reader_waiting() -> None:
    """A burst of newcomers (readers not registered yet) holds every newcomer's slot and more
    wait for one: a registered reader whose client speaks still runs at once (issue #14: with
    one kind of slot, a burst filled them all and the chatters waited behind it)."""
    waker = Waker(slots=1, newcomer_slots=1)
    waker.start()
    (ours, theirs), *arrivals = [socket.socketpair() for _ in range(3)]
    busy, done, woke = threading.Event(), threading.Event(), threading.Event()
    results: list[bool] = []

    def registered() -> None:
        ours.setblocking(False)
        waker.take_slot(ours.fileno())  # every reader starts as a newcomer
        try:
            results.append(waker.wait_readable(ours.fileno(), new_park(), JOIN_S))
            woke.set()
        finally:
            waker.give_slot()

    def newcomer(sock: socket.socket) -> None:
        waker.take_slot(sock.fileno())
        try:
            busy.set()
            done.wait(JOIN_S)  # registering, for as long as the test wants
        finally:
            waker.give_slot()

    threads = [threading.Thread(target=registered)]
    threads[0].start()
    try:
        wait_until(lambda: ours.fileno() in waker._sleeping)
        threads += [threading.Thread(target=newcomer, args=(s,)) for s, _ in arrivals]
        for thread in threads[1:]:
            thread.start()
        assert busy.wait(JOIN_S)
        theirs.send(b"x")
        assert woke.wait(JOIN_S), "the registered reader waited for the newcomers"
        assert not done.is_set()
    finally:
        done.set()
        for thread in threads:
            thread.join(JOIN_S)
        waker.stop()
        for a, b in [(ours, theirs), *arrivals]:
            a.close()
            b.close()
    assert results == [True]
    assert not any(thread.is_alive() for thread in threads)
    # Every slot came back, of both kinds.
    assert waker._slots.qsize() == 1
    assert waker._newcomer_slots.qsize() == 1


# -- the futex hash (issue #14: registration slowed as more readers slept) ---------------------


def _private_futex_hash() -> int:
    """This process's own futex hash size; skips where the kernel has none (before 6.16)."""
    slots = futex_hash_slots()
    if not slots:
        pytest.skip("no private futex hash table (Linux before 6.16, or the global table)")
    return slots


def test_widening_the_futex_hash_gives_a_power_of_two_and_never_shrinks_it() -> None:
    before = _private_futex_hash()
    wanted = max(before, 16) * 4 + 1  # not a power of two: rounded up
    got = widen_futex_hash(wanted)
    assert got is not None
    assert got >= wanted
    assert got & (got - 1) == 0
    assert futex_hash_slots() == got
    assert widen_futex_hash(2) == got  # asking for fewer keeps what there is


_SERVER_IN_A_FRESH_PROCESS = """
import sys
from chat.config import ServerConfig
from chat.server import ChatServer
from chat.waker import futex_hash_slots
with ChatServer(ServerConfig(host="127.0.0.1", port=0, max_clients=int(sys.argv[1]))):
    print(futex_hash_slots())
"""


def test_a_server_has_a_futex_bucket_per_client_it_may_have() -> None:
    """Each sleeping reader waits on a lock: a futex in the kernel's hash table, whose bucket
    every wake-up of another lock in it walks. The kernel sizes a process's own table by CPUs
    (16 buckets on 2 cores), so 10,000 sleepers made every hand-over of the interpreter lock
    walk ~600 of them and registration slowed with the number connected. The server asks for
    a bucket per client it may have. (A fresh process: the table never shrinks.)"""
    _private_futex_hash()
    max_clients = 3000
    done = subprocess.run(
        [sys.executable, "-c", _SERVER_IN_A_FRESH_PROCESS, str(max_clients)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert int(done.stdout.split()[-1]) >= max_clients
