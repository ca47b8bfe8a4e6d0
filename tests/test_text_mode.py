"""The text protocol as a person on nc sees it: real sockets on loopback."""

from __future__ import annotations

from chat.connection import RECV_FIRST_BYTES
from chat.wire.text import HELP_LINES
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


def test_nickname_invalid_or_taken_gets_an_error_and_a_new_prompt(server):
    alice = TextPeer(server.address, "alice")
    peer = TextPeer(server.address)
    peer.send("9lives\n")
    assert peer.line().startswith("! invalid nickname '9lives'")
    assert peer.line() == "* Choose a nickname:"
    peer.send("ALICE\n")
    assert peer.line() == "! nickname ALICE is taken"
    assert peer.line() == "* Choose a nickname:"
    peer.send("bob\n")
    assert peer.line() == "* Hello bob. Online: alice, bob. Type /help for commands."
    alice.close()


def test_an_irc_client_on_the_text_port_is_told_where_irc_is(make_server):
    """irssi pointed at --port instead of --irc-port saw only `invalid nickname 'CAP LS 302'`
    and `invalid nickname 'JOIN :'`: now it is told which port speaks IRC (its status window
    shows the line). A person who types such a line gets the same hint."""
    server = make_server(irc_port=0)
    peer = TextPeer(server.address)
    peer.send("CAP LS 302\r\n")
    hint = peer.line()
    assert hint.startswith("! this port speaks text and JSON Lines, not IRC"), hint
    assert "IRC port" in hint, hint
    assert peer.line() == "* Choose a nickname:"
    peer.send("NICK dave\r\nUSER dave 0 * :Dave\r\n")
    assert peer.line().startswith("! this port speaks text and JSON Lines, not IRC")
    peer.line()
    assert peer.line().startswith("! this port speaks text and JSON Lines, not IRC")
    peer.line()
    plain = make_server()  # no IRC port at all: said so
    peer = TextPeer(plain.address)
    peer.send("NICK dave\n")
    assert peer.line() == (
        "! this port speaks text and JSON Lines, not IRC, and this server has no IRC port"
    )
    peer.send("dave\n")
    peer.line()  # * Choose a nickname:
    assert peer.line().startswith("* Hello dave.")


def test_commands_typed_before_a_nickname_do_what_they_say(server):
    """A newcomer types a command out of habit before choosing a nickname: `/nick dave` was
    refused as the nickname '/nick dave', and `/quit` as '/quit' (the only way out was to hang
    up). Now /nick registers, /quit leaves, and any other command says to choose a name first."""
    peer = TextPeer(server.address)
    peer.send("/help\n")
    assert peer.line() == (
        "! choose a nickname first: type just the name (like alice); commands work after that"
    )
    assert peer.line() == "* Choose a nickname:"
    peer.send("/nick dave\n")
    assert peer.line().startswith("* Hello dave.")
    leaver = TextPeer(server.address)
    leaver.send("/QUIT wrong number\n")
    assert leaver.line() == "*** Goodbye (wrong number)."
    leaver.until_closed()


def test_every_command(server):
    alice = TextPeer(server.address, "alice")
    bob = TextPeer(server.address, "bob")
    carol = TextPeer(server.address, "carol")
    alice.expect("*** carol joined")
    bob.expect("*** carol joined")

    alice.send("/who\n")
    assert alice.line() == "*** Users in #lobby (3): alice, bob, carol"

    alice.send("/msg BOB psst, secret\n")
    assert alice.line() == "[private to bob] <alice> psst, secret"
    assert bob.line() == "[private] <alice> psst, secret"

    alice.send("/me waves\n")
    assert alice.line() == "* alice waves"
    assert bob.line() == "* alice waves"
    # carol never saw the private message: her next line is the action
    assert carol.line() == "* alice waves"

    alice.send("/nick alicia\n")
    for peer in (alice, bob, carol):
        assert peer.line() == "*** alice is now known as alicia"
    bob.send("/msg alicia still you?\n")
    assert alice.expect("[private]") == "[private] <bob> still you?"

    alice.send("//slashdot\n")
    assert bob.expect("<alicia>") == "<alicia> /slashdot"

    alice.send("/help\n")
    help_lines = [alice.line() for _ in range(len(HELP_LINES))]
    assert help_lines[0] == "*** Commands:"
    assert any("/msg NICK text" in line for line in help_lines)

    alice.send("/quit gone fishing\n")
    assert alice.until_closed() == ["*** Goodbye (gone fishing)."]
    assert bob.expect("*** alicia left") == "*** alicia left (quit: gone fishing)"
    assert carol.expect("*** alicia left") == "*** alicia left (quit: gone fishing)"


def test_errors_go_to_the_sender_only(server):
    alice = TextPeer(server.address, "alice")
    bob = TextPeer(server.address, "bob")
    alice.expect("*** bob joined")
    for line, error in [
        ("/frobnicate\n", "! unknown command /frobnicate (try /help)"),
        ("/msg nobody hi\n", "! there is nobody called nobody online"),
        ("/msg bob\n", "! usage: /msg NICK text"),
        ("/me\n", "! usage: /me text"),
        ("/nick 123\n", "! invalid nickname '123'"),
        ("/nick bob\n", "! nickname bob is taken"),
    ]:
        alice.send(line)
        assert alice.line().startswith(error)
    alice.send("done\n")
    assert bob.line() == "<alice> done"  # nothing else reached bob


def test_telnet_line_endings_and_empty_lines(server):
    alice = TextPeer(server.address, "alice")
    bob = TextPeer(server.address)
    bob.send("bob\r\n")
    bob.expect("*** bob joined")
    bob.send("\r\n   \r\nhi from telnet\r\n")
    assert alice.expect("<bob>") == "<bob> hi from telnet"


def test_join_and_leave_reasons_are_announced(server):
    alice = TextPeer(server.address, "alice")
    bob = TextPeer(server.address, "bob")
    assert alice.line() == "*** bob joined (2 online)"
    bob.close()
    assert alice.line() == "*** bob left (connection lost)"


def test_away_alone_when_not_away_tells_the_truth_text_and_json(server):
    """/away alone when one was not away says so (it said "You are back"); JSON's answer
    carries `was_away`: false, and true when one really was away."""
    from tests.peers import JsonPeer

    alice = TextPeer(server.address, "alice")
    alice.send("/away\n")
    assert alice.expect("*** You") == "*** You were not marked as away"
    program = JsonPeer(server.address, "bot")
    program.send_json({"type": "away", "text": ""})
    assert program.expect_type("away") | {"ts": 0} == {
        "type": "away",
        "ts": 0,
        "nick": "bot",
        "text": None,
        "was_away": False,
    }
    program.send_json({"type": "away", "text": "off"})
    assert program.expect_type("away")["text"] == "off"
    program.send_json({"type": "away"})
    assert program.expect_type("away")["was_away"] is True


def test_away_is_told_to_whoever_writes_privately_whichever_front_end(server):
    """/away why marks a text user away (IRC's AWAY): a private message to them is answered
    with why; /away alone brings them back. Nothing is announced to the room."""
    from tests.peers import JsonPeer

    alice = TextPeer(server.address, "alice")
    bob = TextPeer(server.address, "bob")
    program = JsonPeer(server.address, "bot")
    alice.send("/away at \x1b[2Jlunch\n")
    assert alice.expect("*** You are") == "*** You are away: at lunch (/away alone: back)"
    bob.send("/msg alice are you there?\n")
    assert bob.expect("*** alice") == "*** alice is away: at lunch"
    program.send_json({"type": "private", "to": "alice", "text": "ping"})
    assert program.expect_type("away") | {"ts": 0} == {
        "type": "away",
        "ts": 0,
        "nick": "alice",
        "text": "at lunch",
    }
    alice.send("/away\n")
    assert alice.expect("*** You are") == "*** You are back"
    bob.send("/msg alice back?\n")
    assert alice.expect("[private]") == "[private] <bob> back?"
    bob.send("/users\n")  # its answer comes after anything the hub gave bob before
    assert bob.line() == "[private to alice] <bob> back?"  # the copy of his own, no "away"
    assert bob.line().startswith("*** Online (")
    program.close()


def test_an_action_that_is_empty_once_cleaned_is_not_sent(server):
    """`/me` followed only by control characters (an escape sequence) was shown to everyone as
    an empty "* alice "; like an empty message, it is now dropped. JSON alike."""
    from tests.peers import JsonPeer

    alice = TextPeer(server.address, "alice")
    bob = TextPeer(server.address, "bob")
    assert alice.line() == "*** bob joined (2 online)"
    alice.send("/me \x1b[2J\x07\n")
    program = JsonPeer(server.address, "bot")
    assert bob.line() == "*** bot joined (3 online)"
    program.send_json({"type": "action", "text": " \x1b[0m "})
    alice.send("/me waves\n")
    assert bob.line() == "* alice waves"


def test_a_private_message_that_is_empty_once_cleaned_is_not_sent(server):
    """`/msg bob ESC[2J` reached bob as an empty "[private] <alice> "; now the sender gets the
    usage line (text) or nothing is sent (JSON), as for an empty message."""
    from tests.peers import JsonPeer

    alice = TextPeer(server.address, "alice")
    bob = TextPeer(server.address, "bob")
    assert alice.line() == "*** bob joined (2 online)"
    alice.send("/msg bob \x1b[2J\x07\n")
    assert alice.line() == "! usage: /msg NICK text"
    program = JsonPeer(server.address, "bot")
    assert bob.line() == "*** bot joined (3 online)"
    program.send_json({"type": "private", "to": "bob", "text": " \x1b[0m "})
    program.send_json({"type": "private", "to": "bob", "text": "hi"})
    assert bob.line() == "[private] <bot> hi"


def test_a_paste_longer_than_the_first_read_arrives_whole_and_in_order(server):
    """A reader first asks for RECV_FIRST_BYTES (small enough for Python's own allocator: memory
    per client, #14) and reads the rest at once: a paste several times that long, with lines
    that cross each boundary, arrives whole and in order."""
    alice, bob = TextPeer(server.address, "alice"), TextPeer(server.address, "bob")
    alice.expect("*** bob joined")
    lines = [f"line {n} " + "x" * (70 + n) for n in range(15)]
    assert len("".join(lines)) > 2 * RECV_FIRST_BYTES
    alice.send("".join(line + "\n" for line in lines))  # one write: one read if it could
    assert [bob.line() for _ in lines] == [f"<alice> {line}" for line in lines]


def test_nick_to_the_name_one_has_is_answered_and_changes_nothing(server):
    """`/nick alice` as alice: the hub changes nothing and announces nothing; the user is told
    so instead of silence. A change of case is a real rename, told to everyone."""
    alice, bob = TextPeer(server.address, "alice"), TextPeer(server.address, "bob")
    alice.expect("*** bob joined")
    alice.send("/nick alice\n")
    assert alice.line() == "*** you are already alice"
    alice.send("/nick Alice\n")
    assert bob.expect("***") == "*** alice is now known as Alice"
    bob.send("/who\n")
    assert bob.line() == "*** Users in #lobby (2): Alice, bob"
