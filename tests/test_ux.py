"""What users see, over real sockets: who is where, kicks, errors in words, modes without IRC
jargon or keys, and one policy for replies that do not fit in a client's send queue."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest

from chat import events as ev
from chat.wire import jsonl as json_wire
from chat.wire import text as text_wire
from tests.peers import IrcPeer, JsonPeer, TextPeer, wait_until

# Every error code of docs/protocol.md: none of them may stand in for a sentence.
CODES = (
    "nick_invalid",
    "nick_taken",
    "no_such_nick",
    "no_such_room",
    "bad_room_name",
    "not_in_room",
    "user_not_in_room",
    "bad_key",
    "not_operator",
    "too_many_rooms",
    "bad_password",
    "bad_request",
    "not_registered",
    "line_too_long",
    "flood",
    "timeout",
    "server_full",
    "too_many_connections",
)
_CODE_RE = re.compile(r"\b(?:" + "|".join(CODES) + r")\b")


def assert_sentence(message: str) -> None:
    """A person can read it: words, not a bare code, no None or repr debris."""
    assert len(message.split()) >= 2, message
    assert not _CODE_RE.search(message), message
    assert "None" not in message, message


class Recording:
    """Mixin: keeps every line the peer read, also those `expect` skipped."""

    def line(self, timeout: float | None = None) -> str:
        line: str = super().line(timeout)  # type: ignore[misc]
        self.__dict__.setdefault("seen", []).append(line)
        return line


class RecordingText(Recording, TextPeer):
    pass


class RecordingJson(Recording, JsonPeer):
    pass


def settle(peer: TextPeer) -> None:
    """Waits until what the server sent `peer` so far is out of its send queue, but a short
    reply: bytes count against the queue until the sender thread has released them, which may
    be a moment after the client read them. The sender claims a client's pending bytes one
    claim at a time, so once the reply to `/who` has arrived, everything before it is released.
    """
    peer.send("/who\n")
    peer.expect("*** Users in ")


def text_error(peer: TextPeer, line: str) -> str:
    """Sends `line`; returns the error sentence the server answers with (without "! ")."""
    peer.send(line + "\n")
    return peer.expect("! ")[2:]


def json_error(peer: JsonPeer, request: dict[str, Any]) -> dict[str, Any]:
    peer.send_json(request)
    return peer.expect_type("error")


# -- (a) who and users -----------------------------------------------------------------------------


def test_who_is_the_rooms_members_and_users_is_everyone(make_server: Any) -> None:
    server = make_server(irc_port=0, flood_rate=0)
    alice = TextPeer(server.address, "alice")
    bot = JsonPeer(server.address, "bot")
    carol = TextPeer(server.address, "carol")
    dave = IrcPeer(server.irc_address, "dave")  # online, in no room
    carol.send("/join #side\n")
    carol.expect("*** Now talking in #side")

    alice.send("/who\n")
    assert alice.expect("*** Users") == "*** Users in #lobby (3): alice, bot, carol"
    bot.send_json({"type": "who"})
    users = bot.expect_type("users")
    assert (users["room"], users["users"]) == ("#lobby", ["alice", "bot", "carol"])

    alice.send("/who #side\n")
    assert alice.expect("*** Users") == "*** Users in #side (1): @carol"
    bot.send_json({"type": "who", "room": "#side"})
    users = bot.expect_type("users")
    assert (users["room"], users["users"], users["operators"]) == ("#side", ["carol"], ["carol"])

    carol.send("/who\n")  # carol's current room is #side now
    assert carol.expect("*** Users") == "*** Users in #side (1): @carol"

    alice.send("/users\n")
    assert alice.expect("*** Online") == "*** Online (4): alice, bot, carol, dave"
    bot.send_json({"type": "users"})
    users = bot.expect_type("users")
    assert (users["room"], users["users"]) == (None, ["alice", "bot", "carol", "dave"])
    for peer in (alice, bot, carol, dave):
        peer.close()


# -- (b) kicked from the current room --------------------------------------------------------------


def test_kicked_text_user_is_told_where_it_talks_now_and_talks_there(server: Any) -> None:
    alice = TextPeer(server.address, "alice")
    bob = TextPeer(server.address, "bob")
    carol = TextPeer(server.address, "carol")  # in #lobby only: hears where bob's line goes
    alice.send("/join #den\n")
    alice.expect("*** Now talking in #den")
    bob.send("/join #den\n")
    bob.expect("*** Now talking in #den")
    alice.send("/kick bob too loud\n")
    assert bob.expect("*** You were kicked") == (
        "*** You were kicked from #den by alice (too loud). You are now talking in #lobby."
    )
    bob.send("sorry\n")
    assert carol.expect("<bob>") == "<bob> sorry"
    for peer in (alice, bob, carol):
        peer.close()


def test_kicked_text_user_in_no_other_room_is_told_so(server: Any) -> None:
    alice = TextPeer(server.address, "alice")
    bob = TextPeer(server.address, "bob")
    alice.send("/join #den\n")
    alice.expect("*** Now talking in #den")
    bob.send("/join #den\n/part #lobby\n")
    bob.expect("[#lobby] *** bob left #lobby")
    alice.send("/kick bob\n")
    assert bob.expect("*** You were kicked") == (
        "*** You were kicked from #den by alice (alice). "
        "You are in no room now: /join #room to talk again."
    )
    assert text_error(bob, "hello?") == "you are in no room: /join #room first"
    alice.close()
    bob.close()


def test_kicked_json_user_talks_in_its_new_current_room(server: Any) -> None:
    alice = TextPeer(server.address, "alice")
    bot = JsonPeer(server.address, "bot")
    carol = TextPeer(server.address, "carol")
    alice.send("/join #den\n")
    alice.expect("*** Now talking in #den")
    bot.send_json({"type": "join", "room": "#den"})
    bot.expect_type("room")
    alice.send("/kick bot\n")
    kick = bot.expect_type("kick")
    assert (kick["room"], kick["nick"]) == ("#den", "bot")
    bot.send_json({"type": "message", "text": "still here"})
    assert carol.expect("<bot>") == "<bot> still here"
    for peer in (alice, bot, carol):
        peer.close()


# -- (c) and (d): errors are sentences -------------------------------------------------------------


def test_json_without_type_names_the_field_and_the_types(server: Any) -> None:
    bot = JsonPeer(server.address)
    for request in ({}, {"type": None}, {"type": 3}):
        error = json_error(bot, request)
        assert error["code"] == "bad_request"
        assert '"type"' in error["message"]
        for kind in ("hello", "message", "join", "who", "users", "quit"):
            assert kind in error["message"]
        assert_sentence(error["message"])
    bot.close()


def test_every_error_a_text_or_json_user_can_cause_is_a_sentence(make_server: Any) -> None:
    # Room counts: #lobby, #keyed, #ops (op), #a1, #a2 (alice), #b1, #b2 (bot) = max_rooms.
    server = make_server(flood_rate=0, rooms_per_user=3, max_rooms=7)
    op = TextPeer(server.address, "op")
    op.send("/join #ops\n/join #keyed\n/key sesame\n")
    op.expect("*** op set a key on the room (#keyed)")
    alice = TextPeer(server.address, "alice")
    bot = JsonPeer(server.address, "bot")
    carol = TextPeer(server.address, "carol")
    bot2 = JsonPeer(server.address, "bot2")

    # Before registration.
    newcomer = TextPeer(server.address)
    assert_sentence(text_error(newcomer, "alice"))
    assert_sentence(text_error(newcomer, "9lives"))
    program = JsonPeer(server.address)
    for request in (
        {"type": "message", "text": "hi"},
        {"type": "hello", "nick": "alice"},
        {"type": "hello", "nick": "9lives"},
        {"type": "hello", "nick": 7},
        {"type": "hello", "version": 2, "nick": "x"},
    ):
        assert_sentence(json_error(program, request)["message"])

    text_cases = [
        "/frobnicate",
        "/msg",
        "/msg ghost hi",
        "/me",
        "/nick",
        "/nick op",
        "/nick 9lives",
        "/who lobby",
        "/who #nowhere",
        "/join",
        "/join lobby",
        "/join #keyed",
        "/join #keyed wrong",
        "/part #nowhere",
        "/part #ops",
        "/kick",
        "/kick carol",  # in #lobby, which has no operator
        "/key sesame",
        "/key two words",
        "/secret maybe",
        "+/join #a1",
        "/kick ghost",  # alice is #a1's operator now
        "/kick carol",
        "/key a,b",
        "+/join #a2",
        "/join #a3",  # a fourth room: too many for one user
        "x" * 5000,  # one line too long
    ]
    for line in text_cases:
        if line.startswith("+"):  # a step, not an error
            alice.send(line[1:] + "\n")
            alice.expect("*** Now talking in")
            continue
        message = text_error(alice, line)
        assert_sentence(message)

    json_cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "frobnicate"}, "bad_request"),
        ({"type": "message"}, "bad_request"),
        ({"type": "private", "to": "ghost", "text": "hi"}, "no_such_nick"),
        ({"type": "nick", "nick": "op"}, "nick_taken"),
        ({"type": "nick", "nick": "9lives"}, "nick_invalid"),
        ({"type": "who", "room": "#nowhere"}, "no_such_room"),
        ({"type": "topic", "room": "#nowhere"}, "no_such_room"),
        ({"type": "join", "room": "lobby"}, "bad_room_name"),
        ({"type": "join", "room": "#keyed"}, "bad_key"),
        ({"type": "part", "room": "#ops"}, "not_in_room"),
        ({"type": "message", "room": "#ops", "text": "hi"}, "not_in_room"),
        ({"type": "kick", "nick": "carol"}, "not_operator"),
        ({"type": "mode", "key": "sesame"}, "not_operator"),
        ({"type": "join", "room": "#b1"}, ""),
        ({"type": "kick", "nick": "ghost"}, "no_such_nick"),
        ({"type": "kick", "nick": "carol"}, "user_not_in_room"),
        ({"type": "mode", "key": "a,b"}, "bad_key"),
        ({"type": "join", "room": "#b2"}, ""),
        ({"type": "join", "room": "#b3"}, "too_many_rooms"),
    ]
    for request, code in json_cases:
        if not code:  # a step, not an error
            bot.send_json(request)
            bot.expect_type("room")
            continue
        error = json_error(bot, request)
        assert error["code"] == code, (request, error)
        assert_sentence(error["message"])
    bot.send(b"x" * 5000 + b"\n")
    error = bot.expect_type("error")
    assert error["code"] == "line_too_long"
    assert_sentence(error["message"])

    # The server's room limit (7 rooms now), in text and in JSON.
    full = text_error(carol, "/join #zzz")
    assert full == "the server has 7 rooms, the most it allows: join an existing one"
    error = json_error(bot2, {"type": "join", "room": "#zzz"})
    assert (error["code"], error["message"]) == ("too_many_rooms", full)

    # In no room at all.
    carol.send("/part\n")
    carol.expect("*** you are in no room now")
    assert_sentence(text_error(carol, "anyone?"))
    bot2.send_json({"type": "part"})
    bot2.expect_type("notice")
    error = json_error(bot2, {"type": "message", "text": "anyone?"})
    assert error["code"] == "not_in_room"
    assert_sentence(error["message"])
    for peer in (op, alice, bot, carol, bot2, newcomer, program):
        peer.close()


def test_password_and_flood_errors_are_sentences(make_server: Any) -> None:
    server = make_server(password="sesame", flood_rate=1, flood_burst=2)
    nc = TextPeer(server.address)
    assert nc.greeting[1] == "* Password:"
    assert_sentence(text_error(nc, "open"))
    program = JsonPeer(server.address)
    error = json_error(program, {"type": "hello", "nick": "bot"})
    assert error["code"] == "bad_password"
    assert_sentence(error["message"])
    talker = TextPeer(server.address)
    talker.send("sesame\ntalker\n")
    talker.expect("*** talker joined")
    talker.send("a\nb\nc\nd\n")
    assert_sentence(talker.expect("! ")[2:])
    for peer in (nc, program, talker):
        peer.close()


def test_registration_deadline_is_told_in_a_sentence(make_server: Any) -> None:
    server = make_server(register_timeout_s=0.3)
    nc = TextPeer(server.address)
    program = JsonPeer(server.address)
    error = json_error(program, {"type": "ping"})  # JSON mode, not registered
    assert error["code"] == "not_registered"
    assert_sentence(error["message"])
    assert nc.until_closed() == ["! registration timed out"]
    error = program.expect_type("error")
    assert (error["code"], error["message"]) == ("timeout", "registration timed out")
    program.close()


# -- (e) modes in words, keys never shown ---------------------------------------------------------


def test_modes_are_sentences_and_keys_are_not_broadcast(make_server: Any) -> None:
    server = make_server(irc_port=0, flood_rate=0)
    oper = IrcPeer(server.irc_address, "oper")
    oper.send_line("JOIN #den")
    oper.expect_cmd("366")
    bob = RecordingText(server.address, "bob")
    bot = RecordingJson(server.address, "bot")
    bob.send("/join #den\n")
    bob.expect("*** Now talking in #den")
    bot.send_json({"type": "join", "room": "#den"})
    bot.expect_type("room")

    oper.send_line("MODE #den +k sesame")
    assert bob.expect("*** oper") == "*** oper set a key on the room (#den)"
    mode = bot.expect_type("mode")
    assert (mode["modes"], mode["args"]) == ("+k", ["*"])
    oper.send_line("MODE #den +s")
    assert bob.expect("*** oper") == "*** oper made the room secret (#den)"
    oper.send_line("MODE #den +o bob")
    assert bob.expect("*** oper") == "*** oper made bob an operator (#den)"
    mode = bot.expect_type("mode")
    assert (mode["modes"], mode["args"]) == ("+s", [])
    mode = bot.expect_type("mode")
    assert (mode["modes"], mode["args"]) == ("+o", ["bob"])
    bob.send("/key other\n")  # an operator now
    assert bob.expect("*** bob") == "*** bob set a key on the room (#den)"
    mode = bot.expect_type("mode")
    assert (mode["modes"], mode["args"]) == ("+k", ["*"])
    bob.send("/key\n/secret off\n")
    assert bob.expect("*** bob") == "*** bob removed the room's key (#den)"
    assert bob.expect("*** bob") == "*** bob made the room public (#den)"
    oper.send_line("MODE #den -o bob")
    assert bob.expect("*** oper") == "*** oper took operator from bob (#den)"

    # Everything bob and bot received: no key, no IRC mode notation.
    bob.send("/quit\n")
    bob.until_closed()
    bot.send_json({"type": "quit"})
    bot.until_closed()
    assert len(bob.seen) > 10
    for line in bob.seen:
        assert "sesame" not in line
        assert "other" not in line
        assert not re.search(r"[+-][kso]\b", line), line
    for line in bot.seen:
        assert "sesame" not in line
        assert "other" not in line
    oper.close()


# -- (f) and (g): replies that do not fit in the send queue ----------------------------------------

SMALL_SENDQ = 512


def test_a_reply_too_big_for_the_send_queue_drops_the_client(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chat.connection")
    server = make_server(irc_port=0, flood_rate=0, sendq_bytes=SMALL_SENDQ)
    carol = TextPeer(server.address, "carol")  # sees who leaves and why
    alice = TextPeer(server.address, "alice")
    alice.send("/help\n")  # about 850 bytes
    assert carol.expect("*** alice left") == "*** alice left (send queue exceeded)"
    alice.close()

    # A topic of 390 '"': 420 bytes as text, twice that in JSON (each '"' is escaped).
    setter = TextPeer(server.address, "setter")
    setter.send("/join #big\n")
    settle(setter)
    setter.send("/topic " + '"' * 390 + "\n")
    setter.expect("*** setter set the topic")
    setter.send("/join #lobby\n")
    setter.expect("*** Now talking in #lobby")
    bot = JsonPeer(server.address, "bot")
    bot.send_json({"type": "topic", "room": "#big"})
    assert carol.expect("*** bot left") == "*** bot left (send queue exceeded)"
    bot.close()

    # IRC: the registration burst (001 to 422) is one reply of about 800 bytes.
    irc = IrcPeer(server.irc_address)
    irc.send("NICK dave\r\nUSER dave 0 * :Dave\r\n")
    with pytest.raises(EOFError):
        irc.expect_cmd("001")
    irc.close()
    wait_until(lambda: "dave disconnected (send queue exceeded)" in caplog.text)
    for peer in (carol, setter):
        peer.close()


def test_the_room_view_is_a_reply_too(make_server: Any) -> None:
    # A topic of 390 '"': JSON escapes each one, so a JSON newcomer's view of the room is twice
    # the size of the topic line the members get. Sizes come from the codecs themselves.
    room, topic, setter = "#big", '"' * 390, "setter"
    topic_line = text_wire.encode(ev.TopicChanged(1, 0.0, room, by=setter, topic=topic), setter)
    who_line = text_wire.encode(ev.UserList(room, ("@" + setter,), 0.0), setter)
    view = json_wire.encode(
        ev.RoomView(room, ("@" + setter, "bot"), topic, setter, 0.0, time.time()), "bot"
    )
    sendq = len(topic_line) + len(who_line) + 64
    assert len(view) > sendq + 64
    server = make_server(flood_rate=0, sendq_bytes=sendq)
    owner = TextPeer(server.address, setter)
    owner.send(f"/join {room}\n")
    settle(owner)
    owner.send(f"/topic {topic}\n")
    owner.expect(f"*** {setter} set the topic")

    bot = JsonPeer(server.address, "bot")
    bot.send_json({"type": "join", "room": room})
    owner.expect("*** bot joined")
    assert owner.expect("*** bot left") == "*** bot left (send queue exceeded)"
    owner.close()
    bot.close()


def test_the_welcome_is_a_reply_too(make_server: Any) -> None:
    # A crowd in #lobby whose nicknames JSON escapes (a backslash takes two bytes): each crowd
    # member's queue may hold its greeting (counted until the sender has released it), its text
    # welcome and its join line, and that fits; a JSON newcomer's welcome, listing everyone,
    # does not.
    crowd_nicks = [f"c{i:02}" + "\\" * 13 for i in range(16)]
    everyone = (*crowd_nicks, "bot")
    last = crowd_nicks[-1]
    crowd_most = sum(
        len(text_wire.encode(event, last))
        for event in (
            ev.Greeting(online=len(crowd_nicks) - 1),
            ev.Welcome(last, "#lobby", tuple(crowd_nicks), 0.0),
            ev.Joined(1, 0.0, "#lobby", nick=last, count=len(crowd_nicks)),
        )
    )
    welcome = json_wire.encode(ev.Welcome("bot", "#lobby", everyone, time.time()), "bot")
    sendq = (crowd_most + len(welcome)) // 2
    assert crowd_most + 32 < sendq < len(welcome) - 32
    server = make_server(flood_rate=0, sendq_bytes=sendq)
    crowd = [TextPeer(server.address, nick) for nick in crowd_nicks]
    bot = JsonPeer(server.address)
    bot.send_json({"type": "hello", "nick": "bot"})
    crowd[0].expect("*** bot joined")
    assert crowd[0].expect("*** bot left") == "*** bot left (send queue exceeded)"
    for peer in (*crowd, bot):
        peer.close()


def test_long_lists_arrive_complete_in_pieces_with_a_small_send_queue(make_server: Any) -> None:
    rooms = 300
    server = make_server(
        irc_port=0, flood_rate=0, sendq_bytes=2048, rooms_per_user=rooms + 1, max_rooms=rooms + 1
    )
    maker = JsonPeer(server.address, "maker")
    for start in range(0, rooms, 5):  # 5 joins' replies (about 250 bytes each) fit the queue
        for i in range(start, start + 5):
            maker.send_json({"type": "join", "room": f"#room-{i:03}"})
        assert all(event["type"] != "error" for event in maker.sync())

    alice = TextPeer(server.address, "alice")
    alice.send("/rooms\n/users\n")
    lines = [alice.expect("*** Rooms")]
    while not (line := alice.line()).startswith("*** Online"):
        lines.append(line)
    listed = re.findall(r"#room-\d{3} \(1\)", "\n".join(lines))
    assert len(listed) == rooms
    assert lines[0].startswith(f"*** Rooms ({rooms + 1}): #lobby (2), #room-000 (1)")

    bot = JsonPeer(server.address, "bot")
    bot.send_json({"type": "rooms"})
    names = []
    while True:
        part = bot.expect_type("rooms")
        names += [r["room"] for r in part["rooms"]]
        if not part.get("more"):
            break
    assert len(names) == rooms + 1

    dave = IrcPeer(server.irc_address, "dave")
    dave.send_line("LIST")
    dave.expect_cmd("321")
    listed_irc = []
    while (message := dave.msg()).command == "322":
        listed_irc.append(message.params[1])
    assert message.command == "323"
    assert len(listed_irc) == rooms + 1
    for peer in (maker, alice, bot, dave):
        peer.close()
