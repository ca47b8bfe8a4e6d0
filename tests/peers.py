"""Test peers: real sockets that speak the wire protocols the way nc or a program would."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

TIMEOUT_S = 5.0


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    """Polls a server-side condition that has no event to wait on (e.g. a freed slot)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition never became true")
        time.sleep(0.005)


class Peer:
    """A raw line-oriented client on a real socket; every read is bounded by a timeout."""

    def __init__(
        self, address: tuple[str, int], timeout: float = TIMEOUT_S, tls: Any = None
    ) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        if tls is not None:  # an ssl.SSLContext: speak TLS to a --tls-port (tests/test_tls.py)
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.timeout = timeout
        self._buffer = b""
        self.eof = False

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self, timeout: float | None = None) -> str:
        """The next line, without its newline; raises TimeoutError or EOFError."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line; have {self._buffer!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.eof = True
                raise EOFError(f"connection closed; have {self._buffer!r}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8")

    def expect(self, prefix: str, timeout: float | None = None) -> str:
        """Reads lines until one starts with `prefix`; returns it."""
        seen = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                line = self.line(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise TimeoutError(f"no line starting {prefix!r}; saw {seen!r}") from None
            if line.startswith(prefix):
                return line
            seen.append(line)

    def until_closed(self, timeout: float | None = None) -> list[str]:
        """All lines up to the server closing the connection; then closes ours, as nc does."""
        lines = []
        while True:
            try:
                lines.append(self.line(timeout))
            except EOFError:
                self.close()
                return lines

    def close(self) -> None:
        self.sock.close()


class TextPeer(Peer):
    """A person on nc: reads the greeting, picks a nickname."""

    def __init__(self, address: tuple[str, int], nick: str | None = None, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.greeting = [self.line(), self.line()]
        self.nick = nick
        if nick is not None:
            self.send(f"{nick}\n")
            self.welcome = self.expect("* Hello ")
            self.expect(f"*** {nick} joined")


class JsonPeer(Peer):
    """A program speaking JSON Lines."""

    def __init__(self, address: tuple[str, int], nick: str | None = None, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.nick = nick
        if nick is not None:
            self.send_json({"type": "hello", "version": 1, "nick": nick})
            self.welcome = self.expect_type("welcome")
            self.expect_type("join")

    def send_json(self, obj: dict[str, Any]) -> None:
        self.send(json.dumps(obj) + "\n")

    def event(self, timeout: float | None = None) -> dict[str, Any]:
        """The next JSON object, skipping the text greeting sent before the mode was known."""
        while True:
            line = self.line(timeout)
            if line.startswith("{"):
                return json.loads(line)  # type: ignore[no-any-return]

    def expect_type(self, kind: str, timeout: float | None = None) -> dict[str, Any]:
        seen = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            event = self.event(max(0.01, deadline - time.monotonic()))
            if event["type"] == kind:
                return event
            seen.append(event)

    def sync(self, token: Any = "sync") -> list[dict[str, Any]]:
        """Sends a ping and returns the events that arrived before its pong."""
        self.send_json({"type": "ping", "token": token})
        events = []
        while (event := self.event())["type"] != "pong" or event["token"] != token:
            events.append(event)
        return events


class IrcPeer(Peer):
    """An IRC client on the IRC port: CRLF lines, parsed with chat.wire.irc."""

    def __init__(self, address: tuple[str, int], nick: str | None = None, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.nick = nick
        self._syncs = 0
        if nick is not None:
            self.register(nick)

    def register(self, nick: str, user: str = "user") -> list[Any]:
        """NICK + USER; returns the messages up to the end of the MOTD (376 or 422)."""
        self.nick = nick
        self.send(f"NICK {nick}\r\nUSER {user} 0 * :Real Name\r\n")
        seen = [self.expect_cmd("001")]
        while seen[-1].command not in ("376", "422"):
            seen.append(self.msg())
        return seen

    def register_for_history(self, nick: str) -> list[Any]:
        """Registers as a client of IRCv3 chathistory does: the capabilities first (batch,
        server-time, message-tags, draft/chathistory), then NICK + USER (`register`)."""
        self.send_line("CAP REQ :batch server-time message-tags draft/chathistory")
        self.expect_cmd("CAP")
        self.send_line("CAP END")
        return self.register(nick)

    def send_line(self, line: str) -> None:
        self.send(line + "\r\n")

    def msg(self, timeout: float | None = None) -> Any:
        from chat.wire.irc import parse

        while True:
            line = self.line(timeout)
            assert line.endswith("\r"), f"not CRLF: {line!r}"
            message = parse(line[:-1])
            if message is not None:
                return message

    def expect_cmd(self, command: str, timeout: float | None = None) -> Any:
        seen = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                message = self.msg(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise TimeoutError(f"no {command}; saw {seen!r}") from None
            if message.command == command:
                return message
            seen.append(message)

    def sync(self) -> list[Any]:
        """PING a fresh token; returns what arrived before its PONG (a delivery barrier)."""
        self._syncs += 1
        token = f"sync{self._syncs}"
        self.send_line(f"PING {token}")
        seen = []
        while True:
            message = self.msg()
            if message.command == "PONG" and message.params[-1] == token:
                return seen
            seen.append(message)


class Recording(Peer):
    """Keeps every line a peer reads in `received` (newline removed, IRC's "\\r" kept), so a
    test can check every byte a client was sent. Mix in first: `class R(Recording, IrcPeer)`."""

    received: list[str]

    def line(self, timeout: float | None = None) -> str:
        line = super().line(timeout)
        self.__dict__.setdefault("received", []).append(line)
        return line


class RecordingTextPeer(Recording, TextPeer):
    def sync(self) -> list[str]:
        """Asks for `/users`; returns the lines that arrived before its answer (a delivery
        barrier: the reply is queued behind everything the hub gave this client before)."""
        self.send("/users\n")
        seen = []
        while not (line := self.line()).startswith("*** Online ("):
            seen.append(line)
        return seen


class RecordingJsonPeer(Recording, JsonPeer):
    pass


class RecordingIrcPeer(Recording, IrcPeer):
    pass


class QuietMember:
    """A hub member that takes every event and shows nothing: a local user for in-process
    benchmarks and tests that need one without a socket (it is real: the hub treats it as any
    member; it only discards what it is given)."""

    def deliver(self, event: Any, cache: Any = None) -> bool:
        return True

    def flush(self) -> None:
        pass

    def drop(self, reason: str) -> None:
        pass
