"""The UI driven through prompt-toolkit's pipe input (no terminal) against a real in-process server.

What the user does is typed into a pipe; what the server delivers is read by a raw JSON peer;
what the user sees is read from the UI's transcript (the lines it printed, with their styles).
Every wait is an event or a bounded read.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.data_structures import Size
from prompt_toolkit.history import FileHistory
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput

from chat.config import ServerConfig
from chat.server import ChatServer
from client.connection import ConnectError, Connection
from client.render import Line, nick_style
from client.ui import ChatUI, toolbar_fragments
from tests.peers import JsonPeer
from tests.test_client_connection import Proxy

WAIT_S = 5.0
UP = "\x1b[A"
CTRL_C = "\x03"
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    with ChatServer(ServerConfig(port=0, flood_rate=0)) as server:
        yield server


class RunningUI:
    """A ChatUI running in its own thread, fed by a pipe."""

    def __init__(self, ui: ChatUI, pipe: PipeInput) -> None:
        self.ui = ui
        self.pipe = pipe
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, name="test-ui")

    def _run(self) -> None:
        self.exit_code = self.ui.run()

    def type(self, text: str) -> None:
        self.pipe.send_text(text)

    def line(self, predicate: Callable[[Line], bool]) -> Line:
        return self.ui.wait_for_line(predicate, WAIT_S)

    def shows(self, text: str) -> Line:
        return self.line(lambda line: text in line.plain)

    def wait_for_buffer(self, text: str) -> None:
        """Wait until the input line reads `text` (an event from the buffer, not a poll)."""
        buffer = self.ui.session.default_buffer
        reached = threading.Event()

        def changed(changed_buffer: Buffer) -> None:
            if changed_buffer.text == text:
                reached.set()

        buffer.on_text_changed += changed
        try:
            if buffer.text != text:
                assert reached.wait(WAIT_S), f"input line is {buffer.text!r}, not {text!r}"
        finally:
            buffer.on_text_changed -= changed

    def finish(self) -> int | None:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the UI did not exit"
        return self.exit_code


@contextlib.contextmanager
def running_ui(
    address: tuple[str, int], nick: str, history: Path, **options: Any
) -> Iterator[RunningUI]:
    connection = Connection(*address, nick, backoff_initial_s=0.05, backoff_max_s=0.2, **options)
    connection.connect()
    with create_pipe_input() as pipe:
        ui = ChatUI(connection, history_path=history, input=pipe, output=DummyOutput())
        running = RunningUI(ui, pipe)
        running.thread.start()
        try:
            yield running
        finally:
            if running.thread.is_alive():
                ui.request_quit()
            running.finish()
            connection.close()


@pytest.fixture
def history(tmp_path: Path) -> Path:
    return tmp_path / "data" / "chat-client" / "history"


def test_typing_a_message_delivers_it(chat_server: ChatServer, history: Path) -> None:
    bob = JsonPeer(chat_server.address, "bob")
    with running_ui(chat_server.address, "alice", history) as alice:
        alice.shows("Welcome to #lobby as alice")
        alice.type("hello bob\r")
        assert bob.expect_type("message")["text"] == "hello bob"
        own = alice.shows("<alice> hello bob")
        assert (nick_style("alice") + " class:own bold", "alice") in own.fragments


def test_incoming_events_render_with_time_nick_and_colour(
    chat_server: ChatServer, history: Path
) -> None:
    with running_ui(chat_server.address, "alice", history) as alice:
        bob = JsonPeer(chat_server.address, "bob")
        alice.shows("bob joined (2 here)")
        bob.send_json({"type": "message", "text": "hi there"})
        bob.send_json({"type": "action", "text": "waves"})
        bob.send_json({"type": "message", "text": "alice: lunch?"})
        bob.send_json({"type": "private", "to": "alice", "text": "psst"})
        bob.send_json({"type": "nick", "nick": "rob"})
        bob.sync()
        line = alice.shows("<bob> hi there")
        assert line.plain[2] == ":"
        assert line.plain[:5].replace(":", "").isdigit()  # HH:MM
        assert (nick_style("bob"), "bob") in line.fragments
        assert not line.highlight
        assert "class:action" in alice.shows("* bob waves").fragments[1][0]
        assert alice.shows("<bob> alice: lunch?").highlight
        assert alice.shows("[private] <bob> psst").highlight
        assert alice.ui.bells >= 1  # one ring per batch of lines
        assert alice.shows("bob is now known as rob").fragments[1][0] == "class:dim"
        assert alice.ui.status.users == ("alice", "rob")


def test_tab_completes_nicks_kept_current(chat_server: ChatServer, history: Path) -> None:
    bob = JsonPeer(chat_server.address, "bob")
    with running_ui(chat_server.address, "alice", history) as alice:
        alice.type("bo\t")
        alice.wait_for_buffer("bob: ")
        alice.type("hi\r")
        assert bob.expect_type("message")["text"] == "bob: hi"
        bob.send_json({"type": "nick", "nick": "robert"})
        alice.shows("bob is now known as robert")
        robert = bob
        alice.type("ro\t")
        alice.wait_for_buffer("robert: ")
        alice.type("\x15/ni\t")  # Ctrl-U clears the line; commands complete too
        alice.wait_for_buffer("/nick ")
        alice.type("\x15")
        rachel = JsonPeer(chat_server.address, "rachel")
        alice.shows("rachel joined")
        robert.send_json({"type": "message", "text": "me first"})  # spoke last: offered first
        alice.shows("<robert> me first")
        alice.type("r\t")
        alice.wait_for_buffer("robert: ")
        alice.type("\t")  # Tab again cycles
        alice.wait_for_buffer("rachel: ")
        alice.type("\x1b[Z")  # Shift-Tab goes back
        alice.wait_for_buffer("robert: ")
        rachel.close()


def test_history_up_and_kept_in_the_data_dir(chat_server: ChatServer, history: Path) -> None:
    bob = JsonPeer(chat_server.address, "bob")
    with running_ui(chat_server.address, "alice", history) as alice:
        alice.type("first\r")
        alice.type("second\r")
        assert bob.expect_type("message")["text"] == "first"
        assert bob.expect_type("message")["text"] == "second"
        alice.type(UP + UP)
        alice.wait_for_buffer("first")
        alice.type("\r")
        assert bob.expect_type("message")["text"] == "first"
        alice.type("\x12sec\r")  # Ctrl-R: reverse search; Enter takes the match
        alice.wait_for_buffer("second")
        alice.type("\r")
        assert bob.expect_type("message")["text"] == "second"
        alice.type("/quit\r")
        assert alice.finish() == 0
    kept = list(FileHistory(str(history)).load_history_strings())  # newest first
    assert kept == ["/quit", "second", "first", "second", "first"]
    assert history.stat().st_mode & 0o077 == 0  # private messages are in it


def test_paste_of_many_lines_asks_first_and_no_keeps_it_to_edit(
    chat_server: ChatServer, history: Path
) -> None:
    bob = JsonPeer(chat_server.address, "bob")
    with running_ui(chat_server.address, "alice", history) as alice:
        alice.type(PASTE_START + "one\ntwo\nthree" + PASTE_END + "\r")
        alice.type("n\r")
        alice.shows("paste of 3 lines not sent")
        alice.wait_for_buffer("one\ntwo\nthree")  # kept in the input line, to edit
        alice.type("!")  # the cursor is at its end
        alice.wait_for_buffer("one\ntwo\nthree!")
        alice.type("\r")  # asks again
        alice.type("y\r")
        assert [bob.expect_type("message")["text"] for _ in range(3)] == ["one", "two", "three!"]
        alice.type(PASTE_START + "one\n/two" + PASTE_END + "\r")
        alice.type("y\r")
        assert bob.expect_type("message")["text"] == "one"
        assert bob.expect_type("message")["text"] == "/two"


def test_commands_and_local_help(chat_server: ChatServer, history: Path) -> None:
    bob = JsonPeer(chat_server.address, "bob")
    with running_ui(chat_server.address, "alice", history) as alice:
        alice.type("/help\r")
        alice.shows("/clear")
        alice.type("/frob\r")
        alice.shows("unknown command /frob")
        alice.type("/me waves\r")
        alice.shows("* alice waves")
        alice.type("/msg bob psst\r")
        alice.shows("[private to bob] <alice> psst")
        assert bob.expect_type("action")["text"] == "waves"
        assert bob.expect_type("private")["text"] == "psst"
        alice.type("/who\r")
        alice.shows("People in #lobby (2): alice, bob")
        alice.type("/nick alicia\r")
        alice.shows("You are now known as alicia")
        assert alice.ui.status.nick == "alicia"


def test_quit_tells_the_server(chat_server: ChatServer, history: Path) -> None:
    bob = JsonPeer(chat_server.address, "bob")
    with running_ui(chat_server.address, "alice", history) as alice:
        bob.expect_type("join")
        alice.type("/quit see you\r")
        assert alice.finish() == 0
    leave = bob.expect_type("leave")
    assert (leave["nick"], leave["reason"], leave["message"]) == ("alice", "quit", "see you")


def test_ctrl_d_leaves_cleanly(chat_server: ChatServer, history: Path) -> None:
    bob = JsonPeer(chat_server.address, "bob")
    with running_ui(chat_server.address, "alice", history) as alice:
        bob.expect_type("join")
        alice.type("\x04")
        assert alice.finish() == 0
    assert bob.expect_type("leave")["reason"] == "quit"


def test_reconnect_after_server_restart_and_offline_lines(history: Path) -> None:
    first = ChatServer(ServerConfig(port=0, flood_rate=0)).start()
    address = first.address
    # Through a proxy whose gate holds the reconnect until bob is in the new server's room,
    # so bob cannot miss the queued line.
    proxy = Proxy(address)
    try:
        with running_ui(proxy.address, "alice", history) as alice:
            alice.shows("Welcome")
            proxy.gate.clear()
            first.stop()
            alice.shows("connection lost")
            assert alice.ui.status.state == "reconnecting"
            bar = "".join(text for _, text in toolbar_fragments(alice.ui.status, 0))
            assert "reconnecting (attempt 1, next in" in bar
            alice.type("typed while away\r")
            assert alice.shows("typed while away").plain.endswith("(queued: not connected)")
            alice.type("/who\r")
            alice.shows("not connected: /who")
            with ChatServer(ServerConfig(host=address[0], port=address[1], flood_rate=0)) as second:
                bob = JsonPeer(second.address, "bob")
                proxy.gate.set()
                alice.shows("reconnected to")
                assert bob.expect_type("message")["text"] == "typed while away"
                alice.type("back again\r")
                assert bob.expect_type("message")["text"] == "back again"
                assert alice.ui.status.state == "connected"
                assert alice.ui.status.nick == "alice"
                alice.type("/quit\r")
                assert alice.finish() == 0
    finally:
        proxy.close()


def test_quitting_while_offline_says_what_was_never_sent(history: Path) -> None:
    server = ChatServer(ServerConfig(port=0, flood_rate=0)).start()
    with running_ui(server.address, "alice", history) as alice:
        alice.shows("Welcome")
        server.stop()
        alice.shows("connection lost")
        alice.type("lost cause\r")
        alice.shows("(queued: not connected)")
        alice.type("/quit\r")
        assert alice.finish() == 0
        alice.shows("1 queued line(s) were never sent")


def test_rooms_join_talk_switch_and_part(chat_server: ChatServer, history: Path) -> None:
    carol = JsonPeer(chat_server.address, "carol")
    with running_ui(chat_server.address, "alice", history) as alice:
        alice.type("/join #rust\r")
        alice.shows("Now talking in #rust (1): @alice")
        assert (alice.ui.status.room, alice.ui.status.rooms) == ("#rust", ("#lobby", "#rust"))
        bob = JsonPeer(chat_server.address, "bob")
        bob.send_json({"type": "join", "room": "#rust"})
        alice.shows("bob joined (2 here)")
        bob.send_json({"type": "message", "room": "#rust", "text": "hi rustaceans"})
        alice.shows("<bob> hi rustaceans")
        carol.send_json({"type": "message", "text": "lunch?"})
        alice.shows("[#lobby] <carol> lunch?")
        alice.type("hello rust\r")
        assert bob.expect_type("message")["text"] == "lunch?"  # bob is in #lobby too
        said = bob.expect_type("message")
        assert (said["room"], said["text"]) == ("#rust", "hello rust")
        alice.type("/join #lobby\r")  # already in it: just switch
        alice.shows("Now talking in #lobby")
        alice.type("count me in\r")
        said = carol.expect_type("message")
        assert (said["room"], said["text"]) == ("#lobby", "count me in")
        alice.type("/part #rust see you\r")
        alice.shows("You left #rust (see you)")
        assert alice.ui.status.rooms == ("#lobby",)


def test_kicked_from_the_current_room_says_so(chat_server: ChatServer, history: Path) -> None:
    carol = JsonPeer(chat_server.address, "carol")
    carol.send_json({"type": "join", "room": "#rust"})  # first in: carol is its operator
    carol.expect_type("room")
    with running_ui(chat_server.address, "alice", history) as alice:
        alice.type("/join #rust\r")
        alice.shows("Now talking in #rust")
        carol.expect_type("join")
        carol.send_json({"type": "kick", "room": "#rust", "nick": "alice", "reason": "too loud"})
        kicked = alice.shows("You were kicked from #rust by carol (too loud)")
        assert kicked.plain.endswith("; now talking in #lobby")
        assert alice.ui.status.room == "#lobby"


def test_password(history: Path) -> None:
    with ChatServer(ServerConfig(port=0, password="sesame")) as server:
        with pytest.raises(ConnectError, match="password"):
            Connection(*server.address, "alice", password="wrong").connect()
        connection = Connection(*server.address, "alice", password="sesame")
        assert connection.connect().nick == "alice"
        connection.quit()


def carol_only_in_rust(address: tuple[str, int]) -> JsonPeer:
    """carol is online but not in #lobby: she joined #rust and left #lobby."""
    carol = JsonPeer(address, "carol")
    carol.send_json({"type": "join", "room": "#rust"})
    carol.expect_type("room")
    carol.send_json({"type": "part", "room": "#lobby"})
    carol.expect_type("part")
    return carol


def test_users_lists_everyone_while_the_bar_and_completion_keep_to_the_room(
    chat_server: ChatServer, history: Path
) -> None:
    bob = JsonPeer(chat_server.address, "bob")
    carol = carol_only_in_rust(chat_server.address)
    with running_ui(chat_server.address, "alice", history) as alice:
        alice.shows("Welcome to #lobby as alice (2 here)")
        alice.type("/users\r")
        alice.shows("Online (3): alice, bob, carol")  # everyone, in every room
        # A server from before the /who change answers /who with everyone: that must not
        # make carol a member of #lobby for the status bar or for completion.
        alice.type("/who\r")
        alice.line(lambda line: "People in #lobby" in line.plain)
        assert alice.ui.status.users == ("alice", "bob")
        bar = "".join(text for _, text in toolbar_fragments(alice.ui.status, 0))
        assert "#lobby (2 here)" in bar
        alice.type("ca\tX")  # carol is not in the room: nothing to complete
        alice.wait_for_buffer("caX")
        alice.type("\x15bo\t")
        alice.wait_for_buffer("bob: ")
        alice.type("\x15/help\r")
        alice.shows("/who                   list the people in the current room")
        alice.shows("/users                 list everyone online, in every room")
    bob.close()
    carol.close()


def test_who_lists_the_current_rooms_members(chat_server: ChatServer, history: Path) -> None:
    bob = JsonPeer(chat_server.address, "bob")
    carol = carol_only_in_rust(chat_server.address)
    with running_ui(chat_server.address, "alice", history) as alice:
        alice.type("/who\r")
        listed = alice.line(lambda line: "People in #lobby" in line.plain)
        assert listed.plain.endswith("People in #lobby (2): alice, bob")  # carol is elsewhere
        alice.type("/join #rust\r")
        alice.shows("Now talking in #rust (2)")
        alice.type("/join #lobby\r")  # switched by the client alone: /who must name the room
        alice.shows("Now talking in #lobby")
        alice.type("/join #rust\r")
        alice.type("/who\r")
        listed = alice.line(lambda line: "People in #rust" in line.plain)
        names = listed.plain.split("People in #rust (2): ", 1)[-1].split(", ")
        assert sorted(name.lstrip("@") for name in names) == ["alice", "carol"]  # @: operator
    bob.close()
    carol.close()


class ResizableOutput(DummyOutput):
    """A terminal that can be resized and keeps what was printed on it."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.printed: list[str] = []
        self.more_printed = threading.Condition()

    def get_size(self) -> Size:
        return Size(rows=24, columns=self.columns)

    def write(self, data: str) -> None:
        with self.more_printed:
            self.printed.append(data)
            self.more_printed.notify_all()

    def rows_with(self, marker: str) -> list[str]:
        """The printed rows of the line that contains `marker`, waited for."""

        def rows() -> list[str]:
            text = "".join(self.printed)
            # Printed rows end in "\r\n"; the prompt and the bar are redrawn in between with
            # carriage returns (cursor moves are not recorded): keep what follows the last one.
            lines = [row.rstrip("\r").rsplit("\r", 1)[-1] for row in text.split("\n")]
            start = next((i for i, row in enumerate(lines) if marker in row), None)
            if start is None:
                return []
            # The line's rows: the first, then its indented continuation rows.
            found = [lines[start]]
            found += itertools.takewhile(lambda row: row.startswith(" "), lines[start + 1 :])
            return found if start + len(found) < len(lines) else []  # complete only

        with self.more_printed:
            assert self.more_printed.wait_for(lambda: bool(rows()), WAIT_S), self.printed
            return rows()


def test_after_a_resize_new_lines_wrap_to_the_new_width_old_ones_stay(
    chat_server: ChatServer, history: Path
) -> None:
    bob = JsonPeer(chat_server.address, "bob")
    output = ResizableOutput(columns=80)
    connection = Connection(*chat_server.address, "alice")
    connection.connect()
    text = "the quick brown fox jumps over the lazy dog " * 3
    with create_pipe_input() as pipe:
        ui = ChatUI(connection, history_path=history, input=pipe, output=output)
        alice = RunningUI(ui, pipe)
        alice.thread.start()
        try:
            bob.send_json({"type": "message", "text": "wide " + text})
            wide = output.rows_with("<bob> wide")
            output.columns = 40  # the terminal is made narrower
            bob.send_json({"type": "message", "text": "narrow " + text})
            narrow = output.rows_with("<bob> narrow")
            assert max(len(row) for row in wide) > 40  # printed at the width of its time
            assert len(wide) == 2
            assert all(len(row) <= 40 for row in narrow), narrow  # wrapped to the new width
            assert len(narrow) == 5, narrow
            assert all(row.startswith(" " * 12) for row in narrow[1:])  # indented under the text
            assert output.rows_with("<bob> wide") == wide  # not printed again
        finally:
            ui.request_quit()
            alice.finish()
            connection.close()
    bob.close()
