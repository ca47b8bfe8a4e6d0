"""The cluster's follower (#12, third pass), on one real Valkey with two in-process nodes: a
node with no user in a room only numbers that room's messages, and its replica stays the same
as everyone's (who is there, operators, topic, the ids and order of what a user joining later
sees); and between long stretches of entries the follower waits for the sender.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers import IrcPeer, JsonPeer, wait_until
from tests.valkey import Valkey


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[Valkey]:
    server = Valkey(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def two_nodes(valkey: Valkey, make_server: Any) -> tuple[Any, Any]:
    """Two nodes without history (the case where a node with no user in a room skips its
    messages); valkey first: it is torn down after them."""
    options = {"cluster_url": valkey.url, "flood_rate": 0, "irc_port": 0}
    return make_server(**options), make_server(**options)


def _messages_until_pong(peer: JsonPeer) -> list[tuple[int, str, str]]:
    """The messages and actions (id, type, text) that arrive before the answer to a ping (a
    ping is a barrier across nodes: ClusterHub.barrier)."""
    return [(e["id"], e["type"], e["text"]) for e in peer.sync() if e["type"] in _SAID]


_SAID = ("message", "action")


def test_a_room_without_local_users_is_numbered_alike_and_a_later_joiner_agrees(
    two_nodes: tuple[Any, Any],
) -> None:
    a, b = two_nodes
    alice = JsonPeer(a.address, "alice")
    bob = JsonPeer(a.address, "bob")
    carol = JsonPeer(b.address, "carol")  # node b's users: in #lobby, not in #side
    dave = IrcPeer(b.irc_address, "dave")
    for peer in (alice, bob):
        peer.send_json({"type": "join", "room": "#side"})
        peer.expect_type("room")
    alice.send_json({"type": "topic", "room": "#side", "topic": "side talk"})
    before = b.hub.numbered_only
    for n in range(20):
        alice.send_json({"type": "message", "room": "#side", "text": f"before {n}"})
    alice.send_json({"type": "action", "room": "#side", "text": "waves"})
    alice.sync()  # her requests are applied on her node: they are in the stream
    seen_before = _messages_until_pong(bob)
    assert len(seen_before) == 21
    carol.sync()
    # Node b took the shortcut for every one of them (else this test would not test it) ...
    assert b.hub.numbered_only - before == 21
    # ... and its replica is node a's: members, operator, topic, the next event id.
    assert a.hub._next_id == b.hub._next_id
    carol.send_json({"type": "who", "room": "#side"})
    who = carol.expect_type("users")
    assert sorted(who["users"]) == ["alice", "bob"]
    assert who["operators"] == ["alice"]
    dave.send_line("NAMES #side")
    assert sorted(dave.expect_cmd("353").params[-1].split()) == ["@alice", "bob"]
    assert a.hub.check_invariants() == []
    assert b.hub.check_invariants() == []

    # Carol joins #side on node b: from then on node b applies #side in full, and both nodes
    # deliver the same messages with the same ids in the same order.
    carol.send_json({"type": "join", "room": "#side"})
    view = carol.expect_type("room")
    assert sorted(view["users"]) == ["alice", "bob", "carol"]
    assert view["topic"] == "side talk"
    bob.expect_type("join")
    for n in range(10):
        alice.send_json({"type": "message", "room": "#side", "text": f"after {n}"})
    alice.send_json({"type": "action", "room": "#side", "text": "nods"})
    alice.sync()
    bob_after = _messages_until_pong(bob)
    carol_after = _messages_until_pong(carol)
    assert len(bob_after) == 11
    assert carol_after == bob_after
    assert bob_after[0][0] > seen_before[-1][0]
    assert b.hub.numbered_only - before == 21
    for peer in (alice, bob, carol, dave):
        peer.close()


def test_with_history_a_node_without_local_users_still_records_for_a_later_joiner(
    valkey: Valkey, make_server: Any
) -> None:
    """History on: node b keeps #side's replay buffer although none of its users is there
    (no shortcut), so carol, joining later on node b, is replayed what bob saw, ids and all."""
    options = {"cluster_url": valkey.url, "flood_rate": 0, "history_db": ":memory:"}
    a, b = make_server(**options), make_server(**options)
    alice = JsonPeer(a.address, "alice")
    bob = JsonPeer(a.address, "bob")
    carol = JsonPeer(b.address, "carol")
    for peer in (alice, bob):
        peer.send_json({"type": "join", "room": "#side"})
        peer.expect_type("room")
    for n in range(5):
        alice.send_json({"type": "message", "room": "#side", "text": f"kept {n}"})
    alice.sync()
    seen = _messages_until_pong(bob)
    carol.sync()
    assert b.hub.numbered_only == 0
    carol.send_json({"type": "join", "room": "#side"})
    history = carol.expect_type("history")
    replayed = [(e["id"], e["type"], e["text"]) for e in history["messages"] if e["type"] in _SAID]
    assert replayed == seen
    wait_until(lambda: a.hub._next_id == b.hub._next_id)
    for peer in (alice, bob, carol):
        peer.close()


def test_the_follower_waits_for_the_sender_between_stretches_and_never_under_the_lock(
    two_nodes: tuple[Any, Any],
) -> None:
    """Entries pile up in the stream while node b is held up; then its follower applies them
    in one read and waits for its sender (flow control) between them, outside the hub lock,
    and bob gets every message in order."""
    a, b = two_nodes
    assert b.hub._wait_sent == b._sender.wait_idle  # ChatServer.start() attached it
    waits: list[tuple[str, bool]] = []

    def recording(timeout: float) -> bool:
        free = b.hub._lock.acquire(blocking=False)
        if free:
            b.hub._lock.release()
        waits.append((threading.current_thread().name, free))
        return bool(b._sender.wait_idle(timeout))

    b.hub._wait_sent = recording
    b.hub.yield_every_s = 0.0  # a wait after every entry
    alice = JsonPeer(a.address, "alice")
    bob = JsonPeer(b.address, "bob")
    alice.expect_type("join")
    with b.hub._lock:  # node b applies nothing now: the entries wait in the stream
        for n in range(20):
            alice.send_json({"type": "message", "text": f"m{n}"})
            alice.sync()  # one entry each
    texts = [text for _id, _type, text in _messages_until_pong(bob)]
    assert texts == [f"m{n}" for n in range(20)]
    assert len(waits) >= 19
    assert set(waits) == {("cluster-follow", True)}
    alice.close()
    bob.close()
