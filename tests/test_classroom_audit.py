"""The audit: a crashed operation costs one connection, is counted, and never kills a thread."""

from __future__ import annotations

from chat import events as ev
from chat.config import ServerConfig
from chat.hub import Hub, Member
from chat.server import ChatServer
from tests.peers import JsonPeer


class _BrokenSayHub(Hub):
    """A hub with a bug in say(): what the server does about bugs it did not foresee."""

    def say(
        self, member: Member, *texts: str, room: str | None = None, notice: bool = False
    ) -> None:
        if "boom" in texts:
            raise RuntimeError("a bug")
        super().say(member, *texts, room=room, notice=notice)


def test_a_crashed_operation_disconnects_that_client_and_is_counted():
    server = ChatServer(ServerConfig(port=0), hub=_BrokenSayHub()).start()
    try:
        alice = JsonPeer(server.address, "alice")
        bob = JsonPeer(server.address, "bob")
        alice.expect_type("join")
        bob.send_json({"type": "message", "text": "boom"})
        left = alice.expect_type("leave")
        assert (left["nick"], left["reason"]) == ("bob", ev.LeaveReason.SERVER_ERROR)
        bob.until_closed()
        # The server carries on for everyone else.
        carol = JsonPeer(server.address, "carol")
        carol.send_json({"type": "message", "text": "still here"})
        assert alice.expect_type("message")["text"] == "still here"
    finally:
        server.stop()
    assert server.audit.counts() == {"crashed operation": 1}


def test_a_correct_server_audits_to_zero(server):
    alice = JsonPeer(server.address, "alice")
    bob = JsonPeer(server.address, "bob")
    bob.send_json({"type": "nick", "nick": "robert"})
    alice.expect_type("rename")
    assert server.hub.check_invariants() == []
    alice.send_json({"type": "quit"})
    alice.until_closed()
    server.stop()
    assert server.audit.total == 0
    assert server.audit.summary() == "audit: 0 invariant violations"
