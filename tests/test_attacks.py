"""Regression tests for attacks found against the server: each test is the attack, over real
sockets, checked the way its victim (another user, the operator) would notice it."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chat.config import ServerConfig
from chat.server import ChatServer
from tests.peers import (
    TIMEOUT_S,
    IrcPeer,
    JsonPeer,
    Peer,
    RecordingIrcPeer,
    RecordingJsonPeer,
    RecordingTextPeer,
    TextPeer,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent

# -- 1. slowloris: registration is a deadline from connect -------------------------------------

# Short, so the test is quick; not shorter, because the real users at the end must register
# within it too, on a busy two-core machine (0.5 s failed once in a full parallel run).
REGISTER_TIMEOUT_S = 1.0
# How often each attacker sends its next byte or useless line: far more often than the
# registration timeout, so that a timeout restarted by input would never expire.
TRICKLE_EVERY_S = 0.05


def test_trickling_and_useless_lines_cannot_hold_the_slots_past_the_deadline(make_server):
    # Each kind of attacker: (port, first bytes, what it sends again and again, its farewell:
    # the server's last line says that).
    text_timeout = "! registration timed out"
    json_timeout = '"code": "timeout", "message": "registration timed out"'
    irc_timeout = "ERROR :Closing link: (Registration timed out)"
    kinds = [
        ("text", b"", b"a", text_timeout),  # one byte of a nickname at a time, no newline
        ("text", b"", b"1bad\n", text_timeout),  # a nickname refused again and again
        ("text", b'{"type": "who"}\n', b'{"type": "who"}\n', json_timeout),  # JSON, no hello
        ("irc", b"", b"N", irc_timeout),
        ("irc", b"", b"PING :x\r\n", irc_timeout),  # answered with a PONG each time
        ("irc", b"", b"NICK 1bad\r\n", irc_timeout),  # 432 each time
        ("irc", b"USER u 0 * :R\r\n", b"CAP LS\r\n", irc_timeout),  # never a NICK
        # NICK and USER, but a CAP negotiation that never ends holds registration back
        ("irc", b"CAP LS 302\r\nNICK capper\r\nUSER u 0 * :R\r\n", b"CAP LIST\r\n", irc_timeout),
    ]
    attackers_per_kind = 2
    server = make_server(
        irc_port=0,
        max_clients=len(kinds) * attackers_per_kind,
        register_timeout_s=REGISTER_TIMEOUT_S,
        flood_rate=0,  # only the deadline may end them, not flood control
    )
    attackers = []
    for port, first, again, farewell in kinds * attackers_per_kind:
        address = server.irc_address if port == "irc" else server.address
        # Taken before the connect: the server's clock starts at its accept, which may come
        # before create_connection() returns here on a busy machine, never before it is called.
        since = time.monotonic()
        sock = socket.create_connection(address, timeout=TIMEOUT_S)
        if first:
            sock.sendall(first)
        attackers.append(
            {
                "sock": sock,
                "again": again,
                "farewell": farewell,
                "got": b"",
                "since": since,
            }
        )
    wait_until(lambda: server.client_count == len(attackers))
    closed_at = {}
    started = time.monotonic()
    deadline = started + 20 * REGISTER_TIMEOUT_S + TIMEOUT_S
    while len(closed_at) < len(attackers) and time.monotonic() < deadline:
        open_ = [a for i, a in enumerate(attackers) if i not in closed_at]
        readable, _, _ = select.select([a["sock"] for a in open_], [], [], TRICKLE_EVERY_S)
        for i, attacker in enumerate(attackers):
            if i in closed_at:
                continue
            if attacker["sock"] in readable:
                try:
                    data = attacker["sock"].recv(65536)
                except ConnectionResetError:
                    data = b""
                attacker["got"] += data
                if not data:
                    closed_at[i] = time.monotonic() - attacker["since"]
                    continue
            if attacker["farewell"].encode() not in attacker["got"]:
                # OSError: cut off already; the farewell and the end are on their way
                with contextlib.suppress(OSError):
                    attacker["sock"].sendall(attacker["again"])
    for attacker in attackers:
        attacker["sock"].close()
    assert len(closed_at) == len(attackers), [
        (a["again"], a["got"][-200:]) for i, a in enumerate(attackers) if i not in closed_at
    ]
    for attacker in attackers:
        last = attacker["got"].rstrip(b"\r\n").rsplit(b"\n", 1)[-1].decode()
        assert attacker["farewell"] in last, (attacker["again"], attacker["got"])
    # Nobody was let go before its deadline (counted from its accept, after `since`): it was
    # the deadline, not some other limit.
    assert min(closed_at.values()) >= REGISTER_TIMEOUT_S
    # Every slot is free again, and a real user gets in.
    wait_until(lambda: server.client_count == 0)
    alice = TextPeer(server.address, "alice")
    assert alice.welcome.startswith("* Hello alice.")
    bob = IrcPeer(server.irc_address, "bob")
    assert bob.nick == "bob"


# -- 2. nothing a terminal acts on reaches anyone, whatever an IRC user sets -------------------

# What each attack string holds: a bare CR (forges a line start on a terminal, or a second
# server line in an IRC client that splits on CR), an OSC that renames the terminal window
# (ended by BEL), a CSI that clears the screen, the 8-bit CSI, a bidi override, BEL, the line
# and paragraph separators (a line break in HexChat's Pango or a browser), NEL.
EVIL = (
    "a\rb",
    "\x1b]0;evil\x07",
    "\x1b[2J",
    "\x9b2J",
    "\u202egnp.exe",
    "x\x07y",
    "l\u2028s\u2029p",
    "n\x85l",
)
BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
SEPARATORS = frozenset("\u2028\u2029")


def unsafe_chars(text: str, allowed: str = "") -> list[str]:
    """The characters of `text` a terminal or a bidi renderer would act on (C0 but tab, DEL,
    C1, bidi controls, line and paragraph separators), except those in `allowed`."""
    return [
        c
        for c in text
        if c not in allowed
        and ((c < " " and c != "\t") or "\x7f" <= c <= "\x9f" or c in BIDI or c in SEPARATORS)
    ]


def json_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from json_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from json_strings(v)


def assert_all_received_clean(peers):
    """Every line each peer was sent: no CR but IRC's CRLF, no ESC, BEL, C1 or bidi control;
    for JSON also inside every decoded string."""
    for peer in peers:
        assert peer._buffer == b"", f"{peer.nick}: unread bytes {peer._buffer!r}"
        for line in peer.received:
            if isinstance(peer, IrcPeer):
                assert line.endswith("\r"), line
                # \x01 delimits CTCP ACTION, which an IRC client decodes itself
                assert unsafe_chars(line[:-1], allowed="\x01") == [], (peer.nick, line)
            else:
                assert unsafe_chars(line) == [], (peer.nick, line)
            if isinstance(peer, JsonPeer) and line.startswith("{"):
                for text in json_strings(json.loads(line)):
                    assert unsafe_chars(text) == [], (peer.nick, line)


def test_control_characters_from_an_irc_user_never_reach_anyone(make_server):
    server = make_server(irc_port=0, flood_rate=0)
    irc_address = server.irc_address
    alice = RecordingIrcPeer(irc_address, "alice")  # the attacker, operator of #r
    alice.send_line("JOIN #r")
    alice.expect_cmd("366")

    def irc_user(nick):
        peer = RecordingIrcPeer(irc_address)
        peer.nick = nick
        peer.send(f"NICK {nick}\r\nUSER u 0 * :real{''.join(EVIL)}\r\nJOIN #r\r\n")
        peer.expect_cmd("366")
        return peer

    bob, eve = irc_user("bob"), irc_user("eve")
    carol = RecordingTextPeer(server.address, "carol")
    carol.send("/join #r\n")
    carol.expect("*** Now talking in #r")
    dave = RecordingJsonPeer(server.address, "dave")
    dave.send_json({"type": "join", "room": "#r"})
    dave.expect_type("room")
    everyone = [alice, bob, eve, carol, dave]

    def sync_all():
        """Everything the attacker's lines caused has reached everyone; returns it."""
        return {p.nick: p.sync() for p in everyone}

    sync_all()
    # Keys: refused (525), nothing set, nothing broadcast.
    for evil in EVIL:
        alice.send_line(f"MODE #r +k :k{evil}")
        reply = alice.msg()
        assert (reply.command, reply.params[1]) == ("525", "#r"), reply
    seen = sync_all()
    assert seen == {p.nick: [] for p in everyone}, seen
    alice.send_line("MODE #r")
    assert alice.expect_cmd("324").params[1:] == ("#r", "+n")
    # The text and JSON operators are refused too (words, and a JSON error).
    alice.send_line("MODE #r +oo carol dave")
    sync_all()
    for bad in ("a:b", "a\u00a0b", "a,b", *(f"k{evil}" for evil in EVIL)):
        carol.send(f"/key {bad}\n")
        refusal = carol.line()  # a usage line, or why the key is refused: one word
        assert refusal.startswith("! "), (bad, refusal)
        assert "one word" in refusal, (bad, refusal)
    for evil in EVIL:
        dave.send_json({"type": "mode", "room": "#r", "key": f"k{evil}"})
        error = dave.expect_type("error")
        assert error["code"] == "bad_key", (evil, error)
    seen = sync_all()
    assert seen == {p.nick: [] for p in everyone}, seen
    alice.send_line("MODE #r")
    assert alice.expect_cmd("324").params[1:] == ("#r", "+n")

    # Everything else an IRC user can say to others, each time with every attack string.
    for evil in EVIL:
        alice.send_line(f"TOPIC #r :topic {evil}")
        alice.send_line(f"PRIVMSG #r :message {evil}")
        alice.send_line(f"NOTICE #r :notice {evil}")
        alice.send_line(f"PRIVMSG #r :\x01ACTION acts {evil}\x01")
        alice.send_line(f"PRIVMSG carol,dave,bob :private {evil}")
        alice.send_line(f"KICK #r bob :reason {evil}")
        bob.expect_cmd("KICK")
        bob.send_line("JOIN #r")
        bob.expect_cmd("366")
        eve.send_line(f"PART #r :part {evil}")
        eve.expect_cmd("PART")
        eve.send_line("JOIN #r")
        eve.expect_cmd("366")
        # The text and JSON users say the same (raw bytes from nc, escapes in JSON).
        carol.send(f"message {evil}\n/me acts {evil}\n/msg bob private {evil}\n")
        dave.send_json({"type": "message", "room": "#r", "text": f"message {evil}"})
        dave.send_json({"type": "action", "room": "#r", "text": f"acts {evil}"})
        dave.send_json({"type": "private", "to": "bob", "text": f"private {evil}"})
        # Away messages, told to whoever writes privately (and in WHOIS), from every front-end.
        alice.send_line(f"AWAY :away {evil}")
        carol.send(f"/away away {evil}\n")
        dave.send_json({"type": "away", "text": f"away {evil}"})
        carol.send("/msg alice hi\n")
        dave.send_json({"type": "private", "to": "carol", "text": "hi"})
        bob.send_line("PRIVMSG dave :hi")
        bob.send_line("WHOIS alice")
        sync_all()
    for peer in (carol, dave, bob):  # the last topic set, cleaned: "topic n\x85l" -> "topic nl"
        if isinstance(peer, IrcPeer):
            peer.send_line("TOPIC #r")
            assert peer.expect_cmd("332").params[-1] == "topic nl"
        elif isinstance(peer, JsonPeer):
            peer.send_json({"type": "topic", "room": "#r"})
            assert peer.expect_type("topic")["topic"] == "topic nl"
        else:
            peer.send("/topic\n")
            assert peer.expect("*** Topic of #r") == "*** Topic of #r: topic nl (set by alice)"
    eve.send_line(f"QUIT :quit {''.join(EVIL)}")
    eve.until_closed()
    everyone.remove(eve)
    sync_all()
    # A valid key is set and reaches IRC members only as IRC shows it.
    alice.send_line("MODE #r +k sesame")
    seen = sync_all()
    assert [m.command for m in seen["bob"]] == ["MODE"]
    assert seen["carol"] == ["*** alice set a key on the room (#r)"]
    assert "sesame" not in json.dumps(seen["dave"])
    assert_all_received_clean([alice, bob, eve, carol, dave])


# -- 3. room names that display as something else are refused everywhere ----------------------

# "#\u202egnp.exe" displays as "#exe.png"; U+0085 (NEL) is a C1 line break; U+00A0 a space.
SPOOFED_ROOMS = {"#\u202egnp.exe": "U+202E", "#a\x85b": "U+0085", "#\u00a0x": "U+00A0"}


def test_room_names_with_c1_bidi_or_odd_spaces_are_refused_on_every_front_end(make_server):
    server = make_server(irc_port=0)
    json_peer = JsonPeer(server.address, "dave")
    irc_peer = IrcPeer(server.irc_address, "erin")
    text = TextPeer(server.address, "carol")
    for room, culprit in SPOOFED_ROOMS.items():
        text.send(f"/join {room}\n")
        refusal = text.line()
        assert refusal.startswith("! invalid room name "), (room, refusal)
        assert culprit in refusal, (room, refusal)
        json_peer.send_json({"type": "join", "room": room})
        error = json_peer.expect_type("error")
        assert error["code"] == "bad_room_name", (room, error)
        assert culprit in error["message"], (room, error)
        irc_peer.send_line(f"JOIN {room}")
        reply = irc_peer.msg()
        assert reply.command in ("403", "476"), (room, reply)
    # Nobody is anywhere but the lobby, and no such room was made under another name.
    assert server.hub.room_count() == 1
    text.send("/rooms\n")
    assert text.line() == "*** Rooms (1): #lobby (2)"
    irc_peer.send_line("JOIN #ok")  # the IRC user is still in a state to join a real room
    assert irc_peer.expect_cmd("366").params[1] == "#ok"


@pytest.mark.parametrize("room", ["lobby", "#\u202egnp.exe", "#a b"])
def test_chat_server_refuses_a_bad_default_room_in_one_line(room):
    result = subprocess.run(
        [sys.executable, "-m", "chat", "--room", room, "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "--room" in result.stderr, result.stderr
    assert "room name" in result.stderr, result.stderr


# -- 4. JSON nested a thousand deep is a bad request, not a crash ------------------------------

DEEP = '{"type": "ping", "x": ' + "[" * 1000 + "]" * 1000 + "}"


def test_deeply_nested_json_is_a_bad_request_and_the_connection_goes_on(make_server):
    server = make_server()
    dave = JsonPeer(server.address, "dave")
    dave.send(DEEP + "\n")
    error = dave.event()
    assert (error["type"], error["code"]) == ("error", "bad_request"), error
    assert dave.sync() == []  # the next request works
    # As the first line of a connection, it still says "JSON mode" and is refused as JSON.
    first = JsonPeer(server.address)
    first.send(DEEP + "\n")
    error = first.event()
    assert (error["type"], error["code"]) == ("error", "bad_request"), error
    first.send_json({"type": "hello", "version": 1, "nick": "erin"})
    assert first.expect_type("welcome")["nick"] == "erin"
    assert server.hub.nicks() == ("dave", "erin")
    first.close()
    dave.close()
    server.stop()
    assert server.audit.total == 0, server.audit.summary()


# -- 5. rooms are limited per user and on the server; every list still arrives whole -----------


def test_rooms_per_user_limit_is_advertised_and_enforced_on_every_front_end(make_server):
    server = make_server(irc_port=0, rooms_per_user=3, flood_rate=0)
    irc_peer = IrcPeer(server.irc_address)
    welcome = irc_peer.register("erin")
    isupport = next(m for m in welcome if m.command == "005").params
    assert "CHANLIMIT=#:3" in isupport
    irc_peer.send_line("JOIN #a,#b,#c,#d")
    refused = irc_peer.expect_cmd("405")
    assert refused.params[1] == "#d"
    assert server.hub.rooms_of(server.hub.holder("erin")) == ("#a", "#b", "#c")
    text = TextPeer(server.address, "carol")  # in #lobby: one of its three
    text.send("/join #a\n/join #b\n/join #c\n")
    text.expect("*** Now talking in #b")
    assert text.expect("! ") == "! you are in 3 rooms, the most allowed: /part one first"
    dave = JsonPeer(server.address, "dave")
    for room in ("#a", "#b", "#c"):
        dave.send_json({"type": "join", "room": room})
    error = dave.expect_type("error")
    assert (error["code"], error["message"]) == (
        "too_many_rooms",
        "you are in 3 rooms, the most allowed: /part one first",
    )
    # Leaving one makes room for another.
    irc_peer.send_line("PART #c")
    irc_peer.send_line("JOIN #d")
    assert irc_peer.expect_cmd("366").params[1] == "#d"


def test_server_room_limit_refuses_new_rooms_but_not_existing_ones(make_server):
    server = make_server(irc_port=0, max_rooms=3, flood_rate=0)  # #lobby and two more
    erin = IrcPeer(server.irc_address, "erin")
    erin.send_line("JOIN #a,#b,#c")
    refused = erin.expect_cmd("405")
    assert refused.params[1:] == ("#c", "The server has too many channels")
    carol = TextPeer(server.address, "carol")
    carol.send("/join #new\n")
    assert carol.line() == "! the server has 3 rooms, the most it allows: join an existing one"
    carol.send("/join #a\n")  # at the limit, an existing room still takes newcomers
    assert carol.expect("*** Now talking in #a").startswith("*** Now talking in #a (2)")
    dave = JsonPeer(server.address, "dave")
    dave.send_json({"type": "join", "room": "#new"})
    assert dave.expect_type("error")["code"] == "too_many_rooms"
    dave.send_json({"type": "join", "room": "#b"})
    assert dave.expect_type("room")["room"] == "#b"
    assert server.hub.room_count() == 3


def test_every_room_is_listed_to_every_front_end_with_a_small_sendq(make_server):
    rooms = 200
    topic = "t" * 389  # the longest topic (TOPIC_MAX_CHARS), a different last letter each
    server = make_server(
        irc_port=0,
        max_rooms=rooms,
        rooms_per_user=rooms,
        sendq_bytes=16384,
        flood_rate=0,
    )
    maker = IrcPeer(server.irc_address, "maker")
    names = [f"#room{i:03d}" for i in range(rooms - 1)]  # and #lobby
    for start in range(0, len(names), 5):  # a few at a time: the echoes fit maker's sendq
        batch = names[start : start + 5]
        maker.send_line("JOIN " + ",".join(batch))
        for name in batch:
            maker.send_line(f"TOPIC {name} :{topic}{name[-1]}")
        maker.sync()
    assert server.hub.room_count() == rooms
    maker.send_line("JOIN #one-too-many")
    assert maker.expect_cmd("405").params[1] == "#one-too-many"
    expected = {"#lobby", *names}

    carol = TextPeer(server.address, "carol")
    carol.send("/rooms\n")
    first = carol.expect("*** Rooms (")
    assert first.startswith(f"*** Rooms ({rooms}): ")
    listed = first.split(": ", 1)[1].split(", ")
    carol.send("/users\n")  # a barrier: the list ends before its answer
    while not (line := carol.line()).startswith("*** Online ("):
        assert line.startswith("***   "), line
        listed += line[len("***   ") :].split(", ")
    assert {entry.split(" (")[0] for entry in listed} == expected

    dave = JsonPeer(server.address, "dave")
    dave.send_json({"type": "rooms"})
    objects = [dave.expect_type("rooms")]
    while objects[-1].get("more"):
        objects.append(dave.expect_type("rooms"))
    assert len(objects) > 1
    assert all(o.get("more") is True for o in objects[:-1])
    assert "more" not in objects[-1]
    got = {r["room"]: r["topic"] for o in objects for r in o["rooms"]}
    assert set(got) == expected
    assert all(got[name] == topic + name[-1] for name in names)
    assert dave.sync() == []  # still connected

    erin = IrcPeer(server.irc_address, "erin")
    erin.send_line("LIST")
    erin.expect_cmd("321")
    entries = {}
    while (message := erin.msg()).command == "322":
        entries[message.params[1]] = message.params[3]
    assert message.command == "323"
    assert set(entries) == expected
    assert all(entries[name] == topic + name[-1] for name in names)
    assert erin.sync() == []
    assert server.client_count == 4  # nobody was dropped as too slow


# -- 6. a secret room is "no such room" to outsiders, whatever they ask; a key only to members --


def test_secret_room_and_its_key_are_hidden_from_outsiders(make_server):
    server = make_server(irc_port=0)
    owner = JsonPeer(server.address, "alice")
    owner.send_json({"type": "join", "room": "#secret"})
    owner.expect_type("room")
    owner.send_json({"type": "topic", "room": "#secret", "topic": "the plan"})
    owner.send_json({"type": "mode", "room": "#secret", "secret": True, "key": "sesame"})
    owner.sync()
    outsider = JsonPeer(server.address, "bob")
    for request in (
        {"type": "topic", "room": "#secret"},
        {"type": "message", "room": "#secret", "text": "hello?"},
        {"type": "action", "room": "#secret", "text": "knocks"},
        {"type": "who", "room": "#secret"},
        {"type": "part", "room": "#secret"},
    ):
        outsider.send_json(request)
        error = outsider.expect_type("error")
        assert (error["code"], error["message"]) == (
            "no_such_room",
            "there is no room called #secret",
        ), (request, error)
    assert "the plan" not in json.dumps(outsider.sync())
    text = TextPeer(server.address, "carol")
    text.send("/who #secret\n")
    assert text.line() == "! there is no room called #secret"
    irc_outsider = IrcPeer(server.irc_address, "erin")
    for command in ("MODE #secret", "TOPIC #secret", "NAMES #secret", "PRIVMSG #secret :hi"):
        irc_outsider.send_line(command)
        reply = irc_outsider.msg()
        assert reply.command in ("403", "401", "366"), (command, reply)
        assert reply.params[1] == "#secret"
        if command.startswith(("MODE", "TOPIC")):
            assert reply.command == "403", (command, reply)
    assert irc_outsider.sync() == []
    # A room that is not secret: its modes show "k" to all, the key itself to members only.
    irc_member = IrcPeer(server.irc_address, "frank")
    irc_member.send_line("JOIN #keyed")
    irc_member.send_line("MODE #keyed +k hunter2")
    irc_member.expect_cmd("MODE")
    irc_member.send_line("MODE #keyed")
    assert irc_member.expect_cmd("324").params[1:] == ("#keyed", "+nk", "hunter2")
    irc_outsider.send_line("MODE #keyed")
    shown = irc_outsider.expect_cmd("324").params
    assert shown[1] == "#keyed", shown
    assert "hunter2" not in shown, shown
    irc_outsider.send_line("TOPIC #keyed")
    assert irc_outsider.msg().command == "331"  # public: its (empty) topic is no secret


# -- 7. before the password, nothing about who is online ---------------------------------------


def test_nick_before_pass_never_says_who_is_online(make_server):
    server = make_server(irc_port=0, password="sesame")
    alice = IrcPeer(server.irc_address)
    alice.send_line("PASS sesame")
    alice.register("alice")
    for lines in ("NICK alice\r\nUSER u 0 * :R\r\n", "USER u 0 * :R\r\nNICK alice\r\n"):
        prober = Peer(server.irc_address)
        prober.send(lines)
        replies = prober.until_closed()
        assert [r.split(" ")[1] for r in replies] == ["464", ":Closing"], replies
        assert not any(" 433 " in r or "alice" in r.split(" ", 3)[-1] for r in replies), replies
    # With the password, the same NICK is told it is taken, as usual.
    member = IrcPeer(server.irc_address)
    member.send("PASS sesame\r\nNICK alice\r\nUSER u 0 * :R\r\n")
    assert member.expect_cmd("433").params[1] == "alice"


# -- 8. cut off for a line without end: the client is told why ---------------------------------


def test_a_line_without_end_gets_a_closing_message_before_the_close(make_server):
    server = make_server(irc_port=0)
    endless = b"x" * (130 * 1024)  # past the 64 KiB a line may be discarded for
    irc_peer = IrcPeer(server.irc_address, "erin")
    irc_peer.send(endless)
    lines = irc_peer.until_closed()
    assert lines[-1] == "ERROR :Closing link: (Line too long, no newline in sight)\r", lines
    irc_early = Peer(server.irc_address)  # not even registered
    irc_early.send(endless)
    assert irc_early.until_closed()[-1].startswith("ERROR :Closing link: (Line too long")
    text = TextPeer(server.address, "carol")
    text.send(endless)
    assert text.until_closed()[-1] == "! line too long, no newline in sight"
    json_peer = JsonPeer(server.address, "dave")
    json_peer.send(endless)
    last = json.loads(json_peer.until_closed()[-1])
    assert (last["code"], last["message"]) == (
        "line_too_long",
        "line too long, no newline in sight",
    )


# -- 9. a client that vanished without QUIT may come back at once under its name --------------

RECONNECTS = 300


def _close_abruptly(peer, reset):
    """Closes without QUIT: a FIN, or with reset=True a reset (unread input, linger 0)."""
    if reset:
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
    peer.close()


def test_an_irc_client_reconnecting_at_once_gets_its_nick_back(make_server):
    server = make_server(irc_port=0, flood_rate=0)
    refused = []
    for i in range(RECONNECTS):
        peer = IrcPeer(server.irc_address)
        peer.send("NICK racer\r\nUSER u 0 * :R\r\n")
        first = peer.msg()
        if first.command != "001":
            refused.append((i, first))
        elif i % 2 == 0:
            peer.expect_cmd("422")  # everything read: the close is a plain FIN
        _close_abruptly(peer, reset=i % 4 == 1)
    assert refused == [], f"{len(refused)} of {RECONNECTS} refused, e.g. {refused[:3]}"


def test_a_json_client_reconnecting_at_once_gets_its_nick_back(make_server):
    server = make_server(flood_rate=0)
    refused = []
    for i in range(RECONNECTS):
        peer = JsonPeer(server.address)
        peer.send_json({"type": "hello", "version": 1, "nick": "racer"})
        first = peer.event()
        if first["type"] != "welcome":
            refused.append((i, first))
        elif i % 2 == 0:
            peer.expect_type("join")
        _close_abruptly(peer, reset=i % 4 == 1)
    assert refused == [], f"{len(refused)} of {RECONNECTS} refused, e.g. {refused[:3]}"


# -- 10. stop() twice, and from two threads at once --------------------------------------------


def test_stop_is_safe_twice_and_from_two_threads_at_once():
    for _ in range(30):
        server = ChatServer(ServerConfig(host="127.0.0.1", port=0, irc_port=0)).start()
        clients = [TextPeer(server.address, "alice"), IrcPeer(server.irc_address, "bob")]
        # Connected while the server stops: each reads its goodbye and hangs up, as nc does.
        readers = [threading.Thread(target=client.until_closed) for client in clients]
        for reader in readers:
            reader.start()
        barrier = threading.Barrier(2)
        errors = []
        returned = []

        def stop(server=server, barrier=barrier, errors=errors, returned=returned):
            try:
                barrier.wait(TIMEOUT_S)
                server.stop()
                returned.append(threading.current_thread().name)
            except BaseException as error:
                errors.append(repr(error))

        stoppers = [threading.Thread(target=stop, name=f"stop{i}") for i in range(2)]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(TIMEOUT_S * 2)
        for reader in readers:
            reader.join(TIMEOUT_S * 2)
        assert not any(t.is_alive() for t in stoppers + readers)
        assert errors == []
        assert sorted(returned) == ["stop0", "stop1"]
        assert server.stopping
        assert server.client_count == 0
        server.stop()  # and a third time, from this thread
        assert server.audit.total == 0, server.audit.summary()


# -- 11. a busy --irc-port is named as such ----------------------------------------------------


def test_a_busy_irc_port_is_reported_as_the_irc_port():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    busy = holder.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "chat", "--port", "0", "--irc-port", str(busy)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=15,
        )
    finally:
        holder.close()
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "--irc-port" in result.stderr, result.stderr
    assert f":{busy} " in result.stderr, result.stderr


# -- the pure parts of 5: long replies are cut into pieces a small send queue can take ---------


def test_reply_pieces_and_json_room_objects_stay_small():
    from chat import events as ev
    from chat.dialects import split_lines
    from chat.wire import jsonl

    lines = b"".join(b"x" * (n % 700) + b"\n" for n in range(400))
    for size in (1, 100, 1000, 16384):
        pieces = split_lines(lines, size)
        assert b"".join(pieces) == lines
        # at most `size` bytes, unless the piece is a single longer line
        assert all(len(p) <= size or p.count(b"\n") == 1 for p in pieces), size
    worst = "\U0001f600" * 390  # the longest topic, each character escaped as 12 bytes
    for topic in ("", "t" * 390, worst):
        rooms = tuple(ev.RoomInfo(f"#room{i}", 1, topic) for i in range(300))
        encoded = jsonl.room_list_lines(ev.RoomList(rooms, 0.0)).splitlines()
        objects = [json.loads(line) for line in encoded]
        assert [r["room"] for o in objects for r in o["rooms"]] == [r.name for r in rooms]
        assert [o.get("more") for o in objects] == [True] * (len(objects) - 1) + [None]
        assert max(map(len, encoded)) <= 16384 // 2
