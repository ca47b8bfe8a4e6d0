"""Exactly-once and replay edges of the cluster (#12) that need Redis to fail at one instant.

* A request whose append Redis executed just before it died without its data, and whose reply
  never reached its node: the node retries it into the new stream. The nodes that delivered it
  from the old stream must not deliver it again; a node that had not read it must.
* Event ids after Redis lost its data: the same on every node, the running ones and one started
  afterwards, and above every id a user saw before.
* A node that loads a snapshot while the origin node's history writer has not yet written the
  last messages before it: its replay is the same as the other nodes'.

Every race is forced with a hook, never left to luck: the node's append script is wrapped so
that Redis executes it and the test restarts Redis before the node sees the reply (then the
reply is "lost": a ConnectionError, as when Redis dies with it); a node's follower is parked
before its XREAD; a node's history writer is held before it writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chat.cluster import history as cluster_history
from chat.hub import Hub
from chat.store.sqlite import SqliteStore
from tests.peers import JsonPeer, TextPeer, wait_until
from tests.valkey import Valkey

HEARTBEAT_S = 0.3
HOLD_TIMEOUT_S = 20.0


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[Valkey]:
    server = Valkey(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def cluster(valkey: Valkey, make_server: Any) -> Any:
    """Starts nodes on one Valkey (valkey first: it is torn down after them)."""
    options = {"cluster_url": valkey.url, "cluster_heartbeat_s": HEARTBEAT_S, "flood_rate": 0}

    def node(**more: Any) -> Any:
        return make_server(**{**options, **more})

    return node


class LostReply:
    """The node's append of the request carrying `text` is executed by Redis; the node then
    waits (`executed`, `go`) for the test to restart Redis empty, and never sees the reply."""

    def __init__(self, hub: Any, text: str) -> None:
        self.executed = threading.Event()
        self.go = threading.Event()
        self.entries: list[Any] = []
        real = hub._append

        def append(*, keys: Any, args: Any, client: Any) -> Any:
            entry = real(keys=keys, args=args, client=client)
            if not self.entries and text in str(args[0]):
                self.entries.append(entry)
                self.executed.set()
                self.go.wait(HOLD_TIMEOUT_S)
                raise redis.ConnectionError("the reply was lost with Redis (test)")
            return entry

        hub._append = append  # looked up on the instance


class ParkedReads:
    """Parks a node's follower before its next XREAD until `release()`: it reads nothing."""

    def __init__(self, hub: Any) -> None:
        self.parked = threading.Event()
        self._go = threading.Event()
        client = hub._reader
        real = client.xread

        def xread(*args: Any, **kwargs: Any) -> Any:
            if not self._go.is_set():
                self.parked.set()
                self._go.wait(HOLD_TIMEOUT_S)
            return real(*args, **kwargs)

        client.xread = xread

    def release(self) -> None:
        self._go.set()


def _in_stream(valkey: Valkey, text: str) -> bool:
    entries: Any = valkey.command("XRANGE", "threadroom:events", "-", "+")
    return any(text in json.loads(fields["c"]).get("a", ()) for _id, fields in entries)


def _lines_until(peer: TextPeer, last: str) -> list[str]:
    seen = [peer.line(timeout=15)]
    while seen[-1] != last:
        seen.append(peer.line(timeout=15))
    return seen


def _no_error_for(peer: TextPeer) -> None:
    peer.send("/users\n")  # a barrier: every answer to the peer's lines came before it
    told = [peer.line(timeout=15)]
    while not told[-1].startswith(("*** Online", "*** Users in")):
        told.append(peer.line(timeout=15))
    assert not [line for line in told if line.startswith("! ")], told


def _restart_empty(valkey: Valkey) -> None:
    valkey.stop()  # no persistence: it comes back without the chat
    valkey.start()


@pytest.mark.timeout(60)
def test_a_line_whose_reply_died_with_redis_is_not_delivered_twice(
    cluster: Any, valkey: Valkey
) -> None:
    """Both nodes delivered alice's line from the old stream; her node's retry goes into the
    new one; neither bob (other node) nor carol (her node) sees it again, and alice is told
    nothing went wrong."""
    a, b = cluster(), cluster()
    alice = TextPeer(a.address, "alice")
    carol = TextPeer(a.address, "carol")
    bob = TextPeer(b.address, "bob")
    carol.expect("*** bob joined")
    lost = LostReply(a.hub, "once")
    alice.send("once\n")
    assert lost.executed.wait(15)
    assert lost.entries[0], lost.entries  # Redis did append it
    bob.expect("<alice> once")
    carol.expect("<alice> once")
    _restart_empty(valkey)
    lost.go.set()
    wait_until(lambda: _in_stream(valkey, "once"), 15)  # the retry is in the new stream
    alice.send("after\n")
    for peer in (bob, carol):
        seen = _lines_until(peer, "<alice> after")
        assert "<alice> once" not in seen, seen
    _no_error_for(alice)
    assert sorted(a.hub.nicks()) == sorted(b.hub.nicks()) == ["alice", "bob", "carol"]
    for peer in (alice, bob, carol):
        peer.close()


@pytest.mark.timeout(60)
def test_a_line_whose_reply_died_with_redis_reaches_a_node_that_had_not_read_it(
    cluster: Any, valkey: Valkey
) -> None:
    """Node b's follower is parked: it never read alice's line from the old stream. The retry
    in the new stream reaches bob once; carol (alice's node, which delivered it before) does
    not get it again."""
    a, b = cluster(), cluster()
    alice = TextPeer(a.address, "alice")
    carol = TextPeer(a.address, "carol")
    bob = TextPeer(b.address, "bob")
    carol.expect("*** bob joined")
    reads = ParkedReads(b.hub)
    try:
        assert reads.parked.wait(15)
        lost = LostReply(a.hub, "once")
        alice.send("once\n")
        assert lost.executed.wait(15)
        carol.expect("<alice> once")
        _restart_empty(valkey)
        lost.go.set()
    finally:
        reads.release()
    alice.send("after\n")
    seen = _lines_until(bob, "<alice> after")
    assert [line for line in seen if line.startswith("<alice>")] == [
        "<alice> once",
        "<alice> after",
    ], seen
    seen = _lines_until(carol, "<alice> after")
    assert "<alice> once" not in seen, seen
    _no_error_for(alice)
    for peer in (alice, bob, carol):
        peer.close()


@pytest.mark.timeout(60)
def test_a_join_whose_reply_died_with_redis_leaves_the_user_linked(
    cluster: Any, valkey: Valkey
) -> None:
    """alice's very first request (her nickname) is the one whose reply died. Her node applied
    it from the old stream and re-entered her in the resync; the retry then meets her own
    name. She must stay a user of the cluster (she talks, she leaves), not be unlinked from
    it while her name stays taken everywhere."""
    a, b = cluster(), cluster()
    bob = TextPeer(b.address, "bob")
    alice = TextPeer(a.address)
    lost = LostReply(a.hub, '"o":"join"')
    alice.send("alice\n")
    assert lost.executed.wait(15)
    bob.expect("*** alice joined")
    alice.expect("* Hello ")  # her node applied it: the welcome came from the old stream
    _restart_empty(valkey)
    lost.go.set()
    wait_until(lambda: _in_stream(valkey, "alice") and a.hub.holder("alice") is not None, 15)
    alice.send("still here\n")
    seen = _lines_until(bob, "<alice> still here")
    assert seen.count("<alice> still here") == 1, seen
    _no_error_for(alice)
    alice.close()
    wait_until(lambda: list(a.hub.nicks()) == list(b.hub.nicks()) == ["bob"], 15)  # name free
    bob.close()


def _den(node: Any) -> list[str]:
    found = node.hub.room_names("#den", None)
    return sorted(user.lstrip("@") for user in found[1]) if found else []


@pytest.mark.timeout(60)
def test_a_part_whose_reply_died_with_redis_leaves_every_replica_and_view_alike(
    cluster: Any, valkey: Valkey
) -> None:
    """A change of state, not a line: b applied alice's part from the old stream; her own node
    a had not (its follower parked), so a's resync re-enters her in #den, told to bob. The
    retry is then applied by both nodes and told again: alice is out of #den on both, and the
    last bob heard of her there is that she left. (Skipping the retry on b would leave her in
    #den on b; muting it there would leave bob believing she is in.)"""
    a, b = cluster(), cluster()
    alice = TextPeer(a.address, "alice")
    bob = TextPeer(b.address, "bob")
    alice.expect("*** bob joined")
    for peer in (alice, bob):
        peer.send("/join #den\n")
    wait_until(lambda: _den(a) == _den(b) == ["alice", "bob"], 15)
    reads = ParkedReads(a.hub)
    try:
        assert reads.parked.wait(15)
        lost = LostReply(a.hub, '"o":"part"')
        alice.send("/part #den\n")
        assert lost.executed.wait(15)
        bob.expect("*** alice left #den")
        _restart_empty(valkey)
        lost.go.set()
    finally:
        reads.release()
    wait_until(lambda: _in_stream(valkey, "#den") and _den(a) == _den(b) == ["bob"], 15)
    bob.send("/users\n")  # a barrier: what b applied before is in bob's lines
    told = [bob.line(timeout=15)]
    while not told[-1].startswith(("*** Online", "*** Users in")):
        told.append(bob.line(timeout=15))
    # bob's current room is #den again after his resync: its lines name no room
    den = told[
        max(i for i, line in enumerate(told) if line.startswith("*** Now talking in #den")) :
    ]
    about = [line for line in den if line.startswith("*** alice")]
    # (re-entered in #den by her resync, before or after bob's: either way, told she left)
    assert about, told
    assert about[-1] == "*** alice left #den", told
    alice.close()
    bob.close()


def _said(peer: JsonPeer, text: str) -> dict[str, Any]:
    while True:
        event = peer.expect_type("message", timeout=15)
        if event["text"] == text:
            return event


@pytest.mark.timeout(60)
def test_event_ids_after_redis_lost_its_data_are_the_same_on_every_node(
    cluster: Any, valkey: Valkey
) -> None:
    """Node b is behind when Redis dies (its follower parked: it never applies alice's last
    lines), and node c starts after the loss. One line afterwards has one id on a, b and c,
    above every id anyone saw before."""
    a, b = cluster(), cluster()
    alice = JsonPeer(a.address, "alice")
    carol = JsonPeer(a.address, "carol")
    bob = JsonPeer(b.address, "bob")
    alice.expect_type("join")  # carol
    alice.expect_type("join")  # bob
    reads = ParkedReads(b.hub)
    try:
        assert reads.parked.wait(15)
        for n in range(3):
            alice.send_json({"type": "message", "text": f"b never reads {n}"})
        seen_before = _said(carol, "b never reads 2")["id"]
        _restart_empty(valkey)
    finally:
        reads.release()
    wait_until(lambda: sorted(b.hub.nicks()) == ["alice", "bob", "carol"], 15)
    c = cluster()  # from the new stream's start: its ids begin at 1
    dave = JsonPeer(c.address, "dave")
    wait_until(lambda: all("dave" in n.hub.nicks() for n in (a, b)), 15)
    alice.send_json({"type": "message", "text": "one id"})
    ids = {
        who: _said(peer, "one id")["id"] for who, peer in [("a", carol), ("b", bob), ("c", dave)]
    }
    assert len(set(ids.values())) == 1, ids
    assert ids["a"] > seen_before, (ids, seen_before)
    for peer in (alice, bob, carol, dave):
        peer.close()


class HeldWriter:
    """Holds a node's history writer before each batch it would write, until `release()`."""

    def __init__(self, store: Any) -> None:
        self._go = threading.Event()
        real = store._write

        def write(batch: Any) -> Any:
            self._go.wait(HOLD_TIMEOUT_S)
            return real(batch)

        store._write = write  # looked up on the instance by the writer thread

    def release(self) -> None:
        self._go.set()


@pytest.mark.timeout(60)
def test_a_node_loading_a_snapshot_before_the_writers_wrote_replays_the_same(
    cluster: Any, valkey: Valkey
) -> None:
    """alice's node has not written her last lines to Redis (its writer is held) when the
    snapshot is made and node c loads it: carol's replay on c is still bob's on b."""
    history = {"history_db": "cluster", "history_replay": 5}
    a, b = cluster(**history), cluster(**history)
    alice = JsonPeer(a.address, "alice")
    ann = JsonPeer(a.address, "ann")
    for peer in (alice, ann):
        peer.send_json({"type": "join", "room": "#den"})
        peer.sync()
    said = []

    def say(text: str) -> None:  # one line, one entry: ann saw it before the next
        alice.send_json({"type": "message", "room": "#den", "text": text})
        event = ann.expect_type("message", timeout=15)
        said.append((event["id"], event["text"]))

    for n in range(3):
        say(f"written {n}")
    wait_until(lambda: a.store.stats().written == 3)
    writer = HeldWriter(a.store)
    try:
        for n in range(3):
            say(f"not written yet {n}")
        number = int(str(valkey.command("GET", "threadroom:seq"))) + 1
        for node in (a, b):
            node.hub.snapshot_every = number  # the next entry's
        say("the snapshot's last")
        wait_until(lambda: valkey.command("HGET", "threadroom:snapshot", "n") == str(number), 15)
        c = cluster(**history)
        carol = JsonPeer(c.address, "carol")
        bob = JsonPeer(b.address, "bob")
        assert _replay(carol, "#den") == _replay(bob, "#den") == said[-5:]
    finally:
        writer.release()
    for peer in (alice, ann, bob, carol):
        peer.close()


def _replay(peer: JsonPeer, room: str) -> list[tuple[int, str]]:
    peer.send_json({"type": "join", "room": room})
    replay = peer.expect_type("history", timeout=15)
    assert replay["replay"] is True
    return [(m["id"], m["text"]) for m in replay["messages"]]


class _Quiet:
    def deliver(self, event: Any, cache: Any = None) -> bool:
        return True

    def flush(self) -> None:
        pass

    def drop(self, reason: str) -> None:
        pass


def test_a_snapshot_carries_each_buffers_recent_suffix_and_at_most_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pure of Redis: what `_carried_locked` takes from the replay buffers. From each buffer's
    first message of the last CARRIED_S on (a suffix: a later message with an older clock is
    carried too, or the buffer would have a hole), nothing from a buffer with none, and the
    newest `MAX_RECENT` of all when there are more."""
    now = [0.0]
    store = SqliteStore(str(tmp_path / "h.sqlite3"))
    store.start()
    try:
        hub = Hub(clock=lambda: now[0], store=store, replay=10)
        talker = _Quiet()
        hub.join(talker, "talker")
        hub.enter(talker, "#old")
        hub.enter(talker, "#new")
        old = cluster_history.time.time() - cluster_history.CARRIED_S - 60
        for n, ts in enumerate([old, old, old + 100, old, old + 100]):
            now[0] = ts
            hub.say(talker, f"n{n}", room="#new")
        now[0] = old
        hub.say(talker, "stale", room="#old")
        with hub._lock:
            carried = cluster_history._carried_locked(hub)
        assert [row[-1] for row in carried["#new"]] == ["n2", "n3", "n4"]
        assert "#old" not in carried
        monkeypatch.setattr(cluster_history, "MAX_RECENT", 2)
        with hub._lock:
            carried = cluster_history._carried_locked(hub)
        assert [row[-1] for row in carried["#new"]] == ["n3", "n4"]
    finally:
        store.stop(2.0)


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_the_edges_benchmark_smoke_run() -> None:
    """benchmarks/cluster_edges.py --quick: both parts run and give their figures."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "cluster_edges.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout)
    for mode in ("one at a time", "pipelined"):
        assert results["append script"][mode]["floor/before"] > 0
    assert results["snapshot"]["bytes per carried message"] > 0
