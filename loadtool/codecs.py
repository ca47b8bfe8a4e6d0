"""The bots' wire formats: how a bot speaks JSON Lines, text or IRC, and reads what it gets.

Pure: bytes in, (kind, value) out; no sockets, no clocks. One codec per protocol, chosen by name
from `CODECS`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

_JSON_LOAD_RE = re.compile(rb'"text": "load (\S+) #(\d+) t=(\d+)"')
_TEXT_LOAD_RE = re.compile(rb"<[^>]*> load (\S+) #(\d+) t=(\d+)$")
_TEXT_LEAVE_RE = re.compile(rb"\*\*\* (\S+) left \((.*)\)$")
_TEXT_JOIN_RE = re.compile(rb"\*\*\* (\S+) joined \(")
_TEXT_WELCOME_RE = re.compile(rb"\* Hello (\S+)\. ")
# The reply to the text barrier, /who: "*** Online (N): ..." (everyone) from servers before the
# /users command existed, "*** Users in #room (N): ..." (the room's members) from later ones.
_TEXT_BARRIER_REPLIES = (b"*** Online (", b"*** Users in ")
_IRC_LOAD_RE = re.compile(rb"#lobby :load (\S+) #(\d+) t=(\d+)$")


class Codec(Protocol):
    """How a bot speaks one wire format; see JsonCodec and TextCodec."""

    name: str
    # Found in every delivery line of a load message and in no other line the server sends.
    load_mark: bytes

    def hello(self, nick: str) -> bytes: ...
    def message(self, text: str) -> bytes: ...
    def barrier(self) -> bytes: ...
    def quit(self) -> bytes: ...
    def classify(self, line: bytes) -> tuple[int, Any]: ...


# What a received line means to a bot.
LOAD, WELCOME, NICK_TAKEN, BARRIER, JOIN, LEAVE, FLOOD_WARN, FLOOD_KICK, REFUSED, OTHER = range(10)
REPLY = 10  # the protocol wants an answer: send the bytes given (IRC: JOIN once registered)


def _refusal(line: bytes) -> str | None:
    """The server's admission refusal, sent in text before it knows the client's mode."""
    if line.startswith((b"! server full", b"! too many connections")):
        return "refused: " + line[2:].decode(errors="replace").split(",")[0]
    return None


class JsonCodec:
    name = "json"
    load_mark = b'"text": "load '

    @staticmethod
    def hello(nick: str) -> bytes:
        return b'{"type": "hello", "version": 1, "nick": "%s"}\n' % nick.encode()

    @staticmethod
    def message(text: str) -> bytes:
        return b'{"type": "message", "text": "%s"}\n' % text.encode()

    @staticmethod
    def barrier() -> bytes:
        return b'{"type": "ping"}\n'

    @staticmethod
    def quit() -> bytes:
        return b'{"type": "quit", "reason": "load done"}\n'

    @staticmethod
    def classify(line: bytes) -> tuple[int, Any]:
        if line.startswith(b'{"type": "message"'):
            match = _JSON_LOAD_RE.search(line)
            if match is not None:
                return LOAD, match.groups()
        if not line.startswith(b"{"):
            refusal = _refusal(line)  # or the text greeting sent before the mode is known
            return (OTHER, None) if refusal is None else (REFUSED, refusal)
        try:
            obj = json.loads(line)
        except ValueError:
            return OTHER, None
        kind = obj.get("type")
        if kind == "pong":
            return BARRIER, None
        if kind == "welcome":
            return WELCOME, (obj.get("nick"), obj.get("users", []))
        if kind == "join":
            return JOIN, obj.get("nick")
        if kind == "leave":
            return LEAVE, (obj.get("nick"), obj.get("reason"))
        if kind == "error":
            code, message = obj.get("code"), obj.get("message", "")
            if code == "nick_taken":
                return NICK_TAKEN, None
            if code == "flood":
                return (FLOOD_KICK if "kicked" in message else FLOOD_WARN), None
        return OTHER, None


class TextCodec:
    name = "text"
    load_mark = b"> load "

    @staticmethod
    def hello(nick: str) -> bytes:
        return nick.encode() + b"\n"

    @staticmethod
    def message(text: str) -> bytes:
        return text.encode() + b"\n"

    @staticmethod
    def barrier() -> bytes:
        return b"/who\n"

    @staticmethod
    def quit() -> bytes:
        return b"/quit load done\n"

    @staticmethod
    def classify(line: bytes) -> tuple[int, Any]:
        line = line.rstrip(b"\r")
        if line.startswith(b"<"):
            match = _TEXT_LOAD_RE.match(line)
            if match is not None:
                return LOAD, match.groups()
            return OTHER, None
        if line.startswith(_TEXT_BARRIER_REPLIES):
            return BARRIER, None
        if line.startswith(b"*** "):
            if (match := _TEXT_LEAVE_RE.match(line)) is not None:
                reason = match.group(2).decode(errors="replace").split(": ")[0]
                return LEAVE, (match.group(1).decode(), reason)
            if (match := _TEXT_JOIN_RE.match(line)) is not None:
                return JOIN, match.group(1).decode()
            return OTHER, None
        if line.startswith(b"* Hello "):
            match = _TEXT_WELCOME_RE.match(line)
            users = line.partition(b"Online: ")[2].partition(b". Type")[0].decode().split(", ")
            return WELCOME, (match.group(1).decode() if match else None, users)
        if line.startswith(b"! "):
            if (refusal := _refusal(line)) is not None:
                return REFUSED, refusal
            if line.endswith(b"is taken"):
                return NICK_TAKEN, None
            if line == b"! kicked for flooding":
                return FLOOD_KICK, None
            if line.startswith(b"! slow down"):
                return FLOOD_WARN, None
        return OTHER, None


class IrcCodec:
    """An IRC bot, for the server's --irc-port (and any IRC server with a #lobby channel)."""

    name = "irc"
    load_mark = b" :load "

    @staticmethod
    def hello(nick: str) -> bytes:
        # JOIN waits for 001: a server may finish registration later than it reads USER.
        return b"NICK %s\r\nUSER %s 0 * :chat-load bot\r\n" % (nick.encode(), nick.encode())

    @staticmethod
    def message(text: str) -> bytes:
        return b"PRIVMSG #lobby :%s\r\n" % text.encode()

    @staticmethod
    def barrier() -> bytes:
        return b"PING :chat-load\r\n"

    @staticmethod
    def quit() -> bytes:
        return b"QUIT :load done\r\n"

    @staticmethod
    def classify(line: bytes) -> tuple[int, Any]:
        line = line.rstrip(b"\r")
        if line.startswith(b":"):
            source, _, rest = line[1:].partition(b" ")
            command, _, params = rest.partition(b" ")
            nick = source.partition(b"!")[0].decode(errors="replace")
            if command == b"PRIVMSG":
                match = _IRC_LOAD_RE.match(params)
                return (LOAD, match.groups()) if match is not None else (OTHER, None)
            if command == b"PONG":
                return BARRIER, None
            if command == b"JOIN":
                return JOIN, nick
            if command in (b"QUIT", b"PART"):
                reason = params.partition(b" :")[2].decode(errors="replace") or "quit"
                return LEAVE, (nick, "quit" if reason.startswith("Quit") else reason.lower())
            if command == b"353":  # the names of #lobby: this bot is in
                target = params.split(b" ", 1)[0].decode(errors="replace")
                names = params.partition(b" :")[2].decode(errors="replace").split()
                return WELCOME, (target, [n.lstrip("@+") for n in names])
            if command == b"001":
                return REPLY, b"JOIN #lobby\r\n"
            if command == b"433":
                return NICK_TAKEN, None
            if command == b"NOTICE" and b"slow down" in params:
                return FLOOD_WARN, None
            return OTHER, None
        if line.startswith(b"ERROR"):
            if b"flood" in line:
                return FLOOD_KICK, None
            if b"server full" in line or b"too many connections" in line:
                return REFUSED, "refused: " + line.partition(b":")[2].decode(errors="replace")
        return OTHER, None


CODECS: dict[str, Codec] = {"json": JsonCodec(), "text": TextCodec(), "irc": IrcCodec()}
