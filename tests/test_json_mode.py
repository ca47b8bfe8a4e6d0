"""The JSON Lines protocol, as programs and chat-client use it."""

from __future__ import annotations

import time

from tests.peers import JsonPeer, TextPeer


def test_hello_welcome_and_events_with_ids_and_timestamps(server):
    before = time.time()
    alice = JsonPeer(server.address, "alice")
    assert alice.welcome["version"] == 1
    assert alice.welcome["nick"] == "alice"
    assert alice.welcome["users"] == ["alice"]
    assert alice.welcome["room"] == "#lobby"
    bob = JsonPeer(server.address, "bob")
    join = alice.expect_type("join")
    assert join["nick"] == "bob"
    assert join["count"] == 2
    bob.send_json({"type": "message", "text": "hi alice"})
    msg = alice.expect_type("message")
    assert msg["from"] == "bob"
    assert msg["text"] == "hi alice"
    assert msg["id"] > join["id"]
    assert before <= msg["ts"] <= time.time()
    # not echoed to bob: the ping's pong comes with nothing before it
    assert bob.sync() == []


def test_all_requests(server):
    alice = JsonPeer(server.address, "alice")
    bob = JsonPeer(server.address, "bob")
    alice.expect_type("join")

    alice.send_json({"type": "private", "to": "bob", "text": "psst"})
    for peer in (alice, bob):
        pm = peer.expect_type("private")
        assert (pm["from"], pm["to"], pm["text"]) == ("alice", "bob", "psst")

    alice.send_json({"type": "action", "text": "waves"})
    assert bob.expect_type("action")["text"] == "waves"
    assert alice.expect_type("action")["from"] == "alice"

    alice.send_json({"type": "nick", "nick": "alicia"})
    rename = bob.expect_type("rename")
    assert (rename["old"], rename["new"]) == ("alice", "alicia")

    bob.send_json({"type": "who"})
    users = bob.expect_type("users")
    assert users["users"] == ["alicia", "bob"]

    bob.send_json({"type": "quit", "reason": "bye"})
    leave = alice.expect_type("leave")
    assert (leave["nick"], leave["reason"], leave["message"], leave["count"]) == (
        "bob",
        "quit",
        "bye",
        1,
    )
    bob.until_closed()


def test_errors_have_codes_and_keep_the_connection(server):
    alice = JsonPeer(server.address)
    alice.send_json({"type": "message", "text": "too early"})
    assert alice.expect_type("error")["code"] == "not_registered"
    alice.send_json({"type": "hello", "version": 1, "nick": "no way"})
    assert alice.expect_type("error")["code"] == "nick_invalid"
    holder = JsonPeer(server.address, "taken")
    alice.send_json({"type": "hello", "version": 1, "nick": "TAKEN"})
    assert alice.expect_type("error")["code"] == "nick_taken"
    alice.send_json({"type": "hello", "version": 1, "nick": "alice"})
    alice.expect_type("welcome")
    for bad, code in [
        ("not json at all", "bad_request"),
        ('{"type": "teleport"}', "bad_request"),
        ('{"type": "private", "to": "ghost", "text": "boo"}', "no_such_nick"),
    ]:
        alice.send(bad + "\n")
        assert alice.expect_type("error")["code"] == code
    assert alice.sync("still here") == []
    holder.close()


def test_numbers_that_json_cannot_carry_are_refused_not_echoed(server):
    """NaN and Infinity are not JSON (RFC 8259): a ping token of 1e999 was echoed back as
    `Infinity`, a line that JSON.parse and most parsers outside Python reject."""
    alice = JsonPeer(server.address, "alice")
    for bad in (
        '{"type": "ping", "token": 1e999}',
        '{"type": "ping", "token": NaN}',
        '{"type": "ping", "token": -Infinity}',
    ):
        alice.send(bad + "\n")
        error = alice.expect_type("error")
        assert error["code"] == "bad_request", (bad, error)
        assert "finite" in error["message"], (bad, error)
    alice.send('{"type": "ping", "token": 1.5e300}\n')
    assert alice.expect_type("pong")["token"] == 1.5e300
    assert alice.sync("still here") == []


def test_json_and_text_users_share_the_room(server):
    text = TextPeer(server.address, "nc_user")
    program = JsonPeer(server.address, "bot")
    text.expect("*** bot joined")
    program.send_json({"type": "message", "text": "beep"})
    assert text.line() == "<bot> beep"
    text.send("hello bot\n")
    msg = program.expect_type("message")
    assert (msg["from"], msg["text"]) == ("nc_user", "hello bot")
