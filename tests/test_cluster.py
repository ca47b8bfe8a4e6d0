"""The cluster (chat/cluster): several servers on one real Valkey are one chat.

In-process nodes (two ChatServers on one Valkey) for the chat itself; real `chat-server`
processes for start-up errors, chat-load over two nodes, and a node killed with SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chat.cluster import redact
from loadtool import LoadConfig, run_load
from loadtool.run import _order_disagreements
from tests.peers import IrcPeer, JsonPeer, TextPeer, wait_until
from tests.valkey import Node, Valkey, free_port

HEARTBEAT_S = 0.3  # a killed node is gone within ~5 heartbeats


@pytest.fixture
def two_nodes(valkey: Valkey, make_server: Any) -> tuple[Any, Any]:
    """Two in-process nodes on one Valkey (valkey first: it is torn down after them)."""
    options = {
        "cluster_url": valkey.url,
        "cluster_heartbeat_s": HEARTBEAT_S,
        "flood_rate": 0,
        "irc_port": 0,
    }
    return make_server(**options), make_server(**options)


@pytest.fixture
def nodes(tmp_path: Path, valkey: Valkey) -> Iterator[list[Node]]:
    """Real chat-server processes on `valkey`: call `start()` on the list's helper."""
    started: list[Node] = []
    yield started
    for node in started:
        if node.process.poll() is None:
            node.stop()


def _lines_until(peer: TextPeer, wanted: str) -> list[str]:
    """Every line up to and including `wanted`."""
    lines = [peer.line()]
    while lines[-1] != wanted:
        lines.append(peer.line())
    return lines


# -- pure parts ------------------------------------------------------------------------------


def test_credentials_are_redacted_from_urls() -> None:
    assert redact("redis://:s3cret@db:6379/0") == "redis://:***@db:6379/0"
    assert redact("rediss://chat:s3cret@db:6380/1") == "rediss://chat:***@db:6380/1"
    assert redact("redis://db:6379/0") == "redis://db:6379/0"


def test_room_order_check_counts_a_receiver_that_disagrees() -> None:
    from array import array

    # slots 0..3 are four messages; bot 0 and bot 1 saw 0,1,2,3; bot 2 saw 0,2,1,3
    same = [array("i", [0, 1, 2, 3]), array("i", [0, 1, 2, 3])]
    assert _order_disagreements([*same, array("i", [0, 1, 2, 3])], 4) == 0
    assert _order_disagreements([*same, array("i", [0, 2, 1, 3])], 4) == 2  # once per reference


def test_the_single_process_default_never_imports_redis() -> None:
    code = (
        "import sys, chat.__main__, chat.server, chat.config;"
        "from chat.server import ChatServer; from chat.config import ServerConfig;"
        "ChatServer(ServerConfig(port=0));"
        "assert 'redis' not in sys.modules and 'chat.cluster' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# -- one chat over two nodes -----------------------------------------------------------------


def test_users_on_two_nodes_talk_in_one_room(two_nodes: tuple[Any, Any]) -> None:
    a, b = two_nodes
    alice = TextPeer(a.address, "alice")
    bob = TextPeer(b.address, "bob")
    alice.expect("*** bob joined")
    alice.send("hello bob\n")
    assert bob.expect("<alice>") == "<alice> hello bob"
    bob.send("/msg alice psst\n")
    assert alice.expect("[private]") == "[private] <bob> psst"
    bob.send("/quit\n")
    alice.expect("*** bob left")
    alice.close()
    bob.close()


def test_one_nickname_namespace_across_nodes(two_nodes: tuple[Any, Any]) -> None:
    """Pairs of clients on two nodes ask for one name at the same instant: exactly one wins
    each time (the stream orders the two claims; every node applies the first)."""
    a, b = two_nodes
    for round_ in range(8):
        nick = f"twin{round_}"
        barrier = threading.Barrier(2)
        results: dict[str, str] = {}

        def claim(
            node: Any, side: str, nick: str = nick, barrier: Any = barrier, results: Any = results
        ) -> None:
            peer = JsonPeer(node.address)
            barrier.wait(5)
            peer.send_json({"type": "hello", "version": 1, "nick": nick})
            event = peer.event()
            while event["type"] not in ("welcome", "error"):
                event = peer.event()
            results[side] = event["type"]
            barrier.wait(5)  # both answered before either leaves (and frees the name)
            peer.close()

        threads = [
            threading.Thread(target=claim, args=(node, side)) for node, side in ((a, "a"), (b, "b"))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert sorted(results.values()) == ["error", "welcome"], results
        wait_until(lambda: not a.hub.nicks() and not b.hub.nicks())


def test_rooms_modes_renames_and_kicks_span_nodes(two_nodes: tuple[Any, Any]) -> None:
    a, b = two_nodes
    alice = IrcPeer(a.irc_address, "alice")
    bob = IrcPeer(b.irc_address, "bob")
    alice.send_line("JOIN #ops")
    alice.expect_cmd("366")
    alice.send_line("MODE #ops +k sesame")
    alice.expect_cmd("MODE")
    bob.send_line("JOIN #ops")
    bob.expect_cmd("475")  # the key, checked on bob's node against alice's setting
    bob.send_line("JOIN #ops sesame")
    names = bob.expect_cmd("353")
    assert "@alice" in names.params[-1].split()  # alice's operator status crossed over
    assert alice.expect_cmd("JOIN").source.startswith("bob!")
    bob.send_line("NICK alice")
    bob.expect_cmd("433")  # taken on the other node
    bob.send_line("NICK robert")
    assert alice.expect_cmd("NICK").params == ("robert",)
    alice.send_line("TOPIC #ops :cluster topic")
    assert bob.expect_cmd("TOPIC").params[-1] == "cluster topic"
    alice.send_line("KICK #ops robert :test")
    kick = bob.expect_cmd("KICK")
    assert kick.params[:2] == ("#ops", "robert")
    bob.send_line("PRIVMSG #ops :still here?")
    bob.expect_cmd("404")  # not in the room any more, on its own node too
    bob.send_line("WHOIS alice")
    assert bob.expect_cmd("311").params[1] == "alice"
    alice.close()
    bob.close()


def test_real_names_and_away_are_known_on_every_node(two_nodes: tuple[Any, Any]) -> None:
    a, b = two_nodes
    alice = IrcPeer(a.irc_address)
    alice.send("NICK alice\r\nUSER al 0 * :Alice Liddell\r\n")
    alice.expect_cmd("422")
    bob = IrcPeer(b.irc_address, "bob")
    alice.send_line("AWAY :down the rabbit hole")
    assert alice.msg().command == "306"  # in the stream: applied on her node
    bob.sync()  # a delivery barrier: bob's node has applied the stream as far as it went
    bob.send_line("WHOIS alice")
    replies = {m.command: m.params for m in bob.sync()}
    assert replies["311"][-1] == "Alice Liddell"
    assert replies["301"][1:] == ("alice", "down the rabbit hole")
    bob.send_line("PRIVMSG alice :are you there?")
    assert bob.expect_cmd("301").params[-1] == "down the rabbit hole"


# -- real chat-server processes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:1/0", "bad cluster URL"),
        # redis-py reads "/abc" as database 0 and "/1/2" as database 12: a typo, never obeyed.
        ("redis://127.0.0.1:{port}/abc", "the database is a number"),
        ("redis://127.0.0.1:{port}/1/2", "the database is a number"),
        ("redis://:wrong-s3cret@127.0.0.1:{port}/0", "refused to log us in"),
        ("redis://127.0.0.1:{port}/0", "refused to log us in"),  # no password given
        ("redis://127.0.0.1:{free}/0", "cannot use Redis at"),  # nothing listening there
    ],
)
def test_a_cluster_that_cannot_be_used_is_one_line_and_exit_2(
    tmp_path: Path, url: str, says: str
) -> None:
    guarded = Valkey(tmp_path, password="right-s3cret").start()
    try:
        url = url.format(port=guarded.port, free=free_port())
        done = subprocess.run(
            [sys.executable, "-m", "chat", "--port", "0", "--cluster", url],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        guarded.stop()
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("chat-server: ")
    assert says in lines[0]
    assert "s3cret" not in done.stderr  # credentials are never shown


def test_chat_load_over_two_node_processes_loses_nothing_in_one_order(
    tmp_path: Path, valkey: Valkey, nodes: list[Node]
) -> None:
    nodes += [Node(tmp_path, valkey.url, name="a"), Node(tmp_path, valkey.url, name="b")]
    config = LoadConfig(
        clients=20,
        messages=20,
        rate=0,
        duration=60,
        servers=(nodes[0].address, nodes[1].address),
    )
    report = run_load(config)
    assert report.ok, report.format_text()
    assert report.room_order_checked
    assert report.deliveries_received == 20 * 19 * 20
    for node in nodes:
        assert node.stop() == 0
        assert "Traceback" not in node.log()


def test_a_node_killed_with_sigkill_is_noticed_and_its_nicks_freed(
    tmp_path: Path, valkey: Valkey, nodes: list[Node]
) -> None:
    heartbeat = ("--cluster-heartbeat", str(HEARTBEAT_S))
    nodes += [Node(tmp_path, valkey.url, *heartbeat, name="doomed")]
    nodes += [Node(tmp_path, valkey.url, *heartbeat, name="survivor")]
    doomed, survivor = nodes
    alice = TextPeer(doomed.address, "alice")
    bob = TextPeer(survivor.address, "bob")
    alice.expect("*** bob joined")
    doomed.kill()
    # Within the heartbeat's bound (5 heartbeats; the wait allows several times that).
    assert bob.expect("*** alice left", timeout=20 * HEARTBEAT_S) == (
        "*** alice left (their server went away)"
    )
    again = TextPeer(survivor.address, "alice")  # the name is free again
    bob.expect("*** alice joined")
    again.close()
    bob.close()
    alice.close()


@pytest.mark.parametrize("racy", [False, True], ids=["atomic-claims", "racy-demo"])
def test_nick_clash_across_nodes_only_the_racy_demo_gives_one_name_twice(
    valkey: Valkey, make_server: Any, racy: bool
) -> None:
    """chat-load --nick-clash with the twins of each pair on different nodes. The real claim
    is one entry in the stream, first wins everywhere: never two holders. The classroom's demo
    (--racy-cluster-claims: check on this node, then claim unconditionally) gives one name to
    both twins: the check-then-act race again, now between processes."""
    options = {
        "cluster_url": valkey.url,
        "cluster_heartbeat_s": HEARTBEAT_S,
        "flood_rate": 0,
        "cluster_racy_claims": racy,
    }
    a, b = make_server(**options), make_server(**options)
    for _run in range(2):  # the demo works run after run on the same servers (a classroom)
        config = LoadConfig(
            clients=40, messages=1, nick_clash=True, duration=30, servers=(a.address, b.address)
        )
        report = run_load(config)
        assert report.joined == 40, report
        assert (report.nick_clash_both_won > 0) == racy, report
        wait_until(lambda: not a.hub.nicks() and not b.hub.nicks())
        assert a.hub.check_invariants() == b.hub.check_invariants() == []


def test_servers_without_the_demo_flag_replay_the_demos_stream_and_are_right(
    valkey: Valkey, make_server: Any
) -> None:
    """docs/classroom.md runs the demo (--racy-cluster-claims), stops both servers and starts
    them again without the flag on the same Redis. The new servers replay what the demo wrote,
    two holders of a name included: every bot joins, no name is given twice, no replica breaks
    (a node without the flag once applied the demo's leaves as if names were unique: KeyError,
    and nobody could join)."""
    options = {"cluster_url": valkey.url, "cluster_heartbeat_s": HEARTBEAT_S, "flood_rate": 0}
    demo = [make_server(**options, cluster_racy_claims=True) for _ in range(2)]
    config = LoadConfig(
        clients=40, messages=1, nick_clash=True, duration=30, servers=tuple(s.address for s in demo)
    )
    assert run_load(config).nick_clash_both_won > 0
    for server in demo:
        server.stop()
    fixed = [make_server(**options) for _ in range(2)]
    report = run_load(replace(config, servers=tuple(s.address for s in fixed)))
    assert report.joined == 40, report
    assert report.nick_clash_both_won == 0, report
    wait_until(lambda: not fixed[0].hub.nicks() and not fixed[1].hub.nicks())
    assert fixed[0].hub.check_invariants() == fixed[1].hub.check_invariants() == []


# -- Redis away: paused (a partition), gone long, restarted empty ------------------------------


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_redis_paused_for_5_s_loses_nothing_and_frees_no_nick(
    two_nodes: tuple[Any, Any], valkey: Valkey
) -> None:
    """SIGSTOP for 5 s: everyone is told the link is lost; a message sent meanwhile waits (its
    request retries) and is delivered once Redis is back, once; nobody is declared gone."""
    a, b = two_nodes
    alice = TextPeer(a.address, "alice")
    bob = TextPeer(b.address, "bob")
    alice.expect("*** bob joined")
    valkey.pause()
    try:
        alice.send("sent during the pause\n")
        assert (
            bob.expect("*** cluster link lost", timeout=10) == "*** cluster link lost, reconnecting"
        )
        alice.expect("*** cluster link lost", timeout=10)
        paused_at = time.monotonic()
        while time.monotonic() - paused_at < 5:
            with pytest.raises(TimeoutError):  # nothing arrives while Redis is stopped
                bob.expect("<alice>", timeout=5 - (time.monotonic() - paused_at) + 0.01)
    finally:
        valkey.resume()
    seen: list[str] = []
    while not {"<alice> sent during the pause", "*** cluster link restored"} <= set(seen):
        seen.append(bob.line(timeout=10))
    alice.send("after\n")
    lines = _lines_until(bob, "<alice> after")
    assert "<alice> sent during the pause" not in lines  # exactly once
    assert not any("left" in line for line in lines), lines  # nobody declared gone
    assert sorted(a.hub.nicks()) == sorted(b.hub.nicks()) == ["alice", "bob"]
    alice.close()
    bob.close()


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_a_message_sent_while_redis_is_away_too_long_is_refused_never_delivered_later(
    two_nodes: tuple[Any, Any], valkey: Valkey
) -> None:
    a, b = two_nodes
    a.hub.request_timeout_s = b.hub.request_timeout_s = 1.0
    alice = TextPeer(a.address, "alice")
    bob = TextPeer(b.address, "bob")
    alice.expect("*** bob joined")
    valkey.pause()
    try:
        alice.send("lost cause\n")
        refusal = alice.expect("! ", timeout=10)
        assert refusal == "! cluster link lost: not sent, try again in a moment"
    finally:
        valkey.resume()  # the request's bytes may still be in Redis's socket: it refuses them
    bob.expect("*** cluster link restored", timeout=10)
    alice.send("after\n")
    lines = _lines_until(bob, "<alice> after")
    assert "<alice> lost cause" not in lines  # told "not sent": it was not, and never will be
    alice.close()
    bob.close()


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_redis_restarted_empty_resynchronises_membership(
    two_nodes: tuple[Any, Any], valkey: Valkey
) -> None:
    """Without persistence a restarted Redis has forgotten the chat: each node notices (the
    epoch key is gone), tells its users, and re-enters them (nickname, rooms, operator status,
    key, real name, away message) through the new stream: one chat again, every nick held
    once, the room's key kept."""
    a, b = two_nodes
    alice = IrcPeer(a.irc_address, "alice")
    bob = IrcPeer(b.irc_address, "bob")
    alice.send_line("JOIN #ops")
    alice.expect_cmd("366")
    alice.send_line("MODE #ops +k sesame")
    alice.expect_cmd("MODE")
    bob.send_line("JOIN #ops sesame")
    bob.expect_cmd("366")
    alice.expect_cmd("JOIN")
    alice.send_line("AWAY :rebuilding")
    alice.expect_cmd("306")
    valkey.restart()
    for peer in (alice, bob):
        notice = peer.expect_cmd("NOTICE", timeout=15)
        while "without its data" not in notice.params[-1]:
            notice = peer.expect_cmd("NOTICE", timeout=15)
    wait_until(lambda: sorted(a.hub.nicks()) == sorted(b.hub.nicks()) == ["alice", "bob"], 15)
    wait_until(lambda: a.hub.room_names("#ops", None) == b.hub.room_names("#ops", None), 15)
    assert a.hub.room_names("#ops", None) == ("#ops", ("@alice", "bob"))
    assert a.hub.room_modes("#ops", None) is not None
    for node in (a, b):
        assert node.hub.identity_of("alice")[2:] == ("Real Name", "rebuilding")
    carol = IrcPeer(b.irc_address, "carol")
    carol.send_line("JOIN #ops")
    carol.expect_cmd("475")  # the key survived the restart
    bob.send_line("PRIVMSG #ops :back")
    message = alice.expect_cmd("PRIVMSG", timeout=10)
    assert message.params == ("#ops", "back")
    for peer in (alice, bob, carol):
        peer.close()


def test_a_stopping_node_says_goodbye_for_each_of_its_users(
    valkey: Valkey, make_server: Any
) -> None:
    options = {"cluster_url": valkey.url, "cluster_heartbeat_s": HEARTBEAT_S}
    a, b = make_server(**options), make_server(**options)
    alice = TextPeer(a.address, "alice")
    bob = TextPeer(b.address, "bob")
    alice.expect("*** bob joined")
    a.stop()
    assert bob.expect("*** alice left") == "*** alice left (server shutting down)"
    assert b.hub.nicks() == ("bob",)
    alice.close()
    bob.close()


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_a_node_paused_past_the_liveness_bound_comes_back_without_its_users(
    tmp_path: Path, valkey: Valkey, nodes: list[Node]
) -> None:
    """SIGSTOP on a chat-server: the others declare it gone; when it resumes it applies its
    own "node gone" and disconnects its users with a reason (they reconnect)."""
    heartbeat = ("--cluster-heartbeat", str(HEARTBEAT_S))
    nodes += [Node(tmp_path, valkey.url, *heartbeat, name="sleepy")]
    nodes += [Node(tmp_path, valkey.url, *heartbeat, name="awake")]
    sleepy, awake = nodes
    alice = TextPeer(sleepy.address, "alice")
    bob = TextPeer(awake.address, "bob")
    alice.expect("*** bob joined")
    sleepy.process.send_signal(signal.SIGSTOP)
    try:
        assert bob.expect("*** alice left", timeout=20 * HEARTBEAT_S) == (
            "*** alice left (their server went away)"
        )
    finally:
        sleepy.process.send_signal(signal.SIGCONT)
    lines = alice.until_closed(timeout=10)
    assert "*** this server lost its link to the cluster" in lines
    again = TextPeer(sleepy.address, "alice")  # it serves again, one chat with the others
    bob.expect("*** alice joined")
    again.close()
    bob.close()


def test_a_new_node_starts_from_a_snapshot_and_the_stream_is_trimmed(
    valkey: Valkey, make_server: Any
) -> None:
    """Every few entries a snapshot of the replica goes to Redis and the stream is trimmed
    behind the one before; a node started later loads the latest snapshot and replays only
    what follows: the same users (real names and away messages too), rooms, operators, keys
    and topics as the others."""
    from chat.cluster import ClusterHub

    def node() -> Any:
        hub = ClusterHub(valkey.url, "#lobby", heartbeat_s=HEARTBEAT_S)
        hub.snapshot_every = 20
        return make_server(hub=hub, irc_port=0, flood_rate=0)

    a, b = node(), node()
    alice = IrcPeer(a.irc_address, "alice")
    bob = IrcPeer(b.irc_address, "bob")
    alice.send_line("JOIN #ops")
    alice.expect_cmd("366")
    alice.send_line("MODE #ops +k sesame")
    alice.send_line("TOPIC #ops :kept in the snapshot")
    alice.expect_cmd("TOPIC")
    bob.send_line("JOIN #ops sesame")
    bob.expect_cmd("366")
    bob.send_line("AWAY :in the snapshot too")
    bob.expect_cmd("306")
    for i in range(70):  # one entry each: bob sees each before alice sends the next
        alice.send_line(f"PRIVMSG #ops :line {i}")
        assert bob.expect_cmd("PRIVMSG").params[-1] == f"line {i}"
    entries = int(str(valkey.command("XLEN", "threadroom:events")))
    assert entries < 70  # trimmed: between one and two snapshot intervals are left

    def snapshots() -> tuple[int, int]:
        """(snapshots saved, snapshots built by a and b)"""
        saved = int(str(valkey.command("HGET", "threadroom:snapshot", "n")))
        return saved // 20, a.hub.snapshots_built + b.hub.snapshots_built

    assert snapshots()[0] >= 3
    # One node builds each snapshot (the first to claim it), not every node (a broken variant
    # where both build: twice as many built as saved).
    wait_until(lambda: snapshots()[0] == snapshots()[1])
    c = node()
    assert c.hub.applied < 70  # it did not replay the whole chat
    assert sorted(c.hub.nicks()) == ["alice", "bob"]
    assert c.hub.room_names("#ops", None) == ("#ops", ("@alice", "bob"))
    assert c.hub.topic(None, "#ops").topic == "kept in the snapshot"
    assert c.hub.identity_of("alice").realname == "Real Name"  # tests/peers.py's USER line
    assert c.hub.identity_of("bob").away == "in the snapshot too"
    carol = IrcPeer(c.irc_address, "carol")
    carol.send_line("JOIN #ops")
    carol.expect_cmd("475")  # the key came with the snapshot
    carol.send_line("JOIN #ops sesame")
    carol.expect_cmd("366")
    while not alice.expect_cmd("JOIN").source.startswith("carol!"):
        pass  # bob's join came first
    carol.send_line("PRIVMSG #ops :hello from the new node")
    assert alice.expect_cmd("PRIVMSG").params[-1] == "hello from the new node"
    for peer in (alice, bob, carol):
        peer.close()


def test_the_password_never_reaches_the_log(tmp_path: Path) -> None:
    guarded = Valkey(tmp_path, password="never-logged-s3cret").start()
    try:
        node = Node(tmp_path, guarded.url, name="guarded")  # the URL comes from the environment
        assert node.stop() == 0
    finally:
        guarded.stop()
    log = node.log()
    assert "linked to redis://:***@127.0.0.1:" in log
    assert "s3cret" not in log


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_workers_share_one_port_and_are_one_chat(tmp_path: Path, valkey: Valkey) -> None:
    """`--workers 2`: two processes on one port (SO_REUSEPORT), one chat through Valkey; the
    kernel spreads the clients; SIGTERM stops both (exit 0)."""
    port = free_port()
    log_path = tmp_path / "workers.log"
    with log_path.open("w") as log_file:
        parent = subprocess.Popen(
            [sys.executable, "-m", "chat", "--port", str(port), "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env={**os.environ, "CHAT_CLUSTER_URL": valkey.url},
        )
    try:
        wait_until(lambda: log_path.read_text().count("listening on") == 2, timeout=20)
        peers = [TextPeer(("127.0.0.1", port), f"user{i}") for i in range(12)]
        pids = set(re.findall(r" pid (\d+):", log_path.read_text()))
        assert len(pids) == 2  # two worker processes
        peers[0].send("/users\n")
        online = peers[0].expect("*** Online (")
        assert online.startswith("*** Online (12)"), online
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(20) == 0
        for peer in peers:
            peer.close()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
    assert "Traceback" not in log_path.read_text()


def test_a_ping_is_a_delivery_barrier_across_nodes(two_nodes: tuple[Any, Any]) -> None:
    """A pong comes after every event any node published before the ping, not only this
    node's own: bob's node is held up (its hub lock taken here) while alice's message is in
    the stream; bob's pong waits for it."""
    a, b = two_nodes
    alice = JsonPeer(a.address, "alice")
    bob = JsonPeer(b.address, "bob")
    alice.expect_type("join")  # bob's
    with b.hub._lock:  # bob's node cannot apply anything now
        alice.send_json({"type": "message", "text": "before the ping"})
        alice.sync()  # applied on alice's node: it is in the stream
        bob.send_json({"type": "ping", "token": "after"})
        with pytest.raises(TimeoutError):
            bob.expect_type("pong", timeout=0.3)  # not while the message is not delivered
    events = [bob.event()]
    while events[-1]["type"] != "pong":
        events.append(bob.event())
    assert [e["type"] for e in events] == ["message", "pong"]
    alice.close()
    bob.close()


def test_chat_load_servers_option_is_checked() -> None:
    from loadtool.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["--servers", "127.0.0.1:8888,[::1]:8889"])
    assert args.servers == (("127.0.0.1", 8888), ("::1", 8889))
    for bad in ("127.0.0.1", "host:0", "host:port", ":8888"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--servers", bad])


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_a_node_stops_promptly_while_redis_is_away(
    two_nodes: tuple[Any, Any], valkey: Valkey
) -> None:
    """Redis paused, a reader waiting for the cluster's answer: stop() answers it ("the server
    is stopping") and does not wait out the request's 10 s deadline."""
    a, _b = two_nodes
    alice = TextPeer(a.address, "alice")
    valkey.pause()
    try:
        alice.send("into the void\\n")
        alice.expect("*** cluster link lost", timeout=10)
        started = time.monotonic()
        a.stop()
        took = time.monotonic() - started
    finally:
        valkey.resume()
    assert took < a.hub.request_timeout_s / 2, took  # a broken variant takes the full 10 s
    alice.close()
