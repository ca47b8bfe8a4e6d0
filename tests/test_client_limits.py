"""The client's copies of the protocol's rules are the server's rules.

The client is a separate program: it imports nothing from the server package and keeps its own
copies (client/wire.py). This test may import the server, and checks every copy against it, so a
change on one side fails here instead of in front of a user (a message cut at the wrong length,
a mention missed, a help text that states another rule).
"""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

from chat import protocol
from client import commands, wire
from client.connection import alternate_nicks
from client.render import mentions

CLIENT_DIR = Path(__file__).resolve().parent.parent / "client"


def test_line_limit_is_the_servers() -> None:
    assert wire.MAX_LINE_BYTES == protocol.MAX_LINE_BYTES


def test_long_messages_are_split_into_lines_the_server_accepts() -> None:
    text = ('é€🙂 " \\ \x01' * 2000) + "x" * 9000  # escaping and multi-byte characters
    pieces = commands.split_text({"type": "message"}, text)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")
    decoder = protocol.LineDecoder()
    lines = [wire.encode({"type": "message", "text": piece}) for piece in pieces]
    received = decoder.feed(b"".join(lines))
    assert len(received) == len(pieces)
    assert not any(line.too_long for line in received)


def test_nick_length_and_rule_are_the_servers() -> None:
    assert wire.NICK_MAX_CHARS == protocol.NICK_MAX_CHARS
    assert wire.NICK_RULE == protocol.NICK_RULE
    for nick in ("alice", "a" * 16, "[w]_`{|}^-9"):
        assert all(protocol.nick_error(alt) is None for alt in alternate_nicks(nick))


@pytest.mark.parametrize("char", [chr(code) for code in range(0x21, 0x7F)])
def test_nick_characters_are_the_servers(char: str) -> None:
    allowed_by_server = protocol.nick_error("a" + char) is None
    allowed_by_client = re.fullmatch(f"[{wire.NICK_CHARS}]", char) is not None
    assert allowed_by_client == allowed_by_server
    if allowed_by_server:  # a mention is the nick as a whole word: glued to char it is not
        assert not mentions("alice" + char, "alice")
    elif char not in string.ascii_letters:
        assert mentions("alice" + char, "alice")


def test_room_prefix_is_the_servers() -> None:
    assert wire.ROOM_PREFIX == protocol.ROOM_PREFIX
    parsed = commands.parse("/join rust")
    assert isinstance(parsed, commands.Send)
    assert protocol.room_error(parsed.messages[0]["room"]) is None


@pytest.mark.parametrize("name", ["#Rust", "#été", "#Été", "#ÉTÉ", "#CAFÉ", "ALICE", "#İstanbul"])
def test_names_fold_as_the_servers(name: str) -> None:
    assert wire.fold(name) == protocol.room_key(name) == protocol.nick_key(name)


def test_the_client_package_imports_nothing_from_the_server() -> None:
    for path in sorted(CLIENT_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "chat" or n.startswith("chat.") for n in names), path.name


@pytest.mark.parametrize(
    ("modes", "args"),
    [
        ("+k", ("sesame",)),
        ("-k", ()),
        ("+s", ()),
        ("-s", ()),
        ("+o", ("bob",)),
        ("-o", ("bob",)),
        ("-k+so-o", ("carol", "dave")),
        ("+x", ()),  # nothing it knows: "changed the room"
    ],
)
def test_mode_changes_read_as_the_servers_text_mode_says_them(modes: str, args: tuple) -> None:
    """chat-client's words for a room's mode change (client/render.py) are the server's text
    mode's (chat/wire/text.py), and neither shows the key."""
    from chat import events as ev
    from chat.wire import text
    from client.render import render_event

    event = ev.ModeChanged(7, 0.0, "#rust", by="alice", modes=modes, args=args)
    said = text.encode(event, "bob").decode().removeprefix("*** ").rstrip("\n")
    shown = render_event(
        {
            "type": "mode",
            "id": 7,
            "room": "#rust",
            "by": "alice",
            "modes": modes,
            "args": list(args),
        },
        "bob",
        0.0,
        "#rust",
    )
    assert shown is not None
    assert shown.plain.endswith(said)
    assert "sesame" not in said
