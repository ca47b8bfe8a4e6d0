"""Dialects driven without sockets or threads, the way h11 is tested: a FakeLink and a real Hub.

A dialect only talks to its `Link` (chat/dialects) and to the hub, so a test can play the
connection: feed `Line`s to `handle()`, call `on_silence()` or `farewell()` as the reader would,
and read the bytes the client would have received. Every test here is a plain function call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pytest

from chat import events as ev
from chat.config import ServerConfig
from chat.dialects import Dialect, DialectClass, Link
from chat.dialects.irc import IrcDialect
from chat.dialects.textjson import TextJsonDialect
from chat.hub import Hub, Member
from chat.protocol import Line
from chat.wire import EncodeCache

# No flood control unless a test asks: these tests send many lines at once on purpose.
CONFIG = ServerConfig(port=0, flood_rate=0, server_name="srv")


class FakeLink:
    """Plays the connection for one dialect: keeps what the client would receive, in order.

    It is the hub's `Member` too (`deliver`, `flush`, `drop`), like chat/connection.py's
    Connection, with the same rules: events are encoded by the dialect, a reply or event that
    does not fit in `sendq_bytes` ends the client with "send queue exceeded".
    """

    def __init__(self, sendq_bytes: int = 1 << 30, port: int = 1) -> None:
        self.dialect: Dialect | None = None
        self.sendq_bytes = sendq_bytes
        self.out = bytearray()  # everything "sent", in order
        self.events: list[ev.Event] = []  # events the hub delivered, in order
        self.pieces: list[bytes] = []  # the pieces of long replies
        self.flushes = 0
        self.reason: str | None = None
        self._address = ("127.0.0.1", port)
        self._read = 0

    # -- Link ----------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    @property
    def ending(self) -> bool:
        return self.reason is not None

    def send(self, data: bytes) -> None:
        if not self._offer(data):
            self.drop(ev.LeaveReason.SENDQ_EXCEEDED)

    def send_pieces(self, pieces: Iterable[bytes]) -> None:
        for piece in pieces:
            self.pieces.append(piece)
            # Each piece waits for the client to take the ones before (the real link waits for
            # room); so a piece fits if it fits in an empty queue.
            if len(piece) > self.sendq_bytes:
                self.drop(ev.LeaveReason.SENDQ_EXCEEDED)
                return
            self.out += piece

    def end(self, reason: str) -> bool:
        if self.reason is not None:
            return False
        self.reason = reason
        return True

    def label(self) -> str:
        return f"fake:{self._address[1]}"

    # -- Member --------------------------------------------------------------------------------

    def deliver(self, event: ev.Event, cache: EncodeCache | None = None) -> bool:
        assert self.dialect is not None
        self.events.append(event)
        return self._offer(self.dialect.encode(event, cache))

    def flush(self) -> None:
        self.flushes += 1

    def drop(self, reason: str) -> None:
        self.end(reason)

    # -- for the tests -------------------------------------------------------------------------

    def _offer(self, data: bytes) -> bool:
        if self.reason == ev.LeaveReason.SENDQ_EXCEEDED:
            return True  # dropped: nothing more goes out, nothing more is refused
        if len(data) > self.sendq_bytes:
            return False
        self.out += data
        return True

    def take(self) -> str:
        """What arrived since the last take, as text."""
        data = bytes(self.out[self._read :])
        self._read = len(self.out)
        return data.decode()

    def take_lines(self) -> list[str]:
        return self.take().splitlines()

    def take_json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.take_lines() if line.startswith("{")]


if TYPE_CHECKING:  # for `mypy --strict tests/test_dialects.py`: the fake is a whole Link and
    # both dialect classes are what a listener serves (chat/server.py relies on the same).
    _link: Link = FakeLink()
    _kinds: tuple[DialectClass, ...] = (TextJsonDialect, IrcDialect)


class Client:
    """One dialect on one FakeLink, fed lines as its connection's reader would feed them."""

    def __init__(self, kind: DialectClass, hub: Hub, config: ServerConfig = CONFIG, **kw: Any):
        self.link = FakeLink(**kw)
        self.dialect = kind(self.link, hub, config)
        self.link.dialect = self.dialect
        self.dialect.greet()

    def feed(self, *lines: str | bytes | Line) -> None:
        """The lines of one recv(), in one handle() call."""
        self.dialect.handle(
            [
                x if isinstance(x, Line) else Line(x.encode() if isinstance(x, str) else x)
                for x in lines
            ]
        )

    def take(self) -> str:
        return self.link.take()

    def lines(self) -> list[str]:
        return self.link.take_lines()

    def json(self) -> list[dict[str, Any]]:
        return self.link.take_json()

    def leave(self) -> None:
        self.dialect.finish(self.link.reason or ev.LeaveReason.CONNECTION_LOST)


def text_user(hub: Hub, nick: str, config: ServerConfig = CONFIG, **kw: Any) -> Client:
    client = Client(TextJsonDialect, hub, config, **kw)
    client.feed(nick)
    client.take()
    return client


def json_user(hub: Hub, nick: str, config: ServerConfig = CONFIG, **kw: Any) -> Client:
    client = Client(TextJsonDialect, hub, config, **kw)
    client.feed(json.dumps({"type": "hello", "version": 1, "nick": nick}))
    client.take()
    return client


def irc_user(hub: Hub, nick: str, config: ServerConfig = CONFIG, **kw: Any) -> Client:
    client = Client(IrcDialect, hub, config, **kw)
    client.feed(f"NICK {nick}", f"USER {nick} 0 * :{nick}")
    client.take()
    return client


def send(client: Client, obj: dict[str, Any]) -> None:
    client.feed(json.dumps(obj))


def irc_commands(text: str) -> list[tuple[str, ...]]:
    """(command, params...) of each CRLF line."""
    from chat.wire.irc import parse

    out = []
    for line in text.split("\r\n"):
        message = parse(line)
        if message is not None:
            out.append((message.command, *message.params))
    return out


@pytest.fixture
def hub() -> Hub:
    return Hub("#lobby", clock=lambda: 1000.0)


# -- the protocols ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [TextJsonDialect, IrcDialect])
def test_dialect_classes_have_everything_the_server_asks_of_them(kind: Any, hub: Hub) -> None:
    # Dialect and DialectClass are static protocols (chat/server.py assigns both classes to
    # DialectClass under mypy --strict); here: every member exists at run time too.
    wanted = [name for name in vars(Dialect) if not name.startswith("_")]
    assert {"greet", "handle", "encode", "on_silence", "farewell", "finish"} <= set(wanted)
    client = Client(kind, hub)
    for name in wanted:
        assert hasattr(client.dialect, name), name
    assert isinstance(client.dialect.max_line_bytes, int)
    assert client.dialect.registered is False
    assert isinstance(kind.refusal("server full, try again later"), bytes)
    assert b"server full" in kind.refusal("server full, try again later")


def test_fake_link_is_a_whole_link() -> None:
    wanted = {n for cls in (Link, Member) for n in vars(cls) if not n.startswith("_")}
    assert {"address", "ending", "send", "send_pieces", "end", "label", "deliver"} <= wanted
    for name in wanted:
        assert hasattr(FakeLink(), name), name


# -- text: registration ----------------------------------------------------------------------------


def test_text_greeting_then_nickname_then_welcome(hub: Hub) -> None:
    alice = Client(TextJsonDialect, hub)
    assert alice.lines() == [
        "* Welcome to chat! 0 online.",
        "* Choose a nickname (1-16 letters, digits or _-[]\\^{}|` not starting with a digit or -):",
    ]
    alice.feed("alice")
    assert alice.lines() == [
        "* Hello alice. Online: alice. Type /help for commands.",
        "*** alice joined (1 online)",
    ]
    assert alice.dialect.registered
    assert hub.nicks() == ("alice",)


def test_text_nickname_taken_or_invalid_prompts_again(hub: Hub) -> None:
    text_user(hub, "alice")
    bob = Client(TextJsonDialect, hub)
    bob.take()
    bob.feed("ALICE")
    assert bob.lines() == ["! nickname ALICE is taken", "* Choose a nickname:"]
    bob.feed("9lives")
    lines = bob.lines()
    assert lines[0].startswith("! invalid nickname '9lives': use 1-16 letters")
    assert lines[1:] == ["* Choose a nickname:"]
    bob.feed("a" * 17)
    assert bob.lines() == ["! nickname too long (max 16)", "* Choose a nickname:"]
    assert not bob.dialect.registered
    bob.feed("bob")
    assert bob.lines()[0] == "* Hello bob. Online: alice, bob. Type /help for commands."


def test_text_password_is_the_first_line() -> None:
    config = ServerConfig(port=0, flood_rate=0, password="sesame")
    hub = Hub()
    good = Client(TextJsonDialect, hub, config)
    assert good.lines() == ["* Welcome to chat!", "* Password:"]
    good.feed("sesame")
    assert good.lines()[1].startswith("* Choose a nickname")
    good.feed("alice")
    assert good.lines()[0].startswith("* Hello alice.")

    bad = Client(TextJsonDialect, hub, config)
    bad.take()
    bad.feed("open", "bob")  # the nickname after a wrong password is never read
    assert bad.lines() == ["! wrong password"]
    assert bad.link.reason == ev.LeaveReason.BAD_PASSWORD
    assert hub.nicks() == ("alice",)


def test_json_first_line_switches_to_json_for_good(hub: Hub) -> None:
    bot = Client(TextJsonDialect, hub)
    bot.take()  # the text greeting: sent before the mode is known
    send(bot, {"type": "hello", "version": 1, "nick": "bot"})
    welcome, joined = bot.json()
    assert welcome == {
        "type": "welcome",
        "version": 1,
        "nick": "bot",
        "room": "#lobby",
        "users": ["bot"],
        "ts": 1000.0,
    }
    assert joined["type"] == "join"
    assert joined["nick"] == "bot"
    bot.feed("hello as text")  # not JSON: an error, in JSON
    (error,) = bot.json()
    assert error["type"] == "error"
    assert error["code"] == "bad_request"
    # A JSON hello with a taken nick is an error; the connection stays for another hello.
    other = Client(TextJsonDialect, hub)
    other.take()
    send(other, {"type": "hello", "nick": "BOT"})
    (error,) = other.json()
    assert (error["code"], error["message"]) == ("nick_taken", "nickname BOT is taken")
    send(other, {"type": "hello", "nick": "bot2"})
    assert other.json()[0]["type"] == "welcome"


def test_json_password_in_hello() -> None:
    config = ServerConfig(port=0, flood_rate=0, password="sesame")
    hub = Hub()
    bot = Client(TextJsonDialect, hub, config)
    bot.take()
    send(bot, {"type": "hello", "nick": "bot", "password": "nope"})
    (error,) = bot.json()
    assert error["code"] == "bad_password"
    assert bot.link.reason == ev.LeaveReason.BAD_PASSWORD
    ok = Client(TextJsonDialect, hub, config)
    send(ok, {"type": "hello", "nick": "ok", "password": "sesame"})
    assert ok.json()[0]["type"] == "welcome"


# -- text: talking ---------------------------------------------------------------------------------


def test_consecutive_messages_reach_the_hub_as_one_batch(hub: Hub) -> None:
    alice, bob = text_user(hub, "alice"), text_user(hub, "bob")
    alice.take()
    bob.link.events.clear()
    flushes = bob.link.flushes
    alice.feed("one", "two", "three", "/me waves", "four")
    # one, two, three: one Batch; then the action (it keeps its place); then "four".
    kinds = [type(e).__name__ for e in bob.link.events]
    assert kinds == ["Batch", "Action", "Message"]
    batch = bob.link.events[0]
    assert isinstance(batch, ev.Batch)
    assert [(type(m), getattr(m, "text", None)) for m in batch.events] == [
        (ev.Message, "one"),
        (ev.Message, "two"),
        (ev.Message, "three"),
    ]
    assert bob.link.flushes - flushes == 3
    assert bob.lines() == [
        "<alice> one",
        "<alice> two",
        "<alice> three",
        "* alice waves",
        "<alice> four",
    ]
    assert alice.lines() == ["* alice waves"]  # messages are not echoed, actions are


def test_json_messages_batch_too_and_may_name_a_room(hub: Hub) -> None:
    bot, bob = json_user(hub, "bot"), json_user(hub, "bob")
    bot.take()
    bob.link.events.clear()
    bot.feed(
        json.dumps({"type": "message", "text": "a"}),
        json.dumps({"type": "message", "text": "b"}),
    )
    assert [type(e).__name__ for e in bob.link.events] == ["Batch"]
    assert [(e["from"], e["text"]) for e in bob.json()] == [("bot", "a"), ("bot", "b")]
    send(bot, {"type": "message", "text": "c", "room": "#nowhere"})
    (error,) = bot.json()
    assert error["code"] == "no_such_room"
    assert error["message"] == "there is no room called #nowhere"


# -- text: commands --------------------------------------------------------------------------------


def test_text_rooms_join_part_who_users_topic(hub: Hub) -> None:
    alice, bob = text_user(hub, "alice"), text_user(hub, "bob")
    alice.take()
    alice.feed("/join #rust")
    assert alice.lines() == [
        "*** alice joined (1 online)",
        "*** Now talking in #rust (1): @alice.",
    ]
    alice.feed("/who")
    assert alice.lines() == ["*** Users in #rust (1): @alice"]
    alice.feed("/who #lobby")
    assert alice.lines() == ["*** Users in #lobby (2): alice, bob"]
    alice.feed("/users")
    assert alice.lines() == ["*** Online (2): alice, bob"]
    alice.feed("/rooms")
    assert alice.lines() == ["*** Rooms (2): #lobby (2), #rust (1)"]
    alice.feed("/topic ownership")
    assert alice.lines() == ["*** alice set the topic: ownership"]
    alice.feed("/topic")
    assert alice.lines() == ["*** Topic of #rust: ownership (set by alice)"]
    bob.take()
    alice.feed("hi rust")  # to the current room: bob is not there
    assert bob.take() == ""
    bob.feed("hi lobby")
    assert alice.lines() == ["[#lobby] <bob> hi lobby"]
    alice.feed("/part #rust bye")
    assert alice.lines() == [
        "*** alice left #rust (bye)",
        "*** Now talking in #lobby (2): alice, bob.",
    ]
    alice.feed("/who #rust")
    assert alice.lines() == ["! there is no room called #rust"]


def test_text_operators_kick_key_secret(hub: Hub) -> None:
    alice, bob, carol = text_user(hub, "alice"), text_user(hub, "bob"), text_user(hub, "carol")
    alice.feed("/join #den")
    bob.feed("/join #den")
    carol.feed("/join #den")
    for user in (alice, bob, carol):
        user.take()
    alice.feed("/key sesame")
    assert alice.lines() == ["*** alice set a key on the room (#den)"]
    assert bob.lines() == ["*** alice set a key on the room (#den)"]
    bob.feed("/key other")
    assert bob.lines() == ["! only operators of #den can do that"]
    assert carol.lines() == ["*** alice set a key on the room (#den)"]
    alice.feed("/secret on")
    assert carol.lines() == ["*** alice made the room secret (#den)"]
    alice.take()
    alice.feed("/kick carol enough")
    assert alice.lines() == ["*** carol was kicked from #den by alice (enough)"]
    assert carol.lines() == [
        "*** You were kicked from #den by alice (enough). You are now talking in #lobby."
    ]
    carol.feed("back in the lobby")  # the next plain line goes where carol was told
    assert "[#lobby] <carol> back in the lobby" in alice.lines()
    carol.feed("/rooms")
    assert carol.lines() == ["*** Rooms (1): #lobby (3)"]  # a secret room is not listed
    carol.feed("/join #den")
    assert carol.lines() == ["! #den needs the right key: /join #den KEY"]
    carol.feed("/join #den sesame")
    assert carol.lines()[-1] == "*** Now talking in #den (3): @alice, bob, carol."
    for user in (alice, bob, carol):
        assert "sesame" not in user.take()


def test_text_quit(hub: Hub) -> None:
    alice, bob = text_user(hub, "alice"), text_user(hub, "bob")
    alice.take()
    alice.feed("/quit lunch", "never handled")
    assert alice.lines() == ["*** Goodbye (lunch)."]
    assert alice.link.reason == ev.LeaveReason.QUIT
    assert bob.lines() == ["*** alice left (quit: lunch)"]
    alice.leave()  # what the reader does last: the leave was announced once
    assert bob.take() == ""
    assert hub.nicks() == ("bob",)


def test_json_commands(hub: Hub) -> None:
    bot, bob = json_user(hub, "bot"), json_user(hub, "bob")
    bot.take()
    send(bot, {"type": "join", "room": "#den"})
    joined, view = bot.json()
    assert (joined["type"], joined["room"], joined["nick"]) == ("join", "#den", "bot")
    assert view == {
        "type": "room",
        "ts": 1000.0,
        "room": "#den",
        "users": ["bot"],
        "operators": ["bot"],
        "topic": "",
        "secret": False,
        "key": False,
    }
    send(bot, {"type": "who"})
    assert bot.json() == [
        {"type": "users", "ts": 1000.0, "room": "#den", "users": ["bot"], "operators": ["bot"]}
    ]
    send(bot, {"type": "who", "room": "#lobby"})
    assert bot.json()[0]["users"] == ["bob", "bot"]
    send(bot, {"type": "users"})
    assert bot.json() == [
        {"type": "users", "ts": 1000.0, "room": None, "users": ["bob", "bot"], "operators": []}
    ]
    send(bot, {"type": "rooms"})
    (rooms,) = bot.json()
    assert rooms["rooms"] == [
        {"room": "#lobby", "count": 2, "topic": ""},
        {"room": "#den", "count": 1, "topic": ""},
    ]
    assert "more" not in rooms
    send(bot, {"type": "topic", "topic": "bots only"})
    assert bot.json()[0]["topic"] == "bots only"
    send(bot, {"type": "topic"})
    assert bot.json()[0] == {
        "type": "topic",
        "ts": 1000.0,
        "room": "#den",
        "by": "bot",
        "topic": "bots only",
    }
    send(bob, {"type": "join", "room": "#den"})
    bob.take()
    send(bot, {"type": "mode", "key": "sesame", "secret": True})
    (mode,) = bob.json()
    assert (mode["type"], mode["modes"], mode["args"]) == ("mode", "+ks", ["*"])
    send(bot, {"type": "kick", "nick": "bob", "reason": "test"})
    (kick,) = bob.json()
    assert (kick["type"], kick["nick"], kick["by"], kick["reason"]) == (
        "kick",
        "bob",
        "bot",
        "test",
    )
    bot.take()
    send(bob, {"type": "message", "text": "where am I"})  # no room: the current one, #lobby now
    assert bob.json() == []
    (said,) = bot.json()
    assert (said["room"], said["from"], said["text"]) == ("#lobby", "bob", "where am I")
    send(bot, {"type": "part"})
    parted, view = bot.json()
    assert (parted["type"], parted["room"]) == ("part", "#den")
    assert (view["type"], view["room"]) == ("room", "#lobby")
    send(bot, {"type": "quit", "reason": "done"})
    assert [(e["type"], e["text"]) for e in bot.json()] == [("notice", "goodbye (done)")]
    assert bob.json()[0]["type"] == "leave"


def test_json_without_a_type_names_the_field_and_the_types(hub: Hub) -> None:
    bot = Client(TextJsonDialect, hub)
    bot.take()
    bot.feed("{}")
    (error,) = bot.json()
    assert error["code"] == "bad_request"
    assert '"type"' in error["message"]
    assert "hello" in error["message"]
    assert "users" in error["message"]
    assert "None" not in error["message"]


def test_line_too_long_and_farewells_text(hub: Hub) -> None:
    alice = text_user(hub, "alice")
    alice.feed(Line(b"", too_long=True), "still here")
    assert alice.lines() == ["! line too long (max 4096 bytes), dropped"]
    assert alice.link.reason is None
    alice.dialect.farewell(ev.LeaveReason.LINE_TOO_LONG, "line too long, no newline in sight")
    assert alice.lines() == ["! line too long, no newline in sight"]
    bot = json_user(hub, "bot")
    bot.dialect.farewell(ev.LeaveReason.TIMED_OUT, "timed out")
    assert [(e["code"], e["message"]) for e in bot.json()] == [("timeout", "timed out")]
    assert bot.dialect.on_silence() is False  # text and JSON: silence ends the connection


def test_long_replies_go_in_pieces_that_fit_the_send_queue() -> None:
    hub = Hub(rooms_per_user=400)
    config = ServerConfig(port=0, flood_rate=0, rooms_per_user=400, sendq_bytes=4096)
    maker = json_user(hub, "maker", config)
    for i in range(300):
        send(maker, {"type": "join", "room": f"#room-{i:03}"})
    maker.take()
    alice = text_user(hub, "alice", config, sendq_bytes=4096)
    alice.feed("/rooms")
    assert alice.link.reason is None  # not dropped: the list went in pieces
    assert len(alice.link.pieces) > 1
    assert all(len(piece) <= 4096 for piece in alice.link.pieces)
    listed = alice.take()
    assert listed.startswith("*** Rooms (301): #lobby (2), #room-000 (1),")
    assert listed.count(" (1)") == 300


# -- IRC: registration -----------------------------------------------------------------------------


def test_irc_registration_waits_for_cap_end(hub: Hub) -> None:
    bob = Client(IrcDialect, hub)
    assert bob.take() == ""  # IRC clients speak first
    bob.feed("CAP LS 302", "NICK bob", "USER bob 0 * :Bob B")
    assert irc_commands(bob.take()) == [("CAP", "*", "LS", "")]
    assert not bob.dialect.registered
    bob.feed("CAP REQ :multi-prefix")
    assert irc_commands(bob.take()) == [("CAP", "*", "NAK", "multi-prefix")]
    bob.feed("CAP END")
    replies = irc_commands(bob.take())
    assert [r[0] for r in replies] == [
        "001",
        "002",
        "003",
        "004",
        "005",
        "251",
        "254",
        "255",
        "265",
        "266",
        "422",
    ]
    assert replies[0] == ("001", "bob", "Welcome to the chat, bob!~bob@irc")
    assert "CHANLIMIT=#:25" in replies[4]
    assert bob.dialect.registered
    assert hub.rooms_of(bob.link) == ()  # IRC users join their own channels


def test_irc_433_then_another_nick(hub: Hub) -> None:
    text_user(hub, "alice")
    bob = Client(IrcDialect, hub)
    bob.feed("NICK Alice", "USER bob 0 * :Bob")
    assert irc_commands(bob.take()) == [("433", "*", "Alice", "Nickname is already in use")]
    bob.feed("NICK 1bob")
    assert irc_commands(bob.take()) == [("432", "*", "1bob", "Erroneous nickname")]
    bob.feed("JOIN #x")
    assert irc_commands(bob.take()) == [("451", "*", "You have not registered")]
    bob.feed("NICK bob")
    assert irc_commands(bob.take())[0][:2] == ("001", "bob")


def test_irc_password() -> None:
    config = ServerConfig(port=0, flood_rate=0, password="sesame")
    hub = Hub()
    text_user(hub, "alice", config=ServerConfig(port=0, flood_rate=0))
    bad = Client(IrcDialect, hub, config)
    # With a password, who is online is not told before it is checked: no 433 for "alice".
    bad.feed("PASS wrong", "NICK alice", "USER a 0 * :A")
    assert irc_commands(bad.take()) == [
        ("464", "*", "Password incorrect"),
        ("ERROR", "Closing link: (Bad password)"),
    ]
    assert bad.link.reason == ev.LeaveReason.BAD_PASSWORD
    good = Client(IrcDialect, hub, config)
    good.feed("PASS sesame", "NICK bob", "USER b 0 * :B")
    assert irc_commands(good.take())[0][:2] == ("001", "bob")


def test_irc_ping_pong_and_silence(hub: Hub) -> None:
    config = ServerConfig(port=0, flood_rate=0, irc_ping_s=90, irc_timeout_s=150, server_name="srv")
    bob = irc_user(hub, "bob", config)
    bob.feed("PING :abc")
    assert irc_commands(bob.take()) == [("PONG", "srv", "abc")]
    assert bob.dialect.silence_limit() == 90
    assert bob.dialect.on_silence() is True  # silent: a PING first
    assert irc_commands(bob.take()) == [("PING", "srv")]
    assert bob.dialect.silence_limit() == 60  # the rest of the 150 s
    bob.feed("PONG :srv")  # alive after all: back to the full wait
    assert bob.dialect.silence_limit() == 90
    assert bob.dialect.on_silence() is True
    bob.take()
    assert bob.dialect.on_silence() is True  # still silent: ends the connection
    assert irc_commands(bob.take()) == [("ERROR", "Closing link: (Ping timeout: 150 s)")]
    assert bob.link.reason == ev.LeaveReason.PING_TIMEOUT


def test_irc_line_too_long(hub: Hub) -> None:
    bob = irc_user(hub, "bob")
    bob.feed(Line(b"", too_long=True))
    assert irc_commands(bob.take()) == [("417", "bob", "Input line was too long")]
    assert bob.link.reason is None
    bob.dialect.farewell(ev.LeaveReason.LINE_TOO_LONG, "line too long, no newline in sight")
    assert irc_commands(bob.take()) == [
        ("ERROR", "Closing link: (Line too long, no newline in sight)")
    ]


# -- IRC: channels ---------------------------------------------------------------------------------


def test_irc_join_names_topic_mode_kick(hub: Hub) -> None:
    bob, eve = irc_user(hub, "bob"), irc_user(hub, "eve")
    alice = text_user(hub, "alice")
    bob.feed("JOIN #den")
    assert irc_commands(bob.take()) == [
        ("JOIN", "#den"),
        ("353", "bob", "=", "#den", "@bob"),
        ("366", "bob", "#den", "End of /NAMES list"),
    ]
    alice.feed("/join #den")
    assert irc_commands(bob.take()) == [("JOIN", "#den")]
    bob.feed("NAMES #den")
    assert irc_commands(bob.take()) == [
        ("353", "bob", "=", "#den", "alice @bob"),
        ("366", "bob", "#den", "End of /NAMES list"),
    ]
    bob.feed("TOPIC #den :the den")
    assert irc_commands(bob.take()) == [("TOPIC", "#den", "the den")]
    assert alice.lines()[-1] == "*** bob set the topic: the den"
    bob.feed("TOPIC #den")
    assert irc_commands(bob.take()) == [
        ("332", "bob", "#den", "the den"),
        ("333", "bob", "#den", "bob", "1000"),
    ]
    bob.feed("MODE #den +ko sesame alice")
    assert irc_commands(bob.take()) == [("MODE", "#den", "+ko", "sesame", "alice")]
    assert alice.lines() == ["*** bob set a key on the room, made alice an operator (#den)"]
    bob.feed("MODE #den")
    assert irc_commands(bob.take()) == [("324", "bob", "#den", "+nk", "sesame")]
    eve.feed("MODE #den")
    assert "sesame" not in eve.take()  # the key is for members only
    eve.feed("JOIN #den")
    assert irc_commands(eve.take()) == [("475", "eve", "#den", "Cannot join channel (+k)")]
    eve.feed("JOIN #den sesame")
    assert irc_commands(eve.take())[0] == ("JOIN", "#den")
    eve.feed("KICK #den alice")
    assert irc_commands(eve.take()) == [("482", "eve", "#den", "You're not channel operator")]
    alice.feed("/kick eve out")
    assert irc_commands(eve.take()) == [("KICK", "#den", "eve", "out")]
    eve.feed("PART #den")
    assert irc_commands(eve.take()) == [("442", "eve", "#den", "You're not on that channel")]
    bob.take()
    bob.feed("MODE #den +s", "PART #den :later")
    assert irc_commands(bob.take()) == [("MODE", "#den", "+s"), ("PART", "#den", "later")]
    eve.feed("NAMES #den", "TOPIC #den", "LIST")  # secret: not there for eve
    assert irc_commands(eve.take()) == [
        ("366", "eve", "#den", "End of /NAMES list"),
        ("403", "eve", "#den", "No such channel"),
        ("321", "eve", "Channel", "Users Name"),
        ("322", "eve", "#lobby", "1", ""),
        ("323", "eve", "End of /LIST"),
    ]


def test_irc_privmsg_notice_who_whois(hub: Hub) -> None:
    bob, eve = irc_user(hub, "bob"), irc_user(hub, "eve")
    alice = text_user(hub, "alice")
    bob.feed("JOIN #lobby")
    bob.take()
    alice.take()
    bob.feed("PRIVMSG #lobby :one", "PRIVMSG #lobby :two", "NOTICE #lobby :three")
    assert alice.lines() == ["<bob> one", "<bob> two", "-bob- three"]
    assert bob.take() == ""  # no echo
    bob.feed("PRIVMSG eve :\x01ACTION waves\x01", "PRIVMSG nobody :hi", "NOTICE nobody :hi")
    assert irc_commands(eve.take()) == [("PRIVMSG", "eve", "\x01ACTION waves\x01")]
    assert irc_commands(bob.take()) == [("401", "bob", "nobody", "No such nick/channel")]
    eve.feed("PRIVMSG #lobby :let me in")
    assert irc_commands(eve.take()) == [("404", "eve", "#lobby", "Cannot send to channel")]
    alice.feed("hello irc")
    assert irc_commands(bob.take()) == [("PRIVMSG", "#lobby", "hello irc")]
    eve.feed("WHO #lobby")
    assert irc_commands(eve.take()) == [
        ("352", "eve", "#lobby", "alice", "text", "srv", "alice", "H", "0 alice"),
        ("352", "eve", "#lobby", "~bob", "irc", "srv", "bob", "H", "0 bob"),
        ("315", "eve", "#lobby", "End of WHO"),
    ]
    eve.feed("WHOIS bob")
    assert irc_commands(eve.take()) == [
        ("311", "eve", "bob", "~bob", "irc", "*", "bob"),
        ("319", "eve", "bob", "#lobby"),
        ("312", "eve", "bob", "srv", "threadroom chat"),
        ("318", "eve", "bob", "End of /WHOIS list"),
    ]
    eve.feed("WHOIS ghost")
    assert [r[0] for r in irc_commands(eve.take())] == ["401", "318"]


def test_irc_room_limits(hub: Hub) -> None:
    small = Hub(rooms_per_user=2, max_rooms=3)
    bob = irc_user(small, "bob")
    bob.feed("JOIN #a,#b,#c")
    assert irc_commands(bob.take())[-1] == (
        "405",
        "bob",
        "#c",
        "You have joined too many channels",
    )
    eve = irc_user(small, "eve")
    eve.feed("JOIN #e,#f")  # #lobby, #a, #b exist: no room for #e
    assert irc_commands(eve.take())[0] == ("405", "eve", "#e", "The server has too many channels")
    eve.feed("JOIN #a", "MODE #a +k sesame")
    assert irc_commands(eve.take())[-1] == ("482", "eve", "#a", "You're not channel operator")
    bob.take()
    bob.feed("MODE #a +k :two words")
    assert irc_commands(bob.take()) == [("525", "bob", "#a", "Key is not well-formed")]
