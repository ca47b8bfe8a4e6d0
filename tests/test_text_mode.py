"""The text protocol as a person on nc sees it: real sockets on loopback."""

from __future__ import annotations

from tests.peers import TextPeer


def test_greeting_asks_for_a_nickname(server):
    peer = TextPeer(server.address)
    assert peer.greeting[0] == "* Welcome to chat! 0 online."
    assert peer.greeting[1].startswith("* Choose a nickname")


def test_message_reaches_others_but_is_not_echoed(server):
    alice = TextPeer(server.address, "alice")
    bob = TextPeer(server.address, "bob")
    assert alice.expect("*** bob joined") == "*** bob joined (2 online)"
    alice.send("hello everyone\n")
    assert bob.line() == "<alice> hello everyone"
    bob.send("hi alice\n")
    # alice's next line is bob's, not an echo of her own message
    assert alice.line() == "<bob> hi alice"
