"""Redis restarted without its data (#12): what a message sent meanwhile gets.

Each node re-enters its own users through the new stream ("resync" entries). A request a user
made while Redis was away is retried; it must reach the new stream AFTER its sender's resync
entry, or every node applies it to a replica where the sender is in no room ("you are not in
#lobby": the line lost behind a misleading error). The race is forced, not left to luck: node
a's follower is held at the start of its resync (a hook on `_state_lost`) until alice's retried
line has either reached the new stream (the defect) or is held by her node (the fix).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from chat.cluster.hub import NICK_LOST, RESYNC_MISSED
from tests.benchmarking import quick_figures
from tests.peers import TextPeer, wait_until
from tests.valkey import Valkey

HEARTBEAT_S = 0.3
HOLD_TIMEOUT_S = 20.0


@pytest.fixture
def two_nodes(valkey: Valkey, make_server: Any) -> tuple[Any, Any]:
    """Two in-process nodes on one Valkey (valkey first: it is torn down after them)."""
    options = {"cluster_url": valkey.url, "cluster_heartbeat_s": HEARTBEAT_S, "flood_rate": 0}
    return make_server(**options), make_server(**options)


class HeldResync:
    """Holds a node's follower at the start of `_state_lost` until `release()`."""

    def __init__(self, hub: Any) -> None:
        self.entered = threading.Event()
        self._release = threading.Event()
        original: Callable[[], None] = hub._state_lost

        def held() -> None:
            self.entered.set()
            self._release.wait(HOLD_TIMEOUT_S)
            original()

        hub._state_lost = held  # the follower looks it up on the instance

    def release(self) -> None:
        self._release.set()


def _stream_texts(valkey: Valkey) -> list[str]:
    entries: Any = valkey.command("XRANGE", "threadroom:events", "-", "+")
    return [fields["c"] for _entry_id, fields in entries]


def _in_stream(valkey: Valkey, text: str) -> bool:
    return any(text in json.loads(c).get("a", ()) for c in _stream_texts(valkey))


def _lines_until_closed(peer: TextPeer) -> list[str]:
    lines = []
    while True:
        try:
            lines.append(peer.line(timeout=15))
        except (EOFError, ConnectionError):
            return lines


def _held(hub: Any) -> int:
    return int(getattr(hub, "held", 0))  # requests held until the node's resync


def _restart_with_alice_sending(
    valkey: Valkey, a: Any, alice: TextPeer, held: HeldResync, text: str
) -> None:
    """Redis stops; alice sends `text` while it is away; Redis comes back empty; a's follower
    is held at its resync until alice's retried line reached the stream or is held."""
    valkey.stop()
    alice.send(text + "\n")
    alice.expect("*** cluster link lost", timeout=15)
    valkey.start()
    assert held.entered.wait(15), "node a never noticed that Redis lost the chat"
    wait_until(lambda: _in_stream(valkey, text) or _held(a.hub) > 0, 15)


@pytest.mark.stress
@pytest.mark.timeout(90)
def test_a_line_sent_while_redis_restarts_empty_is_delivered_once_in_order(
    two_nodes: tuple[Any, Any], valkey: Valkey
) -> None:
    a, b = two_nodes
    alice = TextPeer(a.address, "alice")
    bob = TextPeer(b.address, "bob")
    alice.expect("*** bob joined")
    alice.send("before\n")
    bob.expect("<alice> before")
    held = HeldResync(a.hub)
    try:
        _restart_with_alice_sending(valkey, a, alice, held, "during the restart")
    finally:
        held.release()
    for n in range(3):
        alice.send(f"after {n}\n")
    seen = [bob.line(timeout=15)]
    while seen[-1] != "<alice> after 2":
        seen.append(bob.line(timeout=15))
    said = [line for line in seen if line.startswith("<alice>")]
    assert said == [
        "<alice> during the restart",
        "<alice> after 0",
        "<alice> after 1",
        "<alice> after 2",
    ], seen
    alice.send("/users\n")  # a barrier: every answer to alice's lines came before it
    told = [alice.line(timeout=15)]
    while not told[-1].startswith(("*** Online", "*** Users in")):
        told.append(alice.line(timeout=15))
    assert not [line for line in told if line.startswith("! ")], told  # no error at all
    assert sorted(a.hub.nicks()) == sorted(b.hub.nicks()) == ["alice", "bob"]
    assert a.hub.room_names("#lobby", None) == b.hub.room_names("#lobby", None)
    alice.close()
    bob.close()


@pytest.mark.stress
@pytest.mark.timeout(90)
def test_a_line_from_a_user_whose_nick_was_claimed_in_the_new_stream_is_refused_clearly(
    two_nodes: tuple[Any, Any], valkey: Valkey
) -> None:
    """While a's resync is held (longer than b waits for it), a newcomer on b takes "alice" in
    the new stream; alice's resync then finds the name taken: she is told so and disconnected,
    her held line is never delivered, and she never reads "you are not in #lobby". One holder
    of the name."""
    a, b = two_nodes
    b.hub.resync_wait_s = 0.2  # b does not wait long for a: the newcomer's claim goes first
    alice = TextPeer(a.address, "alice")
    bob = TextPeer(b.address, "bob")
    alice.expect("*** bob joined")
    held = HeldResync(a.hub)
    try:
        _restart_with_alice_sending(valkey, a, alice, held, "from the old alice")
        wait_until(lambda: b.hub.holder("bob") is not None, 15)  # b has resynced bob
        usurper = TextPeer(b.address, "alice")
    finally:
        held.release()
    lines = _lines_until_closed(alice)
    assert f"*** {NICK_LOST}" in lines, lines
    assert not [line for line in lines if "not in" in line], lines
    refusals = [line for line in lines if line.startswith("! ")]
    assert refusals in ([], [f"! not sent: {NICK_LOST}"]), lines
    usurper.send("hello\n")
    seen = [bob.line(timeout=15)]
    while seen[-1] != "<alice> hello":
        seen.append(bob.line(timeout=15))
    assert "<alice> from the old alice" not in seen
    wait_until(lambda: sorted(a.hub.nicks()) == sorted(b.hub.nicks()) == ["alice", "bob"], 15)
    alice.close()
    bob.close()
    usurper.close()


def _restart_with_bob_sending(
    valkey: Valkey, a: Any, b: Any, bob: TextPeer, held: HeldResync, text: str
) -> None:
    """Redis restarts empty; node b re-enters bob while a's resync is held; bob sends `text`,
    which reaches the stream (before alice is back) or is held by b."""
    valkey.stop()
    valkey.start()
    assert held.entered.wait(15), "node a never noticed that Redis lost the chat"
    wait_until(lambda: b.hub.holder("bob") is not None, 15)  # b has re-entered bob
    bob.send(text + "\n")
    wait_until(lambda: _in_stream(valkey, text) or _held(b.hub) > 0, 15)


@pytest.mark.stress
@pytest.mark.timeout(90)
def test_a_line_to_a_user_whose_node_is_still_resyncing_waits_for_that_user(
    two_nodes: tuple[Any, Any], valkey: Valkey
) -> None:
    """The receiving side: bob's line, sent once his own node has re-entered him but before
    alice's node has re-entered her, waits for her node's "resynced" and reaches her."""
    a, b = two_nodes
    alice = TextPeer(a.address, "alice")
    bob = TextPeer(b.address, "bob")
    alice.expect("*** bob joined")
    held = HeldResync(a.hub)
    try:
        _restart_with_bob_sending(valkey, a, b, bob, held, "are you back?")
    finally:
        held.release()
    bob.send("and now?\n")
    lines = [alice.line(timeout=15)]
    while lines[-1] != "<bob> and now?":
        lines.append(alice.line(timeout=15))
    said = [line for line in lines if line.startswith("<bob>")]
    assert said == ["<bob> are you back?", "<bob> and now?"], lines
    assert not [line for line in lines if "may not all have reached you" in line], lines
    alice.close()
    bob.close()


@pytest.mark.stress
@pytest.mark.timeout(90)
def test_a_node_that_resyncs_too_late_tells_its_users_they_may_have_missed_lines(
    two_nodes: tuple[Any, Any], valkey: Valkey
) -> None:
    """If alice's node is later than b's wait (a node that died with Redis never comes), b
    lets bob's line go; alice's node then applies it before alice is back, and tells her so
    (a notice, never silence)."""
    a, b = two_nodes
    b.hub.resync_wait_s = 0.2
    alice = TextPeer(a.address, "alice")
    bob = TextPeer(b.address, "bob")
    alice.expect("*** bob joined")
    held = HeldResync(a.hub)
    try:
        _restart_with_bob_sending(valkey, a, b, bob, held, "too early")
        wait_until(lambda: _in_stream(valkey, "too early"), 15)  # b waited, then let it go
    finally:
        held.release()
    notice = alice.expect("*** messages sent while", timeout=15)
    assert notice == f"*** {RESYNC_MISSED}"
    bob.send("and now?\n")
    alice.expect("<bob> and now?", timeout=15)
    alice.close()
    bob.close()


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_the_resync_benchmark_smoke_run() -> None:
    """benchmarks/cluster_resync.py --quick: it runs and gives its figures."""
    results = quick_figures("cluster_resync.py")
    assert results["resync"]["append one per round trip / batched"] > 0
