"""The two wire formats as pure functions: lines to requests, events to lines."""

from __future__ import annotations

import json

import pytest

from chat import events as ev
from chat.protocol import ProtocolError
from chat.wire import EncodeCache
from chat.wire import jsonl as wire_json
from chat.wire import text as wire_text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("hello there", ev.Say("hello there")),
        ("//slash at start", ev.Say("/slash at start")),
        ("/msg bob  hi there ", ev.Whisper("bob", "hi there")),
        ("/me waves", ev.Act("waves")),
        ("/NICK alicia", ev.ChangeNick("alicia")),
        ("/who", ev.Who()),
        ("/help", ev.Help()),
        ("/quit", ev.Quit("")),
        ("/quit gone fishing", ev.Quit("gone fishing")),
        ("   ", ev.Nothing()),
    ],
)
def test_text_parse(line, expected):
    assert wire_text.parse(line, registered=True) == expected


def test_text_first_line_is_the_nickname():
    assert wire_text.parse(" alice ", registered=False) == ev.Hello("alice")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/msg", "usage: /msg NICK text"),
        ("/msg bob", "usage: /msg NICK text"),
        ("/me", "usage: /me text"),
        ("/nick", "usage: /nick NEW"),
        ("/nick a b", "usage: /nick NEW"),
        ("/frob x", "unknown command /frob (try /help)"),
    ],
)
def test_text_bad_commands(line, message):
    with pytest.raises(ProtocolError) as raised:
        wire_text.parse(line, registered=True)
    assert raised.value.message == message


def test_text_encode_room_events():
    def enc(event):
        return wire_text.encode(event, "carol").decode()

    assert enc(ev.Message(1, 0.0, "#l", sender="alice", text="hi")) == "<alice> hi\n"
    assert enc(ev.Action(2, 0.0, "#l", sender="alice", text="waves")) == "* alice waves\n"
    assert enc(ev.Joined(3, 0.0, "#l", nick="bob", count=2)) == "*** bob joined (2 online)\n"
    left = ev.Left(4, 0.0, "#l", nick="bob", reason="quit", message="bye", count=1)
    assert enc(left) == "*** bob left (quit: bye)\n"
    lost = ev.Left(5, 0.0, "#l", nick="bob", reason="connection lost", count=1)
    assert enc(lost) == "*** bob left (connection lost)\n"
    renamed = ev.Renamed(6, 0.0, "#l", old="bob", new="rob")
    assert enc(renamed) == "*** bob is now known as rob\n"


def test_text_private_message_reads_differently_for_sender_and_recipient():
    pm = ev.PrivateMessage(1, 0.0, "#l", sender="alice", recipient="bob", text="psst")
    assert wire_text.encode(pm, "bob") == b"[private] <alice> psst\n"
    assert wire_text.encode(pm, "alice") == b"[private to bob] <alice> psst\n"


def test_one_fan_out_encodes_each_form_once():
    msg = ev.Message(1, 0.0, "#l", sender="alice", text="hi")
    cache = EncodeCache()
    assert wire_text.encode(msg, "x", "#l", cache) is wire_text.encode(msg, "y", "#l", cache)
    assert wire_json.encode(msg, "x", None, cache) is wire_json.encode(msg, "y", None, cache)
    # a member elsewhere gets the prefixed variant, also encoded once
    prefixed = wire_text.encode(msg, "z", "#other", cache)
    assert prefixed == b"[#l] <alice> hi\n"
    assert wire_text.encode(msg, "w", "#other", cache) is prefixed
    # without a cache (a reply to one client) nothing is remembered
    assert wire_text.encode(msg, "x", "#l") == b"<alice> hi\n"


def test_json_first_line_detection():
    assert wire_json.looks_like_json('{"type": "hello", "nick": "a"}')
    assert not wire_json.looks_like_json("alice")
    assert not wire_json.looks_like_json("{not json")
    assert not wire_json.looks_like_json("[1, 2]")


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"type": "message", "text": "hi"}, ev.Say("hi")),
        ({"type": "action", "text": "waves"}, ev.Act("waves")),
        ({"type": "private", "to": "bob", "text": "x"}, ev.Whisper("bob", "x")),
        ({"type": "nick", "nick": "rob"}, ev.ChangeNick("rob")),
        ({"type": "who"}, ev.Who()),
        ({"type": "ping", "token": [1, "a"]}, ev.Ping([1, "a"])),
        ({"type": "quit"}, ev.Quit("")),
        ({"type": "quit", "reason": "bye"}, ev.Quit("bye")),
        ({"type": "message", "text": "\x1b[2Jwipe", "extra": 1}, ev.Say("wipe")),
    ],
)
def test_json_parse(obj, expected):
    assert wire_json.parse(json.dumps(obj), registered=True) == expected


@pytest.mark.parametrize(
    ("line", "registered", "code"),
    [
        ("nope", True, "bad_request"),
        ("[1]", True, "bad_request"),
        ('{"type": "zap"}', True, "bad_request"),
        ('{"type": "message"}', True, "bad_request"),
        ('{"type": "message", "text": 5}', True, "bad_request"),
        ('{"type": "message", "text": "hi"}', False, "not_registered"),
        ('{"type": "hello", "nick": "a", "version": 2}', False, "bad_request"),
        ('{"type": "hello", "nick": "a"}', True, "bad_request"),
    ],
)
def test_json_bad_requests(line, registered, code):
    with pytest.raises(ProtocolError) as raised:
        wire_json.parse(line, registered=registered)
    assert raised.value.code == code


@pytest.mark.parametrize("version", ["true", "false", "1.0", '"1"', "[1]", "null", "2", "0", "-1"])
def test_json_hello_version_must_be_the_integer_1(version):
    # true == 1 and 1.0 == 1 in Python: both were taken for version 1. Every other integer
    # field (history's limit, before, after, since) refuses true alike.
    line = f'{{"type": "hello", "nick": "a", "version": {version}}}'
    with pytest.raises(ProtocolError) as raised:
        wire_json.parse(line, registered=False)
    assert raised.value.code == "bad_request"
    assert raised.value.message == f"unsupported protocol version {json.loads(version)!r}"
    for field in ("limit", "before", "after", "since"):
        with pytest.raises(ProtocolError, match=field):
            wire_json.parse(f'{{"type": "history", "{field}": true}}', registered=True)


def test_json_hello_version_1_or_none_is_taken():
    for line in ('{"type": "hello", "nick": "a", "version": 1}', '{"type": "hello", "nick": "a"}'):
        assert wire_json.parse(line, registered=False) == ev.Hello("a", None)


def test_json_encode_carries_id_time_and_room():
    msg = ev.Message(7, 123.5, "#lobby", sender="alice", text="hi ✓")
    line = wire_json.encode(msg, "bob")
    assert line.endswith(b"\n")
    assert line.isascii()
    assert json.loads(line) == {
        "type": "message",
        "id": 7,
        "ts": 123.5,
        "room": "#lobby",
        "from": "alice",
        "text": "hi ✓",
    }
    left = json.loads(wire_json.encode(ev.Left(8, 1.0, "#l", nick="a", reason="quit", count=0), ""))
    assert left["type"] == "leave"
    assert left["reason"] == "quit"
    assert left["message"] == ""
