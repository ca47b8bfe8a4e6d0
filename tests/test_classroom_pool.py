"""`--pool N`: a thread pool serves long-lived connections badly, and says so.

Client N+1 is accepted (the kernel and the server took it) and then waits, silent, in the pool's
queue until one of the first N leaves: what docs/classroom.md step 7 shows with chat-load.
"""

from __future__ import annotations

import time

import pytest

from chat.classroom import PoolRunner
from tests.peers import JsonPeer, Peer, wait_until


def _silent(peer: Peer) -> bool:
    """Whether nothing at all has arrived for `peer` (never blocks)."""
    peer.sock.setblocking(False)
    try:
        return not peer.sock.recv(1, 0x2)  # MSG_PEEK: b"" would be EOF, which is not silence
    except BlockingIOError:
        return True
    finally:
        peer.sock.settimeout(peer.timeout)


def test_client_n_plus_1_waits_silent_until_one_of_the_first_n_leaves(make_server):
    runner = PoolRunner(2)
    server = make_server(runner=runner)
    alice = JsonPeer(server.address, "alice")
    bob = JsonPeer(server.address, "bob")
    carol = JsonPeer(server.address)  # connects; says nothing yet
    wait_until(lambda: server.client_count == 3 and runner.waiting == 1)  # accepted, queued
    # Both pool threads serve alice and bob, who chat on; carol has not even been greeted.
    alice.send_json({"type": "message", "text": "hi"})
    assert bob.expect_type("message")["text"] == "hi"
    assert alice.sync()
    assert _silent(carol)
    assert runner.waiting == 1
    # One leaves: its thread takes carol, who is greeted and served like anyone.
    alice.send_json({"type": "quit"})
    alice.until_closed()
    carol.send_json({"type": "hello", "version": 1, "nick": "carol"})
    assert carol.expect_type("welcome")["nick"] == "carol"
    assert runner.waiting == 0
    bob.expect_type("join")
    bob.send_json({"type": "message", "text": "hello carol"})
    assert carol.expect_type("message")["text"] == "hello carol"


@pytest.mark.parametrize("queued", [1, 3])
def test_stop_with_clients_waiting_for_a_thread_ends_cleanly(make_server, queued):
    runner = PoolRunner(1)
    server = make_server(runner=runner)
    alice = JsonPeer(server.address, "alice")
    waiting = [Peer(server.address) for _ in range(queued)]
    wait_until(lambda: runner.waiting == queued)
    server.stop()  # every thread joined (the autouse fixture checks that none is left)
    assert runner.waiting == 0
    alice.expect_type("notice")  # "server shutting down"
    alice.until_closed()
    for peer in waiting:
        peer.until_closed()  # closed, never served: no greeting was owed
    assert server.client_count == 0
    assert server.audit.total == 0


def test_the_registration_deadline_runs_while_a_client_waits_for_a_thread(make_server):
    runner = PoolRunner(1)
    server = make_server(runner=runner, register_timeout_s=0.5)
    alice = JsonPeer(server.address, "alice")
    carol = JsonPeer(server.address)
    carol.send_json({"type": "hello", "version": 1, "nick": "carol"})  # in time, but unread
    wait_until(lambda: runner.waiting == 1)
    queued_at = time.monotonic()  # carol's connection (and its deadline) exists by now
    wait_until(lambda: time.monotonic() > queued_at + 0.5)  # the deadline has passed
    alice.send_json({"type": "quit"})
    alice.until_closed()
    # Carol gets a thread at last, and with it the news that her time is up (before her hello
    # is even read, so in text: the greeting, then the error).
    lines = carol.until_closed()
    assert lines[-1] == "! registration timed out", lines
    assert not any("welcome" in line for line in lines), lines
