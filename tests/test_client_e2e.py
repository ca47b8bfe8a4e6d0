"""End to end: `chat-client` as a process in a real pseudo-terminal, read as a person sees it.

The terminal is emulated with pyte (which also answers the client's cursor-position requests, as
a real terminal does); the server is a real `chat-server` process, or a fake one that "forgot" to
sanitise. Screen contents are the only thing polled, with a deadline. Piped mode runs the client
with stdin from a pipe against an in-process server.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pyte
import pytest

from chat.config import ServerConfig
from chat.server import ChatServer
from tests.peers import JsonPeer, TextPeer

WAIT_S = 10.0
ROWS, COLS = 24, 80


def client_command() -> list[str]:
    """The installed `chat-client` script next to this Python, else `python -m client`."""
    script = shutil.which("chat-client", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "client"]


def client_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TERM="xterm-256color", CHAT_CLIENT_HISTORY=str(tmp_path / "history"))
    env.pop("NO_COLOR", None)
    return env


class Screen(pyte.Screen):  # type: ignore[misc]
    """A pyte screen that counts the bells it hears."""

    bells = 0

    def bell(self, *args: object) -> None:
        self.bells += 1


class Terminal:
    """A process in a pseudo-terminal with a pyte screen in front of it."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.screen = Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.child = pexpect.spawn(args[0], args[1:], env=env, dimensions=(ROWS, COLS))
        # pyte answers "where is the cursor?" (CSI 6n) through this hook, like a real terminal;
        # prompt-toolkit needs the answer to know the height and show the bottom toolbar.
        self.screen.write_process_input = self.child.send  # type: ignore[method-assign]

    def pump(self, timeout: float) -> None:
        try:
            self.stream.feed(self.child.read_nonblocking(65536, timeout=timeout))
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            time.sleep(timeout)  # nothing more will come; do not spin

    @property
    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, pattern: str, timeout: float = WAIT_S) -> None:
        """Poll the screen (with a deadline) until `pattern` (a regex) shows."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not on screen:\n{self.text}")
            self.pump(0.05)

    def type(self, text: str) -> None:
        self.child.send(text)

    def exit_code(self, timeout: float = WAIT_S) -> int:
        deadline = time.monotonic() + timeout
        while self.child.isalive():
            if time.monotonic() > deadline:
                raise AssertionError(f"client still running:\n{self.text}")
            self.pump(0.05)
        self.pump(0.01)
        self.child.close()
        assert "Traceback" not in self.text
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.child.close()


@pytest.fixture
def server_port() -> Iterator[int]:
    """A real `chat-server` process on 127.0.0.1; yields its port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "chat", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read_log() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)

    threading.Thread(target=read_log, name="server-log", daemon=True).start()
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            match = re.search(r"listening on \S+:(\d+)", line)
            if match:
                break
        yield int(match.group(1))
    finally:
        process.terminate()
        process.wait(WAIT_S)


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[list[Terminal]]:
    started: list[Terminal] = []
    yield started
    for terminal in started:
        terminal.kill()


def start_client(terminals: list[Terminal], tmp_path: Path, nick: str, port: int) -> Terminal:
    terminal = Terminal([*client_command(), nick, "--port", str(port)], client_env(tmp_path))
    terminals.append(terminal)
    return terminal


def test_two_clients_talk_through_a_real_server(
    server_port: int, terminals: list[Terminal], tmp_path: Path
) -> None:
    alice = start_client(terminals, tmp_path, "alice", server_port)
    alice.wait_for("Welcome to #lobby as alice")
    alice.wait_for(rf"127\.0\.0\.1:{server_port} │ connected │ alice │ #lobby \(1 here\)")
    bob = start_client(terminals, tmp_path, "bob", server_port)
    alice.wait_for("bob joined")
    alice.wait_for(r"\(2 here\)")
    bob.type("hi alice, lunch?\r")
    alice.wait_for(r"\d\d:\d\d <bob> hi alice, lunch\?")
    bob.wait_for(r"\d\d:\d\d <bob> hi alice, lunch\?")
    alice.type("b\t")  # nick completion: "bob: "
    alice.type("yes!\r")
    bob.wait_for("<alice> bob: yes!")
    bob.type("long " * 40 + "end\r")  # 200 characters: wraps, the layout holds
    alice.wait_for(r"<bob> long long")
    alice.wait_for(
        r"long end\n(.*\n)*.*│ connected │ alice │ #lobby \(2 here\)"
    )  # the bar stays below
    alice.type("/me waves\r")
    bob.wait_for(r"\* alice waves")
    alice.type("/quit off to lunch\r")
    assert alice.exit_code() == 0
    assert "server: goodbye (off to lunch)" in alice.text  # printed before leaving
    bob.wait_for(r"alice left \(quit: off to lunch")
    bob.wait_for(r"\(1 here\)")
    bob.type("\x03")  # Ctrl-C
    assert bob.exit_code() == 0


def test_escape_sequences_from_a_raw_peer_are_harmless(
    server_port: int, terminals: list[Terminal], tmp_path: Path
) -> None:
    alice = start_client(terminals, tmp_path, "alice", server_port)
    alice.wait_for("Welcome to #lobby as alice")
    mallory = TextPeer(("127.0.0.1", server_port), "mallory")
    mallory.send("\x1b[2J\x1b[31mred alert\x1b]0;pwned\x07\x1b[5;1Hmoved\x9b1mbold\r\n")
    alice.wait_for("<mallory> .*red alert")
    assert "Welcome to #lobby as alice" in alice.text  # the screen was not cleared
    assert alice.screen.title != "pwned"
    row = next(y for y, line in enumerate(alice.screen.display) if "red alert" in line)
    column = alice.screen.display[row].index("red alert")
    assert alice.screen.buffer[row][column].fg == "default"
    mallory.close()


def fake_careless_server(listener: socket.socket, text: str) -> None:
    """Accept one client, register it, send it `text` unsanitised, then wait for it to go."""
    conn, _ = listener.accept()
    with conn:
        conn.settimeout(WAIT_S)
        reader = conn.makefile("rb")
        hello = json.loads(reader.readline())
        nick = hello["nick"]
        events = [
            {"type": "welcome", "version": 1, "nick": nick, "room": "#x", "users": [nick, "eve"]},
            {
                "type": "message",
                "id": 1,
                "ts": time.time(),
                "room": "#x",
                "from": "eve",
                "text": text,
            },
        ]
        conn.sendall(b"".join(json.dumps(e).encode() + b"\n" for e in events))
        for line in reader:  # until the client quits
            if json.loads(line)["type"] == "quit":
                break


def test_client_sanitises_even_if_the_server_forgot(
    terminals: list[Terminal], tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        evil = "\x1b[2J\x1b[41mboom\x07\x1b]0;pwned\x07\r<root> fake\x9b31m\u202eevil\nnext"
        server = threading.Thread(target=fake_careless_server, args=(listener, evil))
        server.start()
        alice = start_client(terminals, tmp_path, "alice", port)
        alice.wait_for("<eve> ")
        assert "Welcome to #x as alice" in alice.text
        assert "␛[2J␛[41mboom␇␛]0;pwned␇␍<root> fake\ufffd31m\ufffdevil␊next" in alice.text
        assert alice.screen.title != "pwned"
        row = next(y for y, line in enumerate(alice.screen.display) if "boom" in line)
        assert all(char.bg == "default" for char in alice.screen.buffer[row].values())
        alice.type("/quit\r")
        assert alice.exit_code() == 0
        server.join(WAIT_S)


def test_taken_nickname_at_start_asks_for_another(
    server_port: int, terminals: list[Terminal], tmp_path: Path
) -> None:
    first = start_client(terminals, tmp_path, "alice", server_port)
    first.wait_for("Welcome to #lobby as alice")
    second = start_client(terminals, tmp_path, "alice", server_port)
    second.wait_for("nickname alice is taken")
    second.wait_for("Choose another nickname:")
    second.type("alice2\r")
    second.wait_for("Welcome to #lobby as alice2")
    first.wait_for("alice2 joined")
    second.type("\x04")  # Ctrl-D
    assert second.exit_code() == 0


def test_unreachable_server_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    terminal = Terminal([*client_command(), "bob", "--port", str(port)], client_env(tmp_path))
    try:
        assert terminal.exit_code() == 1
        shown = [line for line in terminal.text.splitlines() if line.strip()]
        assert len(shown) == 1
        assert re.match(rf"chat-client: cannot connect to 127\.0\.0\.1:{port}: ", shown[0])
    finally:
        terminal.kill()


def test_a_silent_server_is_explained_not_a_blank_screen(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never writes
        port = silent.getsockname()[1]
        terminal = Terminal(
            [*client_command(), "bob", "--port", str(port), "--timeout", "0.5"],
            client_env(tmp_path),
        )
        try:
            terminal.wait_for(
                rf"chat-client: connected to 127\.0\.0\.1:{port}, waiting for the server's greeting"
            )
            assert terminal.exit_code() == 1
            assert (
                f"chat-client: 127.0.0.1:{port} accepted the connection but sent no greeting"
                " within 0.5 s (is it a chat server?)" in terminal.text.replace("\n", "")
            )  # the terminal wrapped it at 80 columns
        finally:
            terminal.kill()


# --- piped mode ---------------------------------------------------------------------------


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    with ChatServer(ServerConfig(port=0)) as server:
        yield server


def run_piped(port: int, nick: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*client_command(), nick, "--port", str(port)],
        input=text,
        capture_output=True,
        text=True,
        timeout=WAIT_S * 3,
        env=client_env(tmp_path),
        check=False,
    )


def test_piped_lines_are_delivered_then_exit_0(chat_server: ChatServer, tmp_path: Path) -> None:
    alice = JsonPeer(chat_server.address, "alice")
    result = run_piped(chat_server.address[1], "bob", "a\nb\n/me waves\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert alice.expect_type("message")["text"] == "a"
    assert alice.expect_type("message")["text"] == "b"
    assert alice.expect_type("action")["text"] == "waves"
    leave = alice.expect_type("leave")
    assert (leave["nick"], leave["reason"]) == ("bob", "quit")
    assert "\x1b" not in result.stdout  # plain text for scripts


@pytest.mark.stress  # paced: 30 lines at the flood limit take seconds by design
@pytest.mark.timeout(120)
def test_piped_burst_is_paced_under_the_flood_limit(
    chat_server: ChatServer, tmp_path: Path
) -> None:
    alice = JsonPeer(chat_server.address, "alice")
    lines = [f"line {n}" for n in range(30)]  # more than the server's burst of 20
    result = run_piped(chat_server.address[1], "bob", "\n".join(lines) + "\n", tmp_path)
    assert result.returncode == 0, result.stderr
    assert [alice.expect_type("message")["text"] for _ in lines] == lines
    assert alice.expect_type("leave")["reason"] == "quit"


def test_piped_with_a_taken_nick_fails_clearly(chat_server: ChatServer, tmp_path: Path) -> None:
    holder = JsonPeer(chat_server.address, "bob")
    result = run_piped(chat_server.address[1], "bob", "hi\n", tmp_path)
    holder.close()
    assert result.returncode == 1
    assert result.stderr == "chat-client: the server refused 'bob': nickname bob is taken\n"


def test_sigterm_leaves_cleanly(
    server_port: int, terminals: list[Terminal], tmp_path: Path
) -> None:
    bob = JsonPeer(("127.0.0.1", server_port), "bob")
    alice = start_client(terminals, tmp_path, "alice", server_port)
    alice.wait_for(r"│ connected │ alice │ #lobby \(2 here\)")
    alice.type("half-typed")
    alice.child.kill(signal.SIGTERM)
    assert alice.exit_code() == 0
    leave = bob.expect_type("leave")
    assert (leave["nick"], leave["reason"]) == ("alice", "quit")


def test_typing_survives_incoming_lines_and_a_mention_rings(
    server_port: int, terminals: list[Terminal], tmp_path: Path
) -> None:
    bob = JsonPeer(("127.0.0.1", server_port), "bob")
    alice = start_client(terminals, tmp_path, "alice", server_port)
    alice.wait_for(r"│ connected │ alice │ #lobby \(2 here\)")
    alice.type("half-typed reply")
    alice.wait_for(r"\[#lobby\] half-typed reply")
    assert alice.screen.bells == 0
    bob.send_json({"type": "message", "text": "Alice: are you there?"})
    bob.send_json({"type": "message", "text": "just chatting"})
    alice.wait_for(
        r"<bob> Alice: are you there\?\n.*<bob> just chatting\n\[#lobby\] half-typed reply\n"
    )
    assert alice.screen.bells == 1
    row = next(y for y, line in enumerate(alice.screen.display) if "are you there" in line)
    column = alice.screen.display[row].index("are you there")
    assert alice.screen.buffer[row][column].reverse  # highlighted
    alice.type(" yes\r")
    assert bob.expect_type("message")["text"] == "half-typed reply yes"
