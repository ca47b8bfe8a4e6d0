"""Hostile or broken input: each gets a clear error, and nobody else notices anything."""

from __future__ import annotations

import socket

import pytest

from chat.protocol import MAX_DISCARD_BYTES, MAX_LINE_BYTES
from tests.peers import IrcPeer, JsonPeer, Peer, TextPeer, wait_until


@pytest.fixture
def pair(server):
    alice = TextPeer(server.address, "alice")
    bob = TextPeer(server.address, "bob")
    alice.expect("*** bob joined")
    return alice, bob


def test_over_long_line_is_refused_and_the_connection_stays(pair):
    alice, bob = pair
    alice.send("x" * (MAX_LINE_BYTES + 10) + "\n")
    assert alice.line() == f"! line too long (max {MAX_LINE_BYTES} bytes), dropped"
    alice.send("short one\n")
    assert bob.line() == "<alice> short one"


def test_2_kib_of_text_in_any_script_is_fine(pair):
    alice, bob = pair
    text = "日本語テキスト" * 100  # 700 characters, 2100 bytes
    alice.send(text + "\n")
    assert bob.line() == f"<alice> {text}"


def test_endless_line_disconnects_with_bounded_memory(server, pair):
    alice, bob = pair
    chunk = b"y" * 65536
    sent = 0
    try:
        for _ in range(MAX_DISCARD_BYTES // len(chunk) + 100):  # 6.5 MB at the most
            alice.send(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the server hung up while we were still sending: expected
    assert bob.line() == "*** alice left (line too long)"
    assert sent < 100 * len(chunk), "the server read megabytes without hanging up"


def test_invalid_utf8_nul_and_escape_sequences_never_reach_others(pair):
    alice, bob = pair
    alice.send(b"bad \xff\xfe utf8\n")
    assert bob.line() == "<alice> bad \ufffd\ufffd utf8"
    alice.send(b"nul\x00 bs\x08 cr\r del\x7f bell\x07\n")
    assert bob.line() == "<alice> nul bs cr del bell"
    alice.send(b"\x1b[2J\x1b[31mred\x1b[0m \x1b]0;title\x07 \xc2\x9b31m c1\n")
    assert bob.line() == "<alice> red   c1"
    alice.send("evil\u202etxt.exe \u2066x\u2069\n".encode())
    assert bob.line() == "<alice> eviltxt.exe x"


def test_escape_sequences_are_stripped_in_json_mode_too(server):
    bot = JsonPeer(server.address, "bot")
    reader = JsonPeer(server.address, "reader")
    bot.send_json({"type": "message", "text": "\u001b]52;c;cGF3bmVk\u0007hi\u009b1m"})
    assert reader.expect_type("message")["text"] == "hi"


def test_a_lone_surrogate_from_json_reaches_text_and_irc_users_as_a_replacement(make_server):
    server = make_server(irc_port=0)
    bot = JsonPeer(server.address, "bot")
    text = TextPeer(server.address, "alice")
    irc = IrcPeer(server.irc_address, "carol")
    irc.send_line("JOIN #lobby")
    irc.sync()
    bot.sync()  # alice's and carol's joins
    # "\ud800" is valid JSON but no character: encoding it for alice crashed bot's thread.
    bot.send('{"type": "message", "text": "a\\ud800b"}\n')
    assert text.expect("<bot>") == "<bot> a\ufffdb"
    assert irc.expect_cmd("PRIVMSG").params == ("#lobby", "a\ufffdb")
    assert bot.sync() == []  # still connected
    assert server.audit.total == 0


def test_nickname_with_escape_sequence_is_cleaned_then_checked(server):
    peer = TextPeer(server.address)
    peer.send(b"\x1b[31mred\x1b[0m\n")
    assert peer.expect("* Hello ") == "* Hello red. Online: red. Type /help for commands."


def test_flood_is_warned_then_kicked_and_announced(make_server):
    server = make_server(flood_rate=1, flood_burst=3)
    alice = TextPeer(server.address, "alice")
    flooder = TextPeer(server.address, "flooder")
    alice.expect("*** flooder joined")
    flooder.send("".join(f"spam {i}\n" for i in range(20)))
    lines = flooder.until_closed()
    assert lines[0] == "! slow down: at most 1 lines/s"
    assert lines[-1] == "! kicked for flooding"
    # the burst of 3 lines was the nickname and two messages; the rest was dropped
    got = [alice.line() for _ in range(3)]
    assert got == ["<flooder> spam 0", "<flooder> spam 1", "*** flooder left (kicked for flooding)"]


def test_client_vanishing_mid_line_is_cleaned_up(pair):
    alice, bob = pair
    alice.send(b"half a li")
    alice.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    alice.close()  # linger 0: a reset, not a polite FIN
    assert bob.line() == "*** alice left (connection lost)"
    bob.send("/who\n")
    assert bob.line() == "*** Users in #lobby (1): bob"


def test_registration_timeout(make_server):
    server = make_server(register_timeout_s=0.2)
    silent = Peer(server.address)
    assert silent.until_closed()[-1] == "! registration timed out"


def test_idle_timeout(make_server):
    server = make_server(idle_timeout_s=0.3)
    alice = TextPeer(server.address, "alice")
    assert alice.until_closed()[-1] == "! timed out"
    assert server.hub.nicks() == ()


def test_server_full_gets_one_line_and_a_close(make_server):
    server = make_server(max_clients=2)
    first, second = TextPeer(server.address, "a"), TextPeer(server.address, "b")
    third = Peer(server.address)
    assert third.until_closed() == ["! server full, try again later"]
    first.send("/quit\n")
    first.until_closed()
    wait_until(lambda: server.client_count < 2)
    TextPeer(server.address, "c")  # a slot is free again
    second.close()


def test_per_address_cap(make_server):
    server = make_server(max_per_address=2, limit_loopback=True)
    first, second = TextPeer(server.address, "a"), TextPeer(server.address, "b")
    extra = Peer(server.address)
    assert extra.until_closed() == ["! too many connections from your address"]
    first.send("still here\n")  # the two within the cap carry on
    assert second.line() == "<a> still here"


def test_loopback_is_exempt_from_the_per_address_cap_by_default(make_server):
    server = make_server(max_per_address=1)
    peers = [TextPeer(server.address, f"p{i}") for i in range(3)]
    assert peers[2].welcome == "* Hello p2. Online: p0, p1, p2. Type /help for commands."


def test_last_lines_survive_input_the_server_never_read(server):
    """Lines after /quit are never read; the goodbye still arrives, then the close."""
    peer = TextPeer(server.address, "alice")
    peer.send("/quit bye\n" + "never read\n" * 20_000)  # 220 KB behind the quit
    assert peer.until_closed()[-1] == "*** Goodbye (bye)."


def test_a_kicked_flooder_reads_why(make_server):
    server = make_server(flood_rate=1, flood_burst=3)
    flooder = TextPeer(server.address, "flooder")
    flooder.send("spam\n" * 5000)
    assert flooder.until_closed()[-1] == "! kicked for flooding"
