"""Large rooms (ServerConfig.quiet_room_size): above the threshold joins, parts and quits are told
only to the user concerned; lists, counts, kicks stay exact; welcomes and room views are capped.

The threshold is set to 5 so that a "large" room takes six real connections."""

from __future__ import annotations

from typing import Any

from chat import events as ev
from tests.peers import IrcPeer, JsonPeer, RecordingTextPeer, TextPeer, wait_until

QUIET = 5


def test_text_room_over_the_threshold_is_quiet_and_lists_stay_right(make_server: Any) -> None:
    server = make_server(quiet_room_size=QUIET)
    watcher = RecordingTextPeer(server.address, "w0")
    early = [TextPeer(server.address, f"u{i}") for i in range(1, QUIET)]  # the room has 5
    watcher.sync()  # up to 5 in the room, everyone hears every join
    joins = [line for line in watcher.received if " joined (" in line]
    assert joins == [
        f"*** {n} joined ({i + 1} online)" for i, n in enumerate(["w0", "u1", "u2", "u3", "u4"])
    ]
    late = TextPeer(server.address, "late")  # the sixth: its own join echo, nobody else's
    assert late.welcome.startswith("* Hello late. Online: ")
    seen = watcher.sync()
    assert not [line for line in seen if "late" in line]
    watcher.send("/who\n")
    who = watcher.expect("*** Users in #lobby (")
    assert who.startswith("*** Users in #lobby (6): ")
    assert "late" in who
    watcher.send("/rooms\n")
    assert watcher.expect("*** Rooms (") == "*** Rooms (1): #lobby (6)"
    late.close()  # leaves a room of 6: nobody is told
    wait_until(lambda: len(server.hub) == QUIET)
    assert not [line for line in watcher.sync() if "late" in line]
    early[-1].close()  # leaves a room of 5: everyone is told
    watcher.expect(f"*** u{QUIET - 1} left")
    for peer in (watcher, *early[:-1]):
        peer.close()


def test_below_the_threshold_everyone_hears_joins_and_leaves(make_server: Any) -> None:
    server = make_server(quiet_room_size=0)  # 0: never quiet
    watcher = TextPeer(server.address, "w0")
    peers = [TextPeer(server.address, f"u{i}") for i in range(1, QUIET + 2)]
    for i in range(1, QUIET + 2):
        watcher.expect(f"*** u{i} joined ({i + 1} online)")
    peers[-1].close()
    watcher.expect(f"*** u{QUIET + 1} left")
    for peer in (watcher, *peers[:-1]):
        peer.close()


def test_welcome_and_room_view_are_capped_with_the_others_counted(make_server: Any) -> None:
    server = make_server(quiet_room_size=QUIET)
    total = ev.SHOWN_USERS + 3
    peers = [JsonPeer(server.address, f"j{i}") for i in range(total - 1)]
    text = TextPeer(server.address, "last")  # the welcome counts everyone but the ones shown
    assert text.welcome.endswith(", ... and 3 others. Type /help for commands.")
    assert text.welcome.count(",") == ev.SHOWN_USERS  # 50 names, then "... and 3 others"
    newcomer = JsonPeer(server.address, "newest")
    assert len(newcomer.welcome["users"]) == ev.SHOWN_USERS
    assert newcomer.welcome["more_users"] == total + 1 - ev.SHOWN_USERS
    assert "j0" in newcomer.welcome["users"]  # the longest-present users are the ones shown
    for peer in peers:  # everyone moves to #big; the last one's view is capped
        peer.send_json({"type": "join", "room": "#big"})
        peer.expect_type("room")
    text.send("/join #big\n")
    view = text.expect("*** Now talking in #big (")
    assert view.startswith(f"*** Now talking in #big ({total}): ")
    assert view.endswith(f", ... and {total - ev.SHOWN_USERS} others.")
    newcomer.send_json({"type": "join", "room": "#big"})
    room = newcomer.expect_type("room")
    assert len(room["users"]) == ev.SHOWN_USERS
    assert room["more_users"] == total + 1 - ev.SHOWN_USERS
    assert room["operators"] == ["j0"]
    newcomer.send_json({"type": "who", "room": "#big"})
    assert len(newcomer.expect_type("users")["users"]) == total + 1  # /who is complete
    for peer in (*peers, text, newcomer):
        peer.close()


def test_irc_in_a_quiet_room_gets_its_own_join_part_and_complete_names(make_server: Any) -> None:
    server = make_server(irc_port=0, quiet_room_size=QUIET)
    op = IrcPeer(server.irc_address, "op")
    op.send_line("JOIN #big")
    op.expect_cmd("366")
    members = []
    for i in range(1, QUIET):
        peer = IrcPeer(server.irc_address, f"m{i}")
        peer.send_line("JOIN #big")
        peer.expect_cmd("366")
        members.append(peer)
        assert op.expect_cmd("JOIN").source.startswith(f"m{i}!")
    late = IrcPeer(server.irc_address, "late")
    late.send_line("JOIN #big")
    assert late.expect_cmd("JOIN").source.startswith("late!")  # its own echo
    names = late.expect_cmd("353").params[-1].split()
    assert sorted(n.lstrip("@") for n in names) == sorted(
        ["op", "late", *(f"m{i}" for i in range(1, QUIET))]
    )
    assert not [m for m in op.sync() if m.command == "JOIN"]
    op.send_line("LIST #big")
    assert op.expect_cmd("322").params[2] == str(QUIET + 1)
    late.send_line("PART #big :bye")
    assert late.expect_cmd("PART").source.startswith("late!")  # its own part
    assert not [m for m in op.sync() if m.command == "PART"]
    op.send_line("KICK #big m1 :out")  # kicks are told to everyone, however large the room
    for peer in (op, *members):
        assert peer.expect_cmd("KICK").params[1] == "m1"
    for peer in (op, late, *members):
        peer.close()
