"""IRC conformance scenarios, modelled on irctest's pingpong, connection_registration, messages,
quit, join, part, names and buffering modules (our own tests: real server, loopback sockets)."""

from __future__ import annotations

import threading

import pytest

from chat.wire.irc import parse
from tests.peers import IrcPeer, JsonPeer, Peer, TextPeer


@pytest.fixture
def irc_server(make_server):
    return make_server(irc_port=0, server_name="test.server")


def connect(server, nick=None):
    return IrcPeer(server.irc_address, nick)


# -- connection registration ---------------------------------------------------------------


def test_registration_sends_001_to_005_lusers_and_motd(irc_server):
    peer = connect(irc_server)
    seen = peer.register("alice", "al")
    commands = [m.command for m in seen]
    assert commands[:5] == ["001", "002", "003", "004", "005"]
    assert seen[0].source == "test.server"
    assert seen[0].params[0] == "alice"
    assert "alice!~al@irc" in seen[0].params[-1]
    isupport = seen[4].params[1:-1]
    for token in ("CHANTYPES=#", "NICKLEN=16", "CHANNELLEN=50", "CASEMAPPING=ascii"):
        assert token in isupport
    assert any(t.startswith("TARGMAX=") for t in isupport)
    assert {"251", "254", "255"} <= set(commands)
    assert commands[-1] == "422"  # no MOTD configured


def test_commands_before_registration_get_451_and_unknown_ones_421(irc_server):
    peer = connect(irc_server)
    peer.send_line("JOIN #x")
    assert peer.msg().command == "451"
    peer.register("alice")
    peer.send_line("FROBNICATE now")
    reply = peer.msg()
    assert (reply.command, reply.params[:2]) == ("421", ("alice", "FROBNICATE"))


def test_cap_ls_is_empty_req_is_naked_and_end_completes_registration(irc_server):
    peer = connect(irc_server)
    peer.send_line("CAP LS 302")
    assert peer.msg().params == ("*", "LS", "")
    peer.send_line("NICK alice")
    peer.send_line("USER u 0 * :Real")
    peer.send_line("CAP REQ :multi-prefix sasl")
    assert peer.msg().params == ("*", "NAK", "multi-prefix sasl")
    peer.send_line("CAP LIST")
    assert peer.msg().params == ("*", "LIST", "")
    # NICK and USER are in, but no 001 while negotiating: a PING (allowed before registration)
    # gets its PONG with nothing before it; CAP END lets registration through
    assert peer.sync() == []
    peer.send_line("CAP END")
    assert peer.expect_cmd("001").params[0] == "alice"


def test_nick_collision_with_a_registered_user_gets_433(irc_server):
    holder = connect(irc_server, "foo")
    peer = connect(irc_server)
    peer.send_line("NICK FOO")
    reply = peer.msg()
    assert (reply.command, reply.params[1]) == ("433", "FOO")
    peer.register("bar")
    holder.close()


def test_two_unregistered_clients_racing_for_one_nickname_one_wins(irc_server):
    for _ in range(5):
        a, b = connect(irc_server), connect(irc_server)
        nick = f"racer{_}"
        a.send_line(f"NICK {nick}")
        b.send_line(f"NICK {nick}")
        barrier = threading.Barrier(2)

        def user(peer, barrier=barrier):
            barrier.wait(5)
            peer.send_line("USER u 0 * :R")

        threads = [threading.Thread(target=user, args=(p,)) for p in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        first = [a.msg().command, b.msg().command]
        assert sorted(first) == ["001", "433"], first
        a.close()
        b.close()


def test_bad_nicks_and_empty_realname(irc_server):
    peer = connect(irc_server)
    peer.send_line("NICK")
    assert peer.msg().command == "431"
    peer.send_line("NICK 9lives")
    assert peer.msg().command == "432"
    peer.send_line("NICK foo")
    peer.send_line("USER username * * :")
    reply = peer.msg()
    assert (reply.command, reply.params[:2]) == ("461", ("*", "USER"))
    peer.send_line("USER username * * :Real")
    assert peer.msg().command == "001"
    peer.send_line("USER again * * :x")
    assert peer.expect_cmd("462").params[0] == "foo"


def test_nick_taken_at_registration_then_another_nick_registers(make_server):
    # With a password, a taken nick is found by registration itself; the USER and PASS given
    # before must still be there for the next NICK (they are dropped once registered, #14).
    server = make_server(irc_port=0, password="sesame")
    first = IrcPeer(server.irc_address)
    first.send_line("PASS sesame")
    first.register("taken")
    second = IrcPeer(server.irc_address)
    second.send("PASS sesame\r\nNICK taken\r\nUSER u 0 * :R\r\n")
    assert second.expect_cmd("433").params[1] == "taken"
    second.send_line("NICK other")
    assert second.expect_cmd("001").params[0] == "other"


def test_password_right_wrong_and_missing(make_server):
    server = make_server(irc_port=0, password="sesame")
    good = IrcPeer(server.irc_address)
    good.send_line("PASS sesame")
    good.register("good")
    for pass_line in ("PASS wrong", None):
        bad = IrcPeer(server.irc_address)
        if pass_line:
            bad.send_line(pass_line)
        bad.send_line("NICK bad")
        bad.send_line("USER u 0 * :R")
        lines = bad.until_closed()
        assert " 464 " in lines[0]
        assert lines[-1].startswith("ERROR ")
    # the text and JSON front-ends ask for it too
    text = Peer(server.address)
    assert text.line() == "* Welcome to chat!"  # not how many are online: nothing before PASS
    assert text.line() == "* Password:"
    text.send("nope\n")
    assert text.until_closed() == ["! wrong password"]
    text = Peer(server.address)
    text.send("sesame\ncarol\n")
    text.expect("* Hello carol.")
    program = JsonPeer(server.address)
    program.send_json({"type": "hello", "nick": "bot", "password": "sesame"})
    program.expect_type("welcome")
    intruder = JsonPeer(server.address)
    intruder.send_json({"type": "hello", "nick": "evil"})
    assert intruder.expect_type("error")["code"] == "bad_password"
    intruder.until_closed()


# -- ping / pong, quit ---------------------------------------------------------------------


def test_ping_is_answered_with_pong_and_needs_an_origin(irc_server):
    peer = connect(irc_server, "alice")
    peer.send_line("PING abcdef")
    reply = peer.msg()
    assert (reply.command, reply.params) == ("PONG", ("test.server", "abcdef"))
    peer.send_line("PING")
    assert peer.msg().command == "409"


def test_server_pings_a_silent_client_and_drops_it_if_it_stays_silent(make_server):
    server = make_server(irc_port=0, irc_ping_s=0.3, irc_timeout_s=0.6)
    alive = IrcPeer(server.irc_address, "alive")
    ping = alive.expect_cmd("PING", timeout=3)
    alive.send_line(f"PONG :{ping.params[0]}")
    assert alive.expect_cmd("PING", timeout=3)  # pinged again later: still connected
    silent = IrcPeer(server.irc_address, "silent")
    lines = silent.until_closed(timeout=5)
    assert lines[-1].startswith("ERROR :Closing link: (Ping timeout")


def test_quit_gets_error_then_close_and_others_see_quit(irc_server):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    alice.send_line("JOIN #room")
    alice.sync()
    bob.send_line("JOIN #room")
    alice.expect_cmd("JOIN")  # bob's
    bob.send_line("QUIT :gone fishing")
    lines = bob.until_closed()
    assert lines[-1].startswith("ERROR ")
    quit_msg = alice.expect_cmd("QUIT")
    assert quit_msg.source.startswith("bob!")
    assert quit_msg.params == ("Quit: gone fishing",)


def test_a_quit_reaches_each_peer_once_whatever_rooms_they_share(irc_server):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    for room in ("#a", "#b", "#c"):
        alice.send_line(f"JOIN {room}")
        bob.send_line(f"JOIN {room}")
    bob.sync()
    alice.sync()
    bob.send_line("QUIT")
    bob.until_closed()
    assert [m.command for m in alice.sync()] == ["QUIT"]


# -- join, part, names ---------------------------------------------------------------------


def test_join_echo_names_and_end_of_names(irc_server):
    alice = connect(irc_server, "alice")
    alice.send_line("JOIN #chan")
    join = alice.msg()
    assert (join.command, join.params, join.source) == ("JOIN", ("#chan",), "alice!~user@irc")
    names = alice.msg()
    assert (names.command, names.params) == ("353", ("alice", "=", "#chan", "@alice"))
    end = alice.msg()
    assert (end.command, end.params[:2]) == ("366", ("alice", "#chan"))
    bob = connect(irc_server, "bob")
    bob.send_line("JOIN #CHAN")
    assert bob.msg().command == "JOIN"
    assert bob.msg().params[-1] == "@alice bob"
    assert bob.msg().command == "366"
    assert alice.msg().source.startswith("bob!")
    bob.send_line("JOIN #chan")  # twice: nothing
    assert bob.sync() == []


def test_join_several_channels_with_keys_and_bad_names(irc_server):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    alice.send_line("JOIN #locked")
    alice.sync()
    alice.send_line("MODE #locked +k sesame")
    assert alice.expect_cmd("MODE").params == ("#locked", "+k", "sesame")
    bob.send_line("JOIN #locked,#open,nohash wrong")
    replies = bob.sync()
    assert replies[0].command == "475"
    assert replies[1].command == "JOIN"
    assert replies[1].params == ("#open",)
    assert replies[-1].command == "403"
    bob.send_line("MODE #locked")  # an outsider learns there is a key, not the key
    assert bob.expect_cmd("324").params[1:] == ("#locked", "+nk")
    bob.send_line("JOIN #locked sesame")
    assert bob.msg().command == "JOIN"
    bob.sync()
    bob.send_line("MODE #locked")
    assert bob.expect_cmd("324").params[1:] == ("#locked", "+nk", "sesame")


def test_part_with_and_without_message_and_errors(irc_server):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    for peer in (alice, bob):
        peer.send_line("JOIN #chan")
        peer.sync()
    bob.send_line("PART #chan :see you")
    part = alice.expect_cmd("PART")
    assert (part.source.split("!")[0], part.params) == ("bob", ("#chan", "see you"))
    assert bob.expect_cmd("PART").params == ("#chan", "see you")
    bob.send_line("PART #chan")
    assert bob.msg().command == "442"
    bob.send_line("PART #nowhere")
    assert bob.msg().command == "403"
    bob.send_line("PART")
    assert bob.msg().command == "461"


def test_names_of_unknown_and_secret_channels_only_end(irc_server):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    alice.send_line("JOIN #secret")
    alice.send_line("MODE #secret +s")
    alice.expect_cmd("MODE")
    bob.send_line("NAMES #secret")
    assert bob.msg().command == "366"
    bob.send_line("NAMES #nothing")
    assert bob.msg().command == "366"
    alice.send_line("NAMES #secret")
    assert alice.msg().params[:3] == ("alice", "@", "#secret")


# -- messages ------------------------------------------------------------------------------


def test_privmsg_to_channel_and_user_and_the_error_numerics(irc_server):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    for peer in (alice, bob):
        peer.send_line("JOIN #chan")
        peer.sync()
    alice.sync()  # bob's JOIN
    alice.send_line("PRIVMSG #chan :hello there")
    msg = bob.expect_cmd("PRIVMSG")
    assert (msg.source, msg.params) == ("alice!~user@irc", ("#chan", "hello there"))
    assert alice.sync() == []  # no echo
    alice.send_line("PRIVMSG bob :psst")
    assert bob.expect_cmd("PRIVMSG").params == ("bob", "psst")
    assert alice.sync() == []
    for line, code in [
        ("PRIVMSG #chan", "412"),
        ("PRIVMSG #chan :", "412"),
        ("PRIVMSG", "411"),
        ("PRIVMSG nobody :hi", "401"),
        ("PRIVMSG #nowhere :hi", "401"),
    ]:
        alice.send_line(line)
        assert alice.msg().command == code, line
    carol = connect(irc_server, "carol")
    carol.send_line("PRIVMSG #chan :from outside")
    assert carol.msg().command == "404"


def test_notice_is_relayed_and_never_answered_with_an_error(irc_server):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    alice.send_line("NOTICE bob :beep")
    assert bob.expect_cmd("NOTICE").params == ("bob", "beep")
    for line in ("NOTICE nobody :x", "NOTICE #nowhere :x", "NOTICE bob", "NOTICE"):
        alice.send_line(line)
    assert alice.sync() == []


def test_action_and_formatting(irc_server):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    for peer in (alice, bob):
        peer.send_line("JOIN #chan")
        peer.sync()
    alice.send_line("PRIVMSG #chan :\x01ACTION waves\x01")
    assert bob.expect_cmd("PRIVMSG").params == ("#chan", "\x01ACTION waves\x01")
    alice.send_line("PRIVMSG #chan :\x02bold\x02 \x0304,01red\x03 text")
    assert bob.expect_cmd("PRIVMSG").params == ("#chan", "bold red text")
    alice.send_line("PRIVMSG bob :\x01VERSION\x01")  # other CTCP: not relayed
    assert bob.sync() == []


# -- buffering: framing and the 512-byte limit ---------------------------------------------


@pytest.mark.parametrize("how", ["whole", "byte-by-byte"])
def test_a_message_is_reassembled_however_the_bytes_arrive(irc_server, how):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    prefix = "PRIVMSG bob :"
    room_for = 512 - len(prefix) - 2
    for payload in ["a", "😃", "a" * (room_for - 4) + "😃", "é" * (room_for // 2)]:
        data = (prefix + payload + "\r\n").encode()
        assert len(data) <= 512
        if how == "whole":
            alice.send(data)
        else:
            for byte in data:
                alice.send(bytes([byte]))
        line = bob.line()
        assert len(line.encode()) + 1 <= 512  # CR LF included
        message = parse(line[:-1])
        assert message is not None
        assert message.params[0] == "bob"
        assert payload.startswith(message.params[1])  # intact, or cut at a character boundary
        assert len(message.params[1]) >= min(len(payload), 200)


def test_over_long_input_gets_417_and_the_connection_stays(irc_server):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    alice.send_line("PRIVMSG bob :" + "x" * 600)
    assert alice.msg().command == "417"
    alice.send_line("PRIVMSG bob :short")
    assert bob.expect_cmd("PRIVMSG").params[-1] == "short"


# -- channel operators ---------------------------------------------------------------------


def test_topic_kick_and_operator_numerics(irc_server):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    alice.send_line("JOIN #chan")
    alice.sync()
    bob.send_line("JOIN #chan")
    bob.sync()
    bob.send_line("TOPIC #chan")
    assert bob.msg().command == "331"
    bob.send_line("TOPIC #chan :new topic")
    assert alice.expect_cmd("TOPIC").params == ("#chan", "new topic")
    bob.send_line("TOPIC #chan")
    assert [bob.expect_cmd("332").params[-1], bob.msg().command] == ["new topic", "333"]
    bob.send_line("KICK #chan alice")
    assert bob.expect_cmd("482").params[1] == "#chan"
    bob.send_line("MODE #chan +s")
    assert bob.msg().command == "482"
    alice.send_line("KICK #chan nobody")
    assert alice.msg().command == "401"
    alice.send_line("MODE #chan +o bob")
    assert bob.expect_cmd("MODE").params == ("#chan", "+o", "bob")
    bob.send_line("KICK #chan alice :out")
    kick = alice.expect_cmd("KICK")
    assert (kick.source.split("!")[0], kick.params) == ("bob", ("#chan", "alice", "out"))
    alice.send_line("KICK #chan bob")
    assert alice.msg().command == "442"
    bob.send_line("MODE #chan")
    assert bob.expect_cmd("324").params[1:] == ("#chan", "+n")
    bob.send_line("MODE #chan b")
    assert bob.msg().command == "368"


def test_nick_change_who_whois_lusers_list(irc_server):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    for peer in (alice, bob):
        peer.send_line("JOIN #chan")
        peer.sync()
    bob.send_line("NICK robert")
    for peer in (alice, bob):
        nick = peer.expect_cmd("NICK")
        assert (nick.source.split("!")[0], nick.params) == ("bob", ("robert",))
    alice.send_line("NICK robert")
    assert alice.msg().command == "433"
    alice.send_line("WHO #chan")
    replies = alice.sync()
    assert [m.command for m in replies] == ["352", "352", "315"]
    alice.send_line("WHOIS robert")
    replies = alice.sync()
    assert [m.command for m in replies] == ["311", "319", "312", "318"]
    alice.send_line("WHOIS ghost")
    assert [m.command for m in alice.sync()] == ["401", "318"]
    alice.send_line("LIST")
    assert [m.command for m in alice.sync()] == ["321", "322", "322", "323"]  # #lobby too
    alice.send_line("LUSERS")
    assert alice.msg().params[-1] == "There are 2 users and 0 invisible on 1 servers"


def test_whois_and_who_show_the_real_name_given_in_user_cleaned_and_cut(irc_server):
    """The USER line's real name is what WHOIS and WHO show (irssi's "ircname"), as on any IRC
    server; terminal escapes in it never reach the asker, and it is cut to 50 characters.
    A text user, who gives none, shows the nick."""
    alice = connect(irc_server)
    alice.send("NICK alice\r\nUSER al 0 * :Alice \x1b[2JLiddell " + "x" * 80 + "\r\n")
    alice.expect_cmd("422")
    bob = connect(irc_server, "bob")
    text = TextPeer(irc_server.address, "carol")
    bob.send_line("WHOIS alice")
    whois = bob.expect_cmd("311")
    assert whois.params[1:5] == ("alice", "~al", "irc", "*")
    assert whois.params[5] == ("Alice Liddell " + "x" * 80)[:50]
    bob.sync()
    bob.send_line("WHO alice")
    assert bob.expect_cmd("352").params[-1] == "0 " + whois.params[5]
    bob.sync()
    bob.send_line("WHOIS carol")
    assert bob.expect_cmd("311").params[5] == "carol"
    bob.sync()
    text.close()


def test_who_with_a_mask_lists_the_matching_users_of_every_front_end(irc_server):
    peers = [connect(irc_server, nick) for nick in ("coolNick", "cool[b]", "other")]
    text = TextPeer(irc_server.address, "coolText")
    asker = peers[-1]
    for mask, expected in [
        ("cool*", {"coolNick", "cool[b]", "coolText"}),
        ("COOL[B]", {"cool[b]"}),  # brackets are the nick's own characters, case folded
        ("cool????", {"coolNick", "coolText"}),
        ("*", {"coolNick", "cool[b]", "coolText", "other"}),
        ("0", {"coolNick", "cool[b]", "coolText", "other"}),
        ("nobody*", set()),
    ]:
        asker.send_line(f"WHO {mask}")
        replies = asker.sync()
        assert (replies[-1].command, replies[-1].params[1]) == ("315", mask)
        assert {m.params[5] for m in replies[:-1]} == expected, mask
    text.close()


def test_away_is_told_to_whoever_asks_or_writes_privately_and_never_announced(irc_server):
    """AWAY :msg marks a user away (306), AWAY alone brings it back (305); a PRIVMSG to it is
    answered with 301 and the message (a NOTICE never is), WHOIS adds 301, WHO says G instead
    of H. Nobody else is told: nothing is announced. The message is cleaned and cut to 200."""
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    for peer in (alice, bob):
        peer.send_line("JOIN #chan")
        peer.sync()
    alice.send_line("AWAY :at \x1b[31mlunch " + "z" * 300)
    assert [m.command for m in alice.sync()] == ["JOIN", "306"]  # bob's JOIN, then the answer
    bob.send_line("NOTICE alice :psst")
    bob.send_line("PRIVMSG alice :hello?")
    away = bob.expect_cmd("301")
    assert away.params[1:] == ("alice", ("at lunch " + "z" * 300)[:200])
    assert [m.command for m in bob.sync()] == []  # one 301: for the PRIVMSG only
    bob.send_line("WHOIS alice")
    assert "301" in [m.command for m in bob.sync()]
    bob.send_line("WHO #chan")
    flags = {m.params[5]: m.params[6] for m in bob.sync() if m.command == "352"}
    assert flags == {"alice": "G@", "bob": "H"}
    alice.send_line("AWAY")
    told = alice.sync()
    assert [m.command for m in told] == ["NOTICE", "PRIVMSG", "305"]  # nothing announced
    assert told[-1].params[-1] == "You are no longer marked as being away"
    bob.send_line("PRIVMSG alice :back?")
    bob.send_line("WHOIS alice")
    assert "301" not in [m.command for m in bob.sync()]


def test_userhost_and_ison_answer_for_users_online_of_every_front_end(irc_server):
    """USERHOST (302: `nick=+user@host`, `-` when away) and ISON (303: irssi's /notify), for
    users of any front-end; nicks nobody holds are left out."""
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    text = TextPeer(irc_server.address, "carol")
    bob.send_line("AWAY :gone fishing")
    bob.expect_cmd("306")
    alice.send_line("USERHOST bob ALICE ghost carol")
    assert alice.expect_cmd("302").params[-1] == "bob=-~user@irc alice=+~user@irc carol=+carol@text"
    alice.send_line("ISON Bob ghost carol :alice")
    assert alice.expect_cmd("303").params[-1] == "bob carol alice"
    alice.send_line("ISON nobody")
    assert alice.expect_cmd("303").params[-1] == ""
    text.close()


def test_lusers_counts_users_now_and_the_most_at_once(irc_server):
    alice, bob = connect(irc_server, "alice"), connect(irc_server, "bob")
    for peer in (alice, bob):
        peer.send_line("JOIN #chan")
        peer.sync()
    bob.send_line("QUIT")
    alice.expect_cmd("QUIT")  # bob has left the hub
    alice.send_line("LUSERS")
    replies = {m.command: m.params for m in alice.sync()}
    assert replies["251"][-1] == "There are 1 users and 0 invisible on 1 servers"
    assert replies["265"][1:] == ("1", "2", "Current local users 1, max 2")
    assert replies["266"][1:] == ("1", "2", "Current global users 1, max 2")


# -- across front-ends ---------------------------------------------------------------------


def test_irc_text_and_json_users_share_lobby(irc_server):
    text = TextPeer(irc_server.address, "alice")
    program = JsonPeer(irc_server.address, "bot")
    text.expect("*** bot joined")
    bob = connect(irc_server, "bob")
    bob.send_line("JOIN #lobby")
    assert bob.msg().command == "JOIN"
    assert bob.msg().params[-1] == "alice bob bot"  # the lobby has no operator
    bob.msg()  # 366
    assert text.line() == "*** bob joined (3 online)"
    assert program.expect_type("join")["nick"] == "bob"

    text.send("hi\n")
    msg = bob.expect_cmd("PRIVMSG")
    assert (msg.source, msg.params) == ("alice!alice@text", ("#lobby", "hi"))
    bob.send_line("PRIVMSG #lobby :hello from irc")
    assert text.expect("<bob>") == "<bob> hello from irc"
    assert program.expect_type("message")["text"] == "hi"
    event = program.expect_type("message")
    assert (event["from"], event["room"], event["text"]) == ("bob", "#lobby", "hello from irc")
    bob.send_line("PRIVMSG #lobby :\x01ACTION waves\x01")
    assert text.expect("* bob") == "* bob waves"
    text.send("/msg bob psst\n")
    assert bob.expect_cmd("PRIVMSG").params == ("bob", "psst")
    bob.send_line("PRIVMSG alice :back")
    assert text.expect("[private]") == "[private] <bob> back"

    bob.send_line("NICK robert")
    assert text.expect("*** bob") == "*** bob is now known as robert"
    assert program.expect_type("rename")["new"] == "robert"
    assert bob.expect_cmd("NICK").source.startswith("bob!")  # its own, first
    text.send("/nick alicia\n")
    assert bob.expect_cmd("NICK").source.startswith("alice!")
    program.send_json({"type": "topic", "topic": "today: IRC"})
    assert bob.expect_cmd("TOPIC").params == ("#lobby", "today: IRC")
    bob.send_line("PART #lobby :bye")
    assert text.expect("*** robert left") == "*** robert left #lobby (bye)"
    assert program.expect_type("part")["message"] == "bye"
    bob.send_line("JOIN #lobby")
    text.expect("*** robert joined")
    bob.send_line("QUIT :later")
    assert text.expect("*** robert left") == "*** robert left (quit: later)"
    assert program.expect_type("leave")["message"] == "later"


def test_one_nickname_namespace_across_front_ends(irc_server):
    holder = TextPeer(irc_server.address, "alice")
    peer = connect(irc_server)
    peer.send_line("NICK ALICE")
    assert peer.msg().command == "433"
    peer.register("bob")
    text = TextPeer(irc_server.address)
    text.send("BOB\n")
    assert text.line() == "! nickname BOB is taken"
    holder.close()


def test_irc_admission_refusal_is_an_error_line(make_server):
    server = make_server(irc_port=0, max_clients=1)
    only = connect(server, "only")
    extra = Peer(server.irc_address)
    assert extra.until_closed() == ["ERROR :Closing link: (server full, try again later)\r"]
    only.close()


def test_irc_port_is_off_unless_asked(server):
    with pytest.raises(AssertionError, match="irc_port"):
        server.irc_address  # noqa: B018
    # the one port there is speaks text (and JSON), not IRC
    assert TextPeer(server.address).greeting[0].startswith("* Welcome to chat!")
