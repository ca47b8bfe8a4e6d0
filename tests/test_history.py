"""History and persistence (#11): the store, replay on join, history requests, permissions,
restarts, start errors and a full disk, on real SQLite files and real sockets."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from chat import events as ev
from chat.protocol import ProtocolError
from chat.store import HistoryQuery, RoomRecord, StoreError, conversation_key, select
from chat.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteStore
from chat.wire import irc
from chat.wire import text as text_wire
from tests.peers import IrcPeer, JsonPeer, TextPeer, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _msg(i: int, room: str = "#a", ts: float | None = None) -> ev.Message:
    return ev.Message(i, 1000.0 + i if ts is None else ts, room, sender="bob", text=f"m{i}")


def _ids(events: Any) -> list[int]:
    return [e.id for e in events]


def _rows(path: Path, sql: str = "SELECT id, text FROM events ORDER BY id") -> list[Any]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


# -- pure ---------------------------------------------------------------------------------------


def test_select_is_the_meaning_of_every_query():
    events = [_msg(i) for i in range(1, 21)] + [_msg(5, "#other")]
    assert _ids(select(events, HistoryQuery("#a", limit=3))) == [18, 19, 20]
    assert _ids(select(events, HistoryQuery("#a", limit=3, before=10))) == [7, 8, 9]
    assert _ids(select(events, HistoryQuery("#a", limit=3, after=10))) == [11, 12, 13]
    assert _ids(select(events, HistoryQuery("#a", limit=3, after=10, newest=True))) == [18, 19, 20]
    assert _ids(select(events, HistoryQuery("#a", limit=5, around=10))) == [8, 9, 10, 11, 12]
    assert _ids(select(events, HistoryQuery("#a", limit=4, around=2))) == [1, 2, 3, 4]
    between = HistoryQuery("#a", limit=3, after=4, before=15)
    assert _ids(select(events, between)) == [5, 6, 7]
    assert _ids(select(events, HistoryQuery("#a", 3, 15, 4, newest=True))) == [12, 13, 14]
    assert _ids(select(events, HistoryQuery("#a", limit=2, after_ts=1015.5))) == [16, 17]
    assert _ids(select(events, HistoryQuery("#other"))) == [5]
    assert conversation_key("Bob", "alice") == conversation_key("ALICE", "bob") == "alice bob"


@pytest.mark.parametrize(
    ("line", "request_"),
    [
        ("/history", ev.ShowHistory()),
        ("/history 20", ev.ShowHistory(limit=20)),
        ("/history #den 5", ev.ShowHistory("#den", limit=5)),
        ("/history since 9:05", ev.ShowHistory(since_hm=(9, 5))),
        ("/history #den since 23:59", ev.ShowHistory("#den", since_hm=(23, 59))),
    ],
)
def test_text_history_requests(line, request_):
    assert text_wire.parse(line, registered=True) == request_


@pytest.mark.parametrize("line", ["/history 0", "/history since 25:00", "/history x", "/history ²"])
def test_bad_text_history_requests_say_how(line):
    with pytest.raises(ProtocolError, match="usage: /history"):
        text_wire.parse(line, registered=True)


def test_irc_server_time_round_trips():
    for ts in (0.0, 1796000000.123, 1796000000.9996):
        assert abs(irc.parse_server_time(irc.server_time(ts)) - ts) < 0.001  # type: ignore[operator]
    assert irc.parse_server_time("yesterday") is None


# -- the store ----------------------------------------------------------------------------------


def test_the_store_answers_with_what_is_not_written_yet_and_keeps_it_across_restarts(tmp_path):
    path = tmp_path / "h.sqlite3"
    store = SqliteStore(str(path))
    store.start()
    try:
        # Another program holds the write lock: the writer cannot commit, yet a reader asking
        # now must find every message offered (they are still in the queue).
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        for i in range(1, 101):
            assert store.offer_event(_msg(i))
        store.offer_room(RoomRecord("#a", topic="hi", creator="bob", created_ts=5.0))
        assert _ids(store.history(HistoryQuery("#a", limit=5, before=50))) == [45, 46, 47, 48, 49]
        assert _ids(store.history(HistoryQuery("#a", limit=1000))) == list(range(1, 101))
        blocker.execute("COMMIT")
        blocker.close()
        wait_until(lambda: store.stats().written == 100)
        assert _ids(store.history(HistoryQuery("#a", limit=5, before=50))) == [45, 46, 47, 48, 49]
    finally:
        store.stop(2.0)
    again = SqliteStore(str(path))
    again.start()
    try:
        assert again.last_id() == 100
        assert again.rooms() == (RoomRecord("#a", topic="hi", creator="bob", created_ts=5.0),)
        assert _ids(again.history(HistoryQuery("#a", limit=3))) == [98, 99, 100]
        assert _ids(again.history(HistoryQuery("#a", limit=2, after_ts=1050.5))) == [51, 52]
        assert again.latest(["#a", "#none"], 2) == {"#a": [_msg(99), _msg(100)]}
    finally:
        again.stop(2.0)


def test_what_an_older_version_stored_is_read_back_cleaned_by_todays_rule(tmp_path):
    """Line and paragraph separators (U+2028/U+2029: a line break in HexChat or a browser)
    were allowed in text until the new user's pass: a file written before it replayed them to
    everyone who joined. What comes out of the store is cleaned by the rule of today."""
    path = tmp_path / "h.sqlite3"
    store = SqliteStore(str(path))
    store.start()
    try:
        forged = ev.Message(1, 1001.0, "#a", sender="bob", text="hi\u2028<alice> fake\u2029")
        assert store.offer_event(forged)
        store.offer_room(RoomRecord("#a", topic="t\u2028<x> y", creator="bob", created_ts=5.0))
        wait_until(lambda: store.stats().written == 1)
    finally:
        store.stop(2.0)
    assert _rows(path) == [(1, "hi\u2028<alice> fake\u2029")]  # as an old version wrote it
    again = SqliteStore(str(path))
    again.start()
    try:
        assert [e.text for e in again.history(HistoryQuery("#a"))] == ["hi<alice> fake"]
        assert [e.text for e in again.latest(["#a"], 5)["#a"]] == ["hi<alice> fake"]
        assert again.rooms()[0].topic == "t<x> y"
    finally:
        again.stop(2.0)


def test_an_event_committed_while_a_reader_reads_is_not_lost(tmp_path):
    """The interleaving that lost a message once: the reader reads the file, the writer
    commits and forgets the event, the reader looks at the queue. Forced with events."""
    path = tmp_path / "race.sqlite3"
    queried = threading.Event()

    class PausingStore(SqliteStore):
        def _query(self, db: Any, query: HistoryQuery, limit: int) -> list[Any]:
            rows = super()._query(db, query, limit)  # the file, before the commit
            queried.set()
            wait_until(lambda: self.stats().written == 1)  # committed and forgotten meanwhile
            return rows

    store = PausingStore(str(path))
    store.start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer waits (for at most START_BUSY_S)
    answers: list[list[Any]] = []
    try:
        store.offer_event(_msg(1))
        reader = threading.Thread(target=lambda: answers.append(store.history(HistoryQuery("#a"))))
        reader.start()
        assert queried.wait(5)
        blocker.execute("COMMIT")  # the writer commits now, while the reader is between reads
        reader.join(10)
    finally:
        blocker.close()
        store.stop(1.0)
    assert [_ids(answer) for answer in answers] == [[1]]


def test_a_version_1_file_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        MIGRATIONS[0](db)
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO events VALUES (7, '#a', 1.0, 0, '#a', 'bob', '', 'b@x', 'old')")
    store = SqliteStore(str(path))
    store.start()
    try:
        assert store.last_id() == 7
        assert [e.text for e in store.history(HistoryQuery("#a"))] == ["old"]  # type: ignore[union-attr]
    finally:
        store.stop(1.0)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT name FROM sqlite_master WHERE name='events_by_time'").fetchone()


def test_unusable_files_refuse_to_start_with_one_clear_line(tmp_path):
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"this is not a database, it is a text file\n" * 200)
    with pytest.raises(StoreError, match=r"corrupt\.sqlite3 is corrupt or not a SQLite database"):
        SqliteStore(str(corrupt)).start()
    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="written by a newer threadroom"):
        SqliteStore(str(newer)).start()
    shared = tmp_path / "shared.sqlite3"
    first = SqliteStore(str(shared))
    first.start()
    try:
        with pytest.raises(StoreError, match="is locked by another program"):
            SqliteStore(str(shared)).start()
    finally:
        first.stop(1.0)
    locked = tmp_path / "locked.sqlite3"
    sqlite3.connect(locked).close()
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="is locked by another program"):
            SqliteStore(str(locked)).start()
    finally:
        holder.close()
    for error in (StoreError,):
        assert "\n" not in str(error)


def test_a_full_disk_at_start_refuses_to_start(tmp_path):
    with pytest.raises(StoreError, match="cannot grow: the disk is full"):
        SqliteStore(str(tmp_path / "full.sqlite3"), max_page_count=2).start()


def test_a_read_only_file_refuses_to_start(tmp_path):
    path = tmp_path / "ro.sqlite3"
    sqlite3.connect(path).close()
    path.chmod(0o444)
    # Root (CI) writes through file modes: the immutable attribute stops root too.
    immutable = os.geteuid() == 0
    if immutable:
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if made.returncode != 0:
            pytest.skip(f"running as root and chattr +i failed: {made.stderr!r}")
    try:
        with pytest.raises(StoreError, match="cannot be written"):
            SqliteStore(str(path)).start()
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=False)


def test_retention_by_count_and_by_age(tmp_path):
    store = SqliteStore(str(tmp_path / "keep.sqlite3"), max_per_target=10)
    store.start()
    try:
        for i in range(1, 36):
            store.offer_event(_msg(i))
            store.offer_event(_msg(100 + i, "#b"))
        wait_until(lambda: store.stats().written == 70)
        wait_until(lambda: len(store.history(HistoryQuery("#a", limit=100))) == 10)
        assert _ids(store.history(HistoryQuery("#a", limit=100))) == list(range(26, 36))
        assert len(store.history(HistoryQuery("#b", limit=100))) == 10
    finally:
        store.stop(1.0)
    now = 1000.0 + 3 * 86400  # a clock three days after the messages
    old = SqliteStore(str(tmp_path / "old.sqlite3"), retention_days=2, clock=lambda: now)
    old.start()
    try:
        old.offer_event(_msg(1))  # sent three days ago: deleted once written
        old.offer_event(_msg(2, ts=now - 3600))  # an hour ago: kept
        wait_until(lambda: old.stats().written == 2)
        wait_until(lambda: len(old.history(HistoryQuery("#a"))) == 1)
        assert _ids(old.history(HistoryQuery("#a"))) == [2]
    finally:
        old.stop(1.0)


def _run_server(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chat", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_chat_server_says_one_line_and_exits_2_for_an_unusable_file(tmp_path):
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"garbage " * 1000)
    result = _run_server("--history-db", str(corrupt))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert re.match(r"chat-server: history database .*corrupt\.sqlite3 is corrupt", result.stderr)
    shared = tmp_path / "in-use.sqlite3"
    holder = SqliteStore(str(shared))  # another server has it
    holder.start()
    try:
        result = _run_server("--history-db", str(shared))
    finally:
        holder.stop(1.0)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "is locked by another program" in result.stderr


# -- replay on join, in every front-end ---------------------------------------------------------


def _history_server(make_server: Any, **options: Any) -> Any:
    return make_server(history_db=":memory:", flood_rate=0, irc_port=0, **options)


def test_replay_on_join_in_text_json_and_irc(make_server):
    server = _history_server(make_server, history_replay=3)
    alice = JsonPeer(server.address, "alice")
    for i in range(5):
        alice.send_json({"type": "message", "text": f"line {i}"})
    alice.sync()
    bob = TextPeer(server.address)
    bob.send("bob\n")
    head = bob.expect("--- history: 3 messages since ")
    assert re.fullmatch(r"--- history: 3 messages since \d\d:\d\d ---", head)
    lines = [bob.line() for _ in range(4)]
    assert [re.sub(r"^\[\d\d:\d\d\] ", "", x) for x in lines[:3]] == [
        "<alice> line 2",
        "<alice> line 3",
        "<alice> line 4",
    ]
    assert lines[3] == "--- end of history ---"
    carol = JsonPeer(server.address)
    carol.send_json({"type": "hello", "version": 1, "nick": "carol"})
    replay = carol.expect_type("history")
    assert replay["replay"] is True
    assert replay["room"] == "#lobby"
    assert [m["text"] for m in replay["messages"]] == ["line 2", "line 3", "line 4"]
    ids = [m["id"] for m in replay["messages"]]
    assert ids == sorted(ids)
    # IRC, modern: a chathistory batch, each line with its time and id.
    modern = IrcPeer(server.irc_address)
    modern.send_line("CAP LS 302")
    assert "draft/chathistory" in modern.expect_cmd("CAP").params[-1]
    modern.send_line("CAP REQ :batch server-time message-tags")
    assert modern.expect_cmd("CAP").params[1] == "ACK"
    modern.send_line("CAP END")
    modern.register("modern")
    modern.send_line("JOIN #lobby")
    got = modern.sync()
    start = next(i for i, m in enumerate(got) if m.command == "BATCH")
    opened, *said, closed = got[start : start + 5]
    assert opened.params[1:] == ("chathistory", "#lobby")
    assert closed.params == ("-" + opened.params[0][1:],)
    assert [m.params[1] for m in said] == ["line 2", "line 3", "line 4"]
    assert [int(m.tags["msgid"]) for m in said] == ids
    assert all(m.tags["batch"] == opened.params[0][1:] for m in said)
    assert all(irc.parse_server_time(m.tags["time"]) for m in said)
    # IRC, plain: PRIVMSGs with the time in front, as ZNC plays back.
    plain = IrcPeer(server.irc_address, "plain")
    plain.send_line("JOIN #lobby")
    said = [m for m in plain.sync() if m.command == "PRIVMSG"]
    assert [re.sub(r"^\[\d\d:\d\d:\d\d\] ", "", m.params[1]) for m in said] == [
        "line 2",
        "line 3",
        "line 4",
    ]
    assert all(re.match(r"\[\d\d:\d\d:\d\d\] ", m.params[1]) for m in said)
    # IRC, server-time without batch (irssi 1.4 asks for just that, and shows its own clock):
    # the time tag, and the time in the text too, or history looks like live traffic.
    timed = IrcPeer(server.irc_address)
    timed.send_line("CAP LS 302")
    timed.expect_cmd("CAP")
    timed.send_line("CAP REQ :server-time")
    assert timed.expect_cmd("CAP").params[1] == "ACK"
    timed.send_line("CAP END")
    timed.register("timed")
    timed.send_line("JOIN #lobby")
    said = [m for m in timed.sync() if m.command == "PRIVMSG"]
    assert [re.sub(r"^\[\d\d:\d\d:\d\d\] ", "", m.params[1]) for m in said] == [
        "line 2",
        "line 3",
        "line 4",
    ]
    assert all(re.match(r"\[\d\d:\d\d:\d\d\] ", m.params[1]) for m in said)
    assert all(irc.parse_server_time(m.tags["time"]) for m in said)
    # Live messages come after the replay, never before or inside it.
    alice.send_json({"type": "message", "text": "live"})
    assert bob.expect("<alice>") == "<alice> live"


def test_a_room_without_history_replays_nothing(make_server):
    server = _history_server(make_server)
    alice = TextPeer(server.address, "alice")
    alice.send("/join #quiet\n")
    alice.expect("*** Now talking in #quiet")
    alice.send("/history\n")
    assert alice.expect("---") == "--- no history in #quiet ---"


def test_text_history_since_a_clock_time(make_server):
    server = _history_server(make_server, history_replay=0)
    then = time.localtime(time.time() - 120)  # two minutes ago: before every line below
    alice = TextPeer(server.address, "alice")
    for i in range(3):
        alice.send(f"said {i}\n")
    alice.send(f"/history since {then.tm_hour:02d}:{then.tm_min:02d}\n")
    assert alice.expect("--- history of #lobby: 3 messages since ")
    assert [re.sub(r"^\[[^]]+\] ", "", alice.line()) for _ in range(3)] == [
        "<alice> said 0",
        "<alice> said 1",
        "<alice> said 2",
    ]
    assert alice.line() == "--- end of history ---"


# -- requests, paging, permissions --------------------------------------------------------------


def test_json_paging_walks_back_without_gap_or_duplicate(make_server):
    server = _history_server(make_server, history_replay=0)
    alice = JsonPeer(server.address, "alice")
    for i in range(120):
        alice.send_json({"type": "message", "text": f"n{i}"})
    alice.sync()
    seen: list[dict[str, Any]] = []
    before = None
    while True:
        alice.send_json({"type": "history", "limit": 50, "before": before})
        messages: list[dict[str, Any]] = []
        while True:  # an answer may come in several objects
            part = alice.expect_type("history")
            messages += part["messages"]
            if not part.get("partial"):
                break
        if not messages:
            break
        seen = messages + seen
        before = messages[0]["id"]
    assert [m["text"] for m in seen] == [f"n{i}" for i in range(120)]
    after = seen[99]["id"]
    alice.send_json({"type": "history", "after": after})
    assert [m["text"] for m in alice.expect_type("history")["messages"]] == [
        f"n{i}" for i in range(100, 120)
    ]


def test_json_since_answers_what_was_said_after_a_time(make_server):
    server = _history_server(make_server, history_replay=0)
    alice = JsonPeer(server.address, "alice")
    bob = JsonPeer(server.address, "bob")
    said = []
    for i in range(6):
        alice.send_json({"type": "message", "text": f"s{i}"})
        said.append(bob.expect_type("message"))
    since = said[2]["ts"]  # a time as a client saw it: the answer starts after it
    bob.send_json({"type": "history", "since": since})
    answer = _answer(bob)["messages"]
    assert [m["text"] for m in answer] == [m["text"] for m in said if m["ts"] > since]
    assert answer  # not nothing,
    assert answer[0]["text"] in ("s3", "s4", "s5")  # and not everything
    bob.send_json({"type": "history", "since": said[-1]["ts"]})
    assert _answer(bob)["messages"] == []
    bob.send_json({"type": "history", "since": "yesterday"})
    assert bob.expect_type("error")["code"] == "bad_request"


def test_irc_private_history_with_history_private(make_server):
    server = _history_server(make_server, history_private=True)
    alice = IrcPeer(server.irc_address)
    alice.register("alice")
    bob = IrcPeer(server.irc_address)
    bob.register_for_history("bob")
    for text in ("psst", "still there?"):
        alice.send_line(f"PRIVMSG bob :{text}")
        assert bob.expect_cmd("PRIVMSG").params == ("bob", text)
    carol = IrcPeer(server.irc_address)
    carol.register("carol")
    carol.send_line("PRIVMSG alice :hi alice")
    alice.expect_cmd("PRIVMSG")
    bob.send_line("CHATHISTORY LATEST alice * 10")
    lines = bob.sync()
    batch = [m for m in lines if m.command == "BATCH"]
    assert batch[0].params[1:] == ("chathistory", "alice")
    found = [(m.source.split("!")[0], m.params) for m in lines if m.command == "PRIVMSG"]
    assert found == [("alice", ("bob", "psst")), ("alice", ("bob", "still there?"))]
    assert all("time" in m.tags for m in lines if m.command == "PRIVMSG")
    # carol's conversation with alice is not bob's to read
    bob.send_line("CHATHISTORY LATEST carol * 10")
    assert [m for m in bob.sync() if m.command == "PRIVMSG"] == []


def test_irc_chathistory_subcommands(make_server):
    server = _history_server(make_server, history_replay=0)
    talker = JsonPeer(server.address, "talker")
    for i in range(10):
        talker.send_json({"type": "message", "text": f"t{i}"})
    talker.sync()
    client = IrcPeer(server.irc_address)
    client.register_for_history("client")
    client.send_line("JOIN #lobby")
    # It negotiated draft/chathistory: no replay on join, it asks for what it wants.
    assert [m.command for m in client.sync()] == ["JOIN", "353", "366"]

    def ask(line: str) -> list[Any]:
        client.send_line(line)
        return [m for m in client.sync() if m.command == "PRIVMSG"]

    everything = ask("CHATHISTORY LATEST #lobby * 100")
    assert [m.params[1] for m in everything] == [f"t{i}" for i in range(10)]
    ids = [int(m.tags["msgid"]) for m in everything]
    texts = lambda ms: [m.params[1] for m in ms]  # noqa: E731
    assert texts(ask(f"CHATHISTORY BEFORE #lobby msgid={ids[5]} 2")) == ["t3", "t4"]
    assert texts(ask(f"CHATHISTORY AFTER #lobby msgid={ids[5]} 2")) == ["t6", "t7"]
    assert texts(ask(f"CHATHISTORY AROUND #lobby msgid={ids[5]} 3")) == ["t4", "t5", "t6"]
    assert texts(ask(f"CHATHISTORY BETWEEN #lobby msgid={ids[1]} msgid={ids[8]} 2")) == [
        "t2",
        "t3",
    ]
    assert texts(ask(f"CHATHISTORY BETWEEN #lobby msgid={ids[8]} msgid={ids[1]} 2")) == [
        "t6",
        "t7",
    ]
    assert texts(ask(f"CHATHISTORY LATEST #lobby msgid={ids[7]} 5")) == ["t8", "t9"]
    early, late = "timestamp=2001-01-01T00:00:00.000Z", "timestamp=2101-01-01T00:00:00Z"
    assert texts(ask(f"CHATHISTORY BEFORE #lobby {late} 1")) == ["t9"]
    assert texts(ask(f"CHATHISTORY AFTER #lobby {early} 2")) == ["t0", "t1"]
    assert texts(ask(f"CHATHISTORY BEFORE #lobby {early} 5")) == []
    client.send_line("CHATHISTORY LATEST #lobby * x")
    fail = client.expect_cmd("FAIL")
    assert fail.params[:2] == ("CHATHISTORY", "INVALID_PARAMS")


def test_ids_and_limits_past_any_real_one_are_answered_not_a_crash(make_server):
    """A message id beyond SQLite's 64-bit INTEGER (a client's typo, or a probe) once ended the
    asker's connection with 'server error' (OverflowError in the store), from JSON and IRC."""
    server = _history_server(make_server, history_replay=0)
    huge = 10**26
    talker = JsonPeer(server.address, "talker")
    for i in range(3):
        talker.send_json({"type": "message", "text": f"h{i}"})
    talker.sync()
    asker = JsonPeer(server.address, "asker")
    asker.send_json({"type": "history", "before": huge})
    assert [m["text"] for m in _answer(asker)["messages"]] == ["h0", "h1", "h2"]
    asker.send_json({"type": "history", "after": huge})
    assert _answer(asker)["messages"] == []
    asker.send_json({"type": "history", "limit": huge})
    assert [m["text"] for m in _answer(asker)["messages"]] == ["h0", "h1", "h2"]
    asker.send_json({"type": "history", "limit": "ten"})
    error = asker.expect_type("error")
    assert error["code"] == "bad_request"
    assert "message id" not in error["message"], error  # a limit is a count, not an id
    client = IrcPeer(server.irc_address)
    client.register_for_history("client")
    client.send_line("JOIN #lobby")
    client.sync()
    for line, texts in [
        (f"CHATHISTORY BEFORE #lobby msgid={huge} 10", ["h0", "h1", "h2"]),
        (f"CHATHISTORY AFTER #lobby msgid={huge} 10", []),
        (f"CHATHISTORY AROUND #lobby msgid={huge} 10", ["h0", "h1", "h2"]),  # the older half
        (f"CHATHISTORY BETWEEN #lobby msgid=0 msgid={huge} 10", ["h0", "h1", "h2"]),
        (f"CHATHISTORY LATEST #lobby * {huge}", ["h0", "h1", "h2"]),
    ]:
        client.send_line(line)
        assert [m.params[1] for m in client.sync() if m.command == "PRIVMSG"] == texts, line
    assert server.audit.total == 0


def test_history_is_only_for_members_of_secret_and_keyed_rooms(make_server):
    server = _history_server(make_server)
    owner = JsonPeer(server.address, "owner")
    for room, mode in (("#hidden", {"secret": True}), ("#locked", {"key": "sesame"})):
        owner.send_json({"type": "join", "room": room})
        owner.send_json({"type": "mode", "room": room, **mode})
        owner.send_json({"type": "message", "room": room, "text": f"secret of {room}"})
    owner.sync()
    snoop = JsonPeer(server.address, "snoop")
    snoop.send_json({"type": "history", "room": "#hidden"})
    assert snoop.expect_type("error")["code"] == "no_such_room"
    snoop.send_json({"type": "history", "room": "#locked"})
    assert snoop.expect_type("error")["code"] == "not_in_room"
    irc_snoop = IrcPeer(server.irc_address, "ircsnoop")
    for room in ("#hidden", "#locked"):
        irc_snoop.send_line(f"CHATHISTORY LATEST {room} * 10")
        fail = irc_snoop.expect_cmd("FAIL")
        assert fail.params[:2] == ("CHATHISTORY", "INVALID_TARGET")
    assert not any("secret of" in str(e) for e in snoop.sync())
    snoop.send_json({"type": "join", "room": "#locked", "key": "sesame"})
    replay = snoop.expect_type("history")
    assert [m["text"] for m in replay["messages"]] == ["secret of #locked"]


def test_private_messages_are_stored_only_with_history_private(make_server, tmp_path):
    path = tmp_path / "p.sqlite3"
    server = make_server(history_db=str(path), flood_rate=0)
    alice = JsonPeer(server.address, "alice")
    bob = JsonPeer(server.address, "bob")
    alice.send_json({"type": "private", "to": "bob", "text": "just between us"})
    bob.expect_type("private")
    alice.send_json({"type": "message", "text": "in public"})
    bob.expect_type("message")
    alice.send_json({"type": "history", "with": "bob"})
    assert alice.expect_type("error")["code"] == "history_off"
    server.stop()
    assert [text for _, text in _rows(path)] == ["in public"]
    assert _rows(path, "SELECT count(*) FROM events WHERE recipient != ''") == [(0,)]

    server = make_server(history_db=str(path), history_private=True, flood_rate=0)
    alice = JsonPeer(server.address, "alice")
    bob = JsonPeer(server.address, "bob")
    eve = JsonPeer(server.address, "eve")
    alice.send_json({"type": "private", "to": "bob", "text": "kept"})
    bob.expect_type("private")
    bob.send_json({"type": "history", "with": "alice"})
    assert [m["text"] for m in _answer(bob)["messages"]] == ["kept"]
    eve.send_json({"type": "history", "with": "alice"})  # eve and alice never talked
    assert _answer(eve)["messages"] == []


def _answer(peer: JsonPeer) -> dict[str, Any]:
    """The next history answer (not a replay on join)."""
    while (found := peer.expect_type("history"))["replay"]:
        pass
    return found


# -- restarts -----------------------------------------------------------------------------------


def test_rooms_topics_keys_and_ids_survive_a_restart(make_server, tmp_path):
    path = str(tmp_path / "r.sqlite3")
    server = make_server(history_db=path, flood_rate=0)
    alice = JsonPeer(server.address, "alice")
    alice.send_json({"type": "join", "room": "#den"})
    alice.send_json({"type": "topic", "room": "#den", "topic": "plans"})
    alice.send_json({"type": "mode", "room": "#den", "key": "k1", "secret": True})
    for i in range(3):
        alice.send_json({"type": "message", "room": "#den", "text": f"d{i}"})
    alice.send_json({"type": "message", "room": "#lobby", "text": "lobby line"})
    alice.sync()
    alice.send_json({"type": "history", "room": "#den"})
    before = [m["id"] for m in alice.expect_type("history")["messages"]]
    server.stop()

    server = make_server(history_db=path, flood_rate=0)
    bob = JsonPeer(server.address, "bob")
    lobby_replay = bob.expect_type("history")  # the default room's history is back too
    assert [m["text"] for m in lobby_replay["messages"]] == ["lobby line"]
    bob.send_json({"type": "rooms"})
    assert "#den" not in str(bob.expect_type("rooms"))  # still secret
    bob.send_json({"type": "join", "room": "#den"})
    assert bob.expect_type("error")["code"] == "bad_key"  # still keyed
    bob.send_json({"type": "join", "room": "#den", "key": "k1"})
    view = bob.expect_type("room")
    assert view["topic"] == "plans"
    assert view["secret"] is True
    assert view["operators"] == []  # the creator is alice: bob is no operator
    replay = bob.expect_type("history")
    assert [m["id"] for m in replay["messages"]] == before
    alice = JsonPeer(server.address, "alice")
    alice.send_json({"type": "join", "room": "#den", "key": "k1"})
    assert alice.expect_type("room")["operators"] == ["alice"]  # its creator, back
    alice.send_json({"type": "message", "room": "#den", "text": "after"})
    after = bob.expect_type("message")
    assert after["id"] > max(before)  # ids continue after the store's last one


def test_sigterm_writes_everything_queued(tmp_path):
    path = tmp_path / "term.sqlite3"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chat",
            "--port",
            "0",
            "--flood-rate",
            "0",
            "--history-db",
            str(path),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", proc.stderr.readline())
        assert match
        alice = JsonPeer(("127.0.0.1", int(match[1])), "alice")
        lines = "".join(f'{{"type": "message", "text": "s{i}"}}\n' for i in range(2000))
        alice.send(lines)
        alice.sync()  # the hub has taken every message (the pong comes after them)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        log = proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    assert "history: 2000 event(s) written, 0 dropped, 0 failed" in log, log
    assert [text for _, text in _rows(path)] == [f"s{i}" for i in range(2000)]


# -- a full disk, a full queue ------------------------------------------------------------------


def test_a_full_disk_degrades_history_and_never_the_chat(make_server, tmp_path, caplog):
    store = SqliteStore(str(tmp_path / "tiny.sqlite3"), max_page_count=12)
    server = make_server(store=store, flood_rate=0)
    alice = JsonPeer(server.address, "alice")
    bob = JsonPeer(server.address, "bob")
    text = "x" * 1500
    sent = 0
    with caplog.at_level("ERROR", logger="chat.store"):
        while store.stats().failed == 0 and sent < 2000:
            alice.send_json({"type": "message", "text": f"{sent} {text}"})
            assert bob.expect_type("message")["text"].startswith(f"{sent} ")
            sent += 1
        for i in range(50):  # the chat goes on
            alice.send_json({"type": "message", "text": f"more {i}"})
            assert bob.expect_type("message")["text"] == f"more {i}"
    stats = store.stats()
    assert stats.failed > 0
    assert stats.degraded
    degraded = [r for r in caplog.records if "history degraded" in r.getMessage()]
    assert len(degraded) == 1, degraded  # once, then counted
    assert "full" in degraded[0].getMessage()


def test_a_full_queue_drops_history_and_never_slows_the_chat(make_server, tmp_path):
    path = tmp_path / "q.sqlite3"
    store = SqliteStore(str(path), queue_events=10)
    server = make_server(store=store, flood_rate=0)
    blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")  # the writer cannot commit: its queue fills
    try:
        alice = JsonPeer(server.address, "alice")
        bob = JsonPeer(server.address, "bob")
        for i in range(40):
            alice.send_json({"type": "message", "text": f"q{i}"})
        for i in range(40):
            assert bob.expect_type("message")["text"] == f"q{i}"
        wait_until(lambda: store.stats().dropped > 0)
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    stats = store.stats()
    assert stats.degraded
    assert stats.dropped + stats.written + stats.failed <= 41  # 40 messages + the room record


def test_chat_server_keeps_history_in_the_state_directory_and_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "chat", "--port", "0"], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        assert "listening on" in proc.stderr.readline()
        expected = tmp_path / "state" / "threadroom" / "history.sqlite3"
        assert (
            proc.stderr.readline()
            .rstrip()
            .endswith(f"INFO history: {expected} (replay 50, private messages not stored)")
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
    assert expected.exists()
    result = _run_server("--no-history", "--port", "70000")
    assert result.returncode == 2


def _room_names(peer: JsonPeer) -> list[str]:
    peer.send_json({"type": "rooms"})
    names = []
    while True:
        reply = peer.expect_type("rooms")
        names += [r["room"] for r in reply["rooms"]]
        if not reply.get("more"):
            return names


def test_dormant_rooms_are_bounded_by_max_rooms_and_the_newest_come_back(make_server, tmp_path):
    # Someone creating, talking in and leaving rooms in a loop must not grow memory without end:
    # at most max_rooms empty rooms are kept (the longest dormant is forgotten first).
    path = str(tmp_path / "d.sqlite3")
    server = make_server(history_db=path, flood_rate=0, max_rooms=3)
    alice = JsonPeer(server.address, "alice")
    for i in range(6):
        alice.send_json({"type": "join", "room": f"#r{i}"})
        alice.send_json({"type": "message", "room": f"#r{i}", "text": f"in r{i}"})
        alice.send_json({"type": "part", "room": f"#r{i}"})
    alice.sync()
    assert _room_names(alice) == ["#lobby", "#r3", "#r4", "#r5"]
    alice.send_json({"type": "join", "room": "#r0"})  # forgotten: a new room, no replay
    assert alice.expect_type("room")["operators"] == ["alice"]
    alice.send_json({"type": "history", "room": "#r0"})  # its messages are still stored
    assert [m["text"] for m in alice.expect_type("history")["messages"]] == ["in r0"]
    server.stop()

    # After a restart, the two most recently created come back (#r0's record is its first one).
    server = make_server(history_db=path, flood_rate=0, max_rooms=2)
    bob = JsonPeer(server.address, "bob")
    assert _room_names(bob) == ["#lobby", "#r4", "#r5"]


def test_a_relative_xdg_state_home_is_ignored(tmp_path, monkeypatch):
    # The XDG Base Directory spec: relative paths are invalid and must be ignored (the history
    # went wherever chat-server was started).
    from chat.config import default_history_path

    monkeypatch.setenv("HOME", str(tmp_path))
    fallback = str(tmp_path / ".local" / "state" / "threadroom" / "history.sqlite3")
    for relative in ("state", "./state", "", "~/state"):
        monkeypatch.setenv("XDG_STATE_HOME", relative)
        assert default_history_path() == fallback, relative
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "abs"))
    assert default_history_path() == str(tmp_path / "abs" / "threadroom" / "history.sqlite3")
