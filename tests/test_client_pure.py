"""Unit tests of the client's pure layers: sanitising, rendering, commands, completion, state."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from client import commands
from client.commands import Local, Quit, Send, Usage, parse, split_text
from client.completion import ChatCompleter
from client.render import (
    Line,
    error_text,
    format_time,
    info_line,
    mentions,
    nick_colour,
    nick_style,
    own_message_line,
    render_event,
    sanitize,
    wrap,
)
from client.state import Status
from client.wire import LineBuffer, LineTooLong, decode, encode

TS = 1764169200.5

# --- sanitising ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J\x1b[31mred", "\u241b[2J\u241b[31mred"),  # CSI
        ("\x1b]0;pwned\x07", "\u241b]0;pwned\u2407"),  # OSC title + BEL
        ("fake\r<bob> x", "fake\u240d<bob> x"),  # carriage return
        ("two\nlines", "two\u240alines"),
        ("\x9b31m", "\ufffd31m"),  # C1 one-byte CSI
        ("\u202egnp.exe", "\ufffdgnp.exe"),  # bidi override
        ("\u2067iso\u2069", "\ufffdiso\ufffd"),
        ("a\tb", "a b"),
        ("del\x7f", "del\u2421"),
        ("lone \ud800", "lone \ufffd"),
        ("héllo мир 日本 🙂", "héllo мир 日本 🙂"),
    ],
)
def test_sanitize(raw: str, shown: str) -> None:
    assert sanitize(raw) == shown


def test_sanitize_leaves_no_control_character() -> None:
    every = "".join(chr(c) for c in range(0x00, 0x250)) + "\u202a\u202b\u202c\u202d\u202e"
    clean = sanitize(every)
    assert all(not (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0) for c in clean)
    assert not set(clean) & set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


# --- rendering ---------------------------------------------------------------------------


def test_message_has_time_nick_and_stable_colour() -> None:
    line = render_event({"type": "message", "from": "bob", "text": "hi", "ts": TS}, "alice", 0)
    assert line is not None
    assert line.plain == f"{format_time(TS)} <bob> hi"
    assert (nick_style("bob"), "bob") in line.fragments
    assert not line.highlight


def test_nick_colour_is_stable_and_case_insensitive() -> None:
    assert nick_colour("Alice") == nick_colour("alice") == nick_colour("ALICE")
    assert len({nick_colour(f"user{i}") for i in range(50)}) > 5  # they do spread


def test_mention_highlights() -> None:
    line = render_event({"type": "message", "from": "bob", "text": "Alice: lunch?"}, "alice", TS)
    assert line is not None
    assert line.highlight
    assert any("mention" in style for style, _ in line.fragments)
    assert mentions("hey @alice!", "alice")
    assert not mentions("malice aforethought", "alice")
    assert not mentions("alice_ is here", "alice")


def test_own_action_does_not_ring() -> None:
    line = render_event({"type": "action", "from": "alice", "text": "is alice"}, "alice", TS)
    assert line is not None
    assert line.plain.endswith(" * alice is alice")
    assert not line.highlight


def test_private_messages_look_distinct() -> None:
    incoming = render_event(
        {"type": "private", "from": "bob", "to": "alice", "text": "psst"}, "alice", TS
    )
    outgoing = render_event(
        {"type": "private", "from": "alice", "to": "bob", "text": "hey"}, "alice", TS
    )
    assert incoming is not None
    assert outgoing is not None
    assert incoming.plain.endswith("[private] <bob> psst")
    assert incoming.highlight
    assert outgoing.plain.endswith("[private to bob] <alice> hey")
    assert not outgoing.highlight
    assert all("private" in style for style, _ in incoming.fragments[1:])


@pytest.mark.parametrize(
    ("event", "text"),
    [
        ({"type": "join", "nick": "dave", "count": 4}, "-!- dave joined (4 here)"),
        (
            {"type": "leave", "nick": "bob", "reason": "quit", "message": "lunch", "count": 3},
            "-!- bob left (quit: lunch, 3 online)",
        ),
        (
            {
                "type": "leave",
                "nick": "bob",
                "reason": "connection lost",
                "message": "",
                "count": 3,
            },
            "-!- bob left (connection lost, 3 online)",
        ),
        ({"type": "rename", "old": "bob", "new": "rob"}, "-!- bob is now known as rob"),
        ({"type": "rename", "old": "al", "new": "alice"}, "-!- You are now known as alice"),
        (
            {"type": "users", "room": None, "users": ["alice", "bob"]},
            "-!- Online (2): alice, bob",
        ),
        (
            {"type": "users", "room": "#rust", "users": ["alice", "bob"]},
            "-!- People in #rust (2): alice, bob",
        ),
        ({"type": "notice", "text": "shutting down"}, "-!- server: shutting down"),
    ],
)
def test_room_events_are_dimmed(event: dict[str, object], text: str) -> None:
    line = render_event({**event, "ts": TS}, "alice", 0)
    assert line is not None
    assert line.plain == f"{format_time(TS)} {text}"
    assert line.fragments[1][0] == "class:dim"


def test_error_is_not_dimmed() -> None:
    line = render_event(
        {"type": "error", "code": "no_such_nick", "message": "no such nick: x"}, "alice", TS
    )
    assert line is not None
    assert "class:error" in line.fragments[1][0]
    assert line.plain.endswith("-!- no such nick: x")


@pytest.mark.parametrize(
    ("event", "shown"),
    [
        ({"code": "no_such_nick", "message": "no such nick: bob"}, "no such nick: bob"),
        ({"code": "no_such_nick"}, "no such nick"),
        ({"code": "bad_key", "message": ""}, "that room needs a key: /join #room KEY"),
        ({"code": "frobnicated"}, "the server refused that (frobnicated)"),
        ({"message": "slow down"}, "slow down"),
        ({}, "the server refused that"),
    ],
)
def test_errors_are_sentences_never_bare_codes(event: dict[str, object], shown: str) -> None:
    line = render_event({"type": "error", "ts": TS, **event}, "alice", 0)
    assert line is not None
    assert line.plain == f"{format_time(TS)} -!- {shown}"
    assert error_text("no_such_nick", "") == "no such nick"
    assert "_" not in error_text("not_operator", "")


def test_every_received_field_is_sanitised() -> None:
    line = render_event(
        {"type": "message", "from": "b\x1bob", "text": "\x1b[31mred\x07", "ts": TS}, "alice", 0
    )
    assert line is not None
    assert "\x1b" not in line.plain
    assert "\x07" not in line.plain
    assert "\u241b[31mred\u2407" in line.plain


def test_unknown_and_pong_are_not_shown() -> None:
    assert render_event({"type": "pong", "token": 1}, "a", TS) is None
    assert render_event({"type": "future_thing"}, "a", TS) is None


def test_local_lines() -> None:
    assert info_line("hello", TS).plain == f"{format_time(TS)} -!- hello"
    assert own_message_line("alice", "hi", TS).plain == f"{format_time(TS)} <alice> hi"
    assert "queued" in own_message_line("alice", "hi", TS, queued=True).plain


def test_kicked_or_parted_from_my_current_room_says_where_i_talk_now() -> None:
    kick = {"type": "kick", "ts": TS, "room": "#rust", "nick": "alice", "by": "carol"}
    line = render_event({**kick, "reason": "too loud"}, "alice", 0, "#lobby", room_before="#rust")
    assert line is not None
    assert line.plain == (
        f"{format_time(TS)} -!- You were kicked from #rust by carol (too loud);"
        " now talking in #lobby"
    )
    assert line.highlight
    assert "class:error" in line.fragments[1][0]
    alone = render_event(kick, "alice", 0, "", room_before="#rust")
    assert alone is not None
    assert alone.plain.endswith("by carol; you are in no room now: /join #room")
    other = render_event(kick, "alice", 0, "#lobby", room_before="#lobby")  # not my current one
    assert other is not None
    assert other.plain.endswith("You were kicked from #rust by carol")
    part = {"type": "part", "ts": TS, "room": "#rust", "nick": "alice", "message": "bye"}
    left = render_event(part, "alice", 0, "#lobby", room_before="#rust")
    assert left is not None
    assert left.plain == f"{format_time(TS)} -!- You left #rust (bye); now talking in #lobby"


# --- commands ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "parsed"),
    [
        ("hello", Send(({"type": "message", "text": "hello"},))),
        ("//slash", Send(({"type": "message", "text": "/slash"},))),
        ("/msg bob hi there", Send(({"type": "private", "to": "bob", "text": "hi there"},))),
        ("/query bob hi", Send(({"type": "private", "to": "bob", "text": "hi"},))),
        ("/me waves", Send(({"type": "action", "text": "waves"},))),
        ("/nick rob", Send(({"type": "nick", "nick": "rob"},))),
        ("/who", Send(({"type": "who"},))),
        ("/NAMES", Send(({"type": "who"},))),
        ("/users", Send(({"type": "users"},))),
        ("/quit", Quit("")),
        ("/quit gone fishing", Quit("gone fishing")),
        ("/help", Local("help")),
        ("/clear", Local("clear")),
        ("/msg bob", Usage("usage: /msg NICK text")),
        ("/me", Usage("usage: /me text")),
        ("/nick", Usage("usage: /nick NEW")),
        ("/frob x", Usage("unknown command /frob (try /help)")),
        ("   ", None),
    ],
)
def test_parse(typed: str, parsed: commands.Parsed) -> None:
    assert parse(typed) == parsed


def test_long_message_is_split_into_lines_that_fit() -> None:
    text = ("word " * 3000).strip()
    result = parse(text)
    assert isinstance(result, Send)
    assert len(result.messages) > 1
    for message in result.messages:
        assert len(encode(message)) <= commands.MAX_LINE_BYTES
    assert " ".join(m["text"] for m in result.messages) == text


def test_split_counts_json_escaping() -> None:
    pieces = split_text({"type": "message"}, "\x01" * 2000)  # 6 bytes each once escaped
    assert len(pieces) > 1
    assert all(len(encode({"type": "message", "text": p})) <= 4096 for p in pieces)


def test_help_lists_both_sets() -> None:
    text = "\n".join(commands.help_lines())
    for name in ("/msg", "/me", "/nick", "/who", "/quit", "/help", "/clear"):
        assert name in text


# --- completion ----------------------------------------------------------------------------


def complete(text: str, nicks: tuple[str, ...] = ("alice", "Albert", "bob", "me")) -> list[str]:
    completer = ChatCompleter(lambda: nicks, lambda: "me")
    document = Document(text, len(text))
    results = completer.get_completions(document, CompleteEvent(completion_requested=True))
    return [document.text[: len(text) + c.start_position] + c.text for c in results]


def test_nick_at_start_of_line_addresses() -> None:
    assert complete("al") == ["alice: ", "Albert: "]


def test_nick_mid_line_and_after_msg() -> None:
    assert complete("hi bo") == ["hi bob"]
    assert complete("/msg bo") == ["/msg bob "]


def test_after_msg_everyone_in_my_rooms_is_offered() -> None:
    completer = ChatCompleter(lambda: ("bob",), lambda: "me", everyone=lambda: ("bob", "carol"))
    document = Document("/msg ca", 7)
    found = completer.get_completions(document, CompleteEvent(completion_requested=True))
    assert [c.text for c in found] == ["carol "]
    document = Document("ca", 2)  # elsewhere: only the current room
    assert list(completer.get_completions(document, CompleteEvent())) == []
    status = Status("h:1").apply({"type": "welcome", "nick": "me", "room": "#a", "users": ["b"]})
    status = status.apply({"type": "room", "room": "#b", "users": ["me", "C"]})
    assert status.known == ("b", "C", "me")


def test_own_nick_is_not_offered() -> None:
    assert complete("m") == []


def test_rooms_complete() -> None:
    completer = ChatCompleter(lambda: (), lambda: "me", lambda: ("#lobby", "#rust"))
    document = Document("/join #r", 8)
    found = completer.get_completions(document, CompleteEvent(completion_requested=True))
    assert [c.text for c in found] == ["#rust "]


def test_commands_complete() -> None:
    assert complete("/ni") == ["/nick "]
    assert complete("/q") == ["/quit ", "/query "]
    assert complete("") == []


# --- state ---------------------------------------------------------------------------------


def test_status_follows_room_events() -> None:
    status = Status("127.0.0.1:1").apply(
        {"type": "welcome", "nick": "alice", "room": "#lobby", "users": ["bob", "alice"]}
    )
    assert (status.state, status.nick, status.room) == ("connected", "alice", "#lobby")
    assert status.users == ("alice", "bob")
    status = status.apply({"type": "join", "room": "#lobby", "nick": "Carol"})
    assert status.users == ("alice", "bob", "Carol")
    status = status.apply({"type": "rename", "old": "alice", "new": "alicia"})
    assert status.nick == "alicia"
    assert status.users == ("alicia", "bob", "Carol")
    status = status.apply({"type": "leave", "nick": "carol", "rooms": ["#lobby"]})
    assert status.users == ("alicia", "bob")
    # A reply to /who or /users lists, it does not change who is in my rooms (an older server
    # answers /who with everyone online, labelled as its default room).
    everyone = {"type": "users", "room": "#lobby", "users": ["alicia", "bob", "zed"]}
    assert status.apply(everyone) is status
    assert status.apply({"type": "message"}) is status


def test_status_follows_my_rooms() -> None:
    status = Status("127.0.0.1:1").apply(
        {"type": "welcome", "nick": "alice", "room": "#lobby", "users": ["alice", "bob"]}
    )
    status = status.apply({"type": "join", "room": "#rust", "nick": "alice"})
    status = status.apply({"type": "room", "room": "#rust", "users": ["alice", "dave"]})
    assert (status.room, status.rooms, status.users) == (
        "#rust",
        ("#lobby", "#rust"),
        ("alice", "dave"),
    )
    status = status.apply({"type": "join", "room": "#lobby", "nick": "erin"})
    assert status.users_of("#lobby") == ("alice", "bob", "erin")
    assert status.switch_to("#LOBBY").room == "#lobby"
    status = status.apply({"type": "kick", "room": "#rust", "nick": "dave", "by": "alice"})
    assert status.users == ("alice",)
    status = status.apply({"type": "part", "room": "#rust", "nick": "alice"})
    assert (status.room, status.rooms) == ("#lobby", ("#lobby",))
    status = status.apply({"type": "leave", "nick": "bob", "rooms": ["#lobby"]})
    assert status.users == ("alice", "erin")


# --- wire ----------------------------------------------------------------------------------


def test_line_buffer_whole_and_byte_by_byte() -> None:
    data = encode({"type": "message", "text": "héllo"}) + b"* greeting\r\n" + b'{"type":"pong"}\n'
    whole = LineBuffer().feed(data)
    buffer = LineBuffer()
    pieces = [line for i in range(len(data)) for line in buffer.feed(data[i : i + 1])]
    assert whole == pieces
    assert [decode(line) for line in whole] == [
        {"type": "message", "text": "héllo"},
        None,
        {"type": "pong"},
    ]
    assert LineBuffer().feed(b"partial") == []


def test_line_buffer_limit() -> None:
    with pytest.raises(LineTooLong):
        LineBuffer(max_line_bytes=10).feed(b"x" * 11)


def test_decode_rejects_non_objects() -> None:
    assert decode(b"[1]") is None
    assert decode(b'{"no_type": 1}') is None
    assert decode(b"\xff{") is None
    assert json.loads(encode({"a": "\u00e9"})) == {"a": "é"}


def test_toolbar_shows_state_nick_count_and_queue() -> None:
    from client.ui import toolbar_fragments

    def bar(status: Status, now: float = 100.0) -> str:
        return "".join(text for _, text in toolbar_fragments(status, now))

    status = Status("127.0.0.1:8888").apply(
        {"type": "welcome", "nick": "alice", "room": "#lobby", "users": ["alice", "bob"]}
    )
    assert bar(status) == " 127.0.0.1:8888 │ connected │ alice │ #lobby (2 here)"
    waiting = replace(status, state="reconnecting", retry_at=103.2, attempt=1, queued=2)
    assert bar(waiting) == (
        " 127.0.0.1:8888 │ reconnecting (attempt 1, next in 4s) │ alice │ #lobby (2 here)"
        " │ 2 queued"
    )
    third = replace(waiting, attempt=3, last_error="Connection refused\x1b[2J")
    assert "reconnecting (attempt 3, next in 4s): Connection refused\u241b[2J │" in bar(third)
    two_rooms = status.apply({"type": "room", "room": "#rust", "users": ["alice"]})
    assert bar(two_rooms) == " 127.0.0.1:8888 │ connected │ alice │ #rust (1 here) │ 2 rooms"
    assert "reconnecting (attempt 1, now)" in bar(waiting, now=104.0)
    assert "disconnected" in bar(replace(status, state="disconnected"))


def test_wrap_indents_continuation_rows_under_the_text() -> None:
    line = render_event(
        {"type": "message", "from": "bob", "text": "the quick brown fox jumps over the lazy dog"},
        "alice",
        TS,
    )
    assert line is not None
    rows = ["".join(text for _, text in row).rstrip() for row in wrap(line, 30)]
    assert rows == [
        f"{format_time(TS)} <bob> the quick brown",
        "            fox jumps over the",
        "            lazy dog",
    ]
    assert all(len(row) <= 30 for row in rows)
    assert len(wrap(line, 200)) == 1


def test_wrap_breaks_long_words_and_wide_characters() -> None:
    line = Line((("", "x" * 25),), indent=0)
    assert ["".join(t for _, t in row) for row in wrap(line, 10)] == ["x" * 10, "x" * 10, "x" * 5]
    wide = Line((("", "日本語のテキスト"),), indent=0)  # two cells each
    assert ["".join(t for _, t in row) for row in wrap(wide, 5)] == ["日本", "語の", "テキ", "スト"]


@pytest.mark.parametrize(
    ("typed", "parsed"),
    [
        ("/join #rust", Send(({"type": "join", "room": "#rust"},))),
        ("/join rust sesame", Send(({"type": "join", "room": "#rust", "key": "sesame"},))),
        ("/part", Send(({"type": "part"},))),
        ("/part #rust bye all", Send(({"type": "part", "room": "#rust", "message": "bye all"},))),
        ("/part gone", Send(({"type": "part", "message": "gone"},))),
        ("/rooms", Send(({"type": "rooms"},))),
        ("/topic", Send(({"type": "topic"},))),
        ("/topic borrowing", Send(({"type": "topic", "topic": "borrowing"},))),
        ("/kick bob too loud", Send(({"type": "kick", "nick": "bob", "reason": "too loud"},))),
        ("/key sesame", Send(({"type": "mode", "key": "sesame"},))),
        ("/key", Send(({"type": "mode", "key": ""},))),
        ("/secret on", Send(({"type": "mode", "secret": True},))),
        ("/secret", Usage("usage: /secret on|off")),
        ("/join", Usage("usage: /join #room [key]")),
        ("/kick", Usage("usage: /kick NICK [reason]")),
    ],
)
def test_parse_room_commands(typed: str, parsed: commands.Parsed) -> None:
    assert parse(typed) == parsed


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (
            {"type": "part", "room": "#rust", "nick": "bob", "message": "bye", "count": 1},
            "-!- bob left #rust (bye, 1 here)",
        ),
        (
            {
                "type": "kick",
                "id": 3,
                "room": "#rust",
                "nick": "bob",
                "by": "alice",
                "reason": "loud",
            },
            "-!- bob was kicked from #rust by alice (loud)",
        ),
        (
            {"type": "topic", "id": 4, "room": "#rust", "by": "alice", "topic": "borrowing"},
            "-!- alice set the topic of #rust: borrowing",
        ),
        (
            {"type": "topic", "room": "#rust", "by": "alice", "topic": "borrowing"},
            "-!- Topic of #rust: borrowing (set by alice)",
        ),
        (
            {
                "type": "mode",
                "id": 5,
                "room": "#rust",
                "by": "alice",
                "modes": "+k",
                "args": ["sesame"],
            },
            # In words, as text mode says it (protocol.md), and never a key, even one sent.
            "-!- alice set a key on the room (#rust)",
        ),
        (
            {
                "type": "mode",
                "id": 6,
                "room": "#rust",
                "by": "alice",
                "modes": "-k+so-o",
                "args": ["*", "bob", "carol"],
            },
            "-!- alice removed the room's key, made the room secret, made bob an operator, "
            "took operator from carol (#rust)",
        ),
        (
            {"type": "mode", "id": 7, "room": "#rust", "by": "alice", "modes": "-s", "args": []},
            "-!- alice made the room public (#rust)",
        ),
        (
            {
                "type": "room",
                "room": "#rust",
                "users": ["alice", "bob"],
                "operators": ["alice"],
                "topic": "t",
            },
            "-!- Now talking in #rust (2): @alice, bob. Topic: t",
        ),
        (
            {
                "type": "rooms",
                "rooms": [{"room": "#lobby", "count": 3}, {"room": "#rust", "count": 1}],
            },
            "-!- Rooms (2): #lobby (3), #rust (1)",
        ),
        (
            {"type": "message", "room": "#lobby", "from": "bob", "text": "hi"},
            "[#lobby] <bob> hi",
        ),
        ({"type": "message", "room": "#rust", "from": "bob", "text": "hi"}, "<bob> hi"),
        (
            {"type": "message", "room": "#rust", "from": "bob", "text": "hi", "notice": True},
            "-bob- hi",
        ),
        (
            {"type": "private", "from": "bob", "to": "alice", "text": "waves", "action": True},
            "[private] * bob waves",
        ),
    ],
)
def test_room_events_render(event: dict[str, object], text: str) -> None:
    line = render_event({**event, "ts": TS}, "alice", 0, current_room="#rust")
    assert line is not None
    assert line.plain == f"{format_time(TS)} {text}"


def test_rooms_the_server_keeps_apart_stay_apart() -> None:
    # The server folds only ASCII letters: #Été, #été and #ÉTÉ are three rooms; #éTé is #été.
    status = Status("127.0.0.1:1").apply(
        {"type": "welcome", "nick": "alice", "room": "#été", "users": ["alice"]}
    )
    status = status.apply({"type": "join", "room": "#Été", "nick": "alice"})
    status = status.apply({"type": "room", "room": "#Été", "users": ["alice", "bob"]})
    assert status.rooms == ("#été", "#Été")
    assert status.users_of("#été") == ("alice",)
    assert status.users_of("#Été") == ("alice", "bob")
    assert status.switch_to("#éTé").room == "#été"
    assert status.users_of("#ÉTÉ") == ()  # a third room, which I am not in


def test_away_command_and_its_answers() -> None:
    assert parse("/away gone fishing") == Send(({"type": "away", "text": "gone fishing"},))
    assert parse("/away") == Send(({"type": "away", "text": ""},))
    mine = render_event({"type": "away", "nick": "Alice", "text": "lunch"}, "alice", TS)
    back = render_event({"type": "away", "nick": "alice", "text": None}, "alice", TS)
    theirs = render_event({"type": "away", "nick": "bob", "text": "\x1b[2Jzzz"}, "alice", TS)
    assert mine is not None
    assert mine.plain.endswith("You are away: lunch")
    assert back is not None
    assert back.plain.endswith("You are back")
    assert theirs is not None
    assert "bob is away: " in theirs.plain
    # Not away to begin with: the server says so (was_away false); an older server has no field.
    never = {"type": "away", "nick": "alice", "text": None, "was_away": False}
    not_away = render_event(never, "alice", TS)
    assert not_away is not None
    assert not_away.plain.endswith("You were not marked as away")
    old_server = render_event({"type": "away", "nick": "alice", "text": None}, "alice", TS)
    assert old_server is not None
    assert old_server.plain.endswith("You are back")
    assert "\x1b" not in theirs.plain  # shown as a visible ␛, never sent to the terminal


def test_a_relative_xdg_data_home_is_ignored(tmp_path, monkeypatch):
    # The XDG Base Directory spec: relative paths are invalid and must be ignored.
    from client.tls import default_known_hosts
    from client.ui import default_history_path

    monkeypatch.delenv("CHAT_CLIENT_HISTORY", raising=False)
    monkeypatch.delenv("CHAT_CLIENT_KNOWN_HOSTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    share = tmp_path / ".local" / "share" / "chat-client"
    for relative in ("data", "./data", ""):
        monkeypatch.setenv("XDG_DATA_HOME", relative)
        assert default_history_path() == share / "history", relative
        assert default_known_hosts() == share / "known_hosts", relative
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "abs"))
    assert default_history_path() == tmp_path / "abs" / "chat-client" / "history"
