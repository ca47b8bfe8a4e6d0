"""The client's side of the JSON Lines protocol: framing, its rules, its error codes. PURE.

Encoding a message, splitting bytes into lines, and a copy of the few rules the client needs
from docs/protocol.md, so the client stays a separate program that speaks the wire protocol and
imports nothing from the server package (tests/test_client_limits.py keeps the copies honest).
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1

# Copies of the server's rules (docs/protocol.md, "Limits and rules"; the server's
# chat/protocol.py). The client imports nothing from the server package, so
# tests/test_client_limits.py checks every copy here against the server's own.
#
# The server drops a line longer than this many bytes (newline not counted): a long message is
# split into several that fit (commands.split_text) instead of being lost.
MAX_LINE_BYTES = 4096
# A nickname: 1-16 of these characters (IRC's rule), not starting with a digit or "-". The client
# shortens alternate nicknames to fit and finds mentions of a nick as a whole word with them.
NICK_MAX_CHARS = 16
NICK_CHARS = r"A-Za-z0-9\[\]\\^_`{|}-"  # a regex character class body
NICK_RULE = "1-16 letters, digits or _-[]\\^{}|` not starting with a digit or -"
ROOM_PREFIX = "#"  # every room name starts with it; `/join rust` means #rust
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(name: str) -> str:
    """The form in which the server compares nicknames and room names: only ASCII letters fold
    (`#Café` is `#café`, but `#É` and `#é` are two rooms), so `str.lower()` would merge names
    the server keeps apart."""
    return name.lower() if name.isascii() else name.translate(_ASCII_FOLD)


# The server's own lines are JSON objects holding at most a 4 KiB text plus escaping (up to six
# bytes per character for `\\u00XX`) and a user list; 1 MiB is far above anything legitimate and
# still bounds the memory a broken or hostile server can make us hold.
MAX_RECEIVED_LINE_BYTES = 1 << 20


class LineTooLong(Exception):
    """The server sent more than MAX_RECEIVED_LINE_BYTES without a newline."""


def encode(message: dict[str, Any]) -> bytes:
    """One JSON Lines line (compact, UTF-8, newline-terminated)."""
    return (json.dumps(message, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def decode(line: bytes) -> dict[str, Any] | None:
    """The JSON object on a line, or None if the line is not one (the text greeting, noise)."""
    try:
        value = json.loads(line.decode("utf-8", "replace"))
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return value
    return None


class LineBuffer:
    """Collects received bytes and hands back complete lines (without `\\n` or `\\r\\n`)."""

    def __init__(self, max_line_bytes: int = MAX_RECEIVED_LINE_BYTES) -> None:
        self._pending = bytearray()
        self._max = max_line_bytes

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the lines they complete.

        Raises:
            LineTooLong: the unfinished line exceeds the limit.
        """
        self._pending += data
        *lines, rest = self._pending.split(b"\n")
        if len(rest) > self._max:
            raise LineTooLong(f"line longer than {self._max} bytes")
        self._pending = bytearray(rest)
        return [bytes(line[:-1] if line.endswith(b"\r") else line) for line in lines]


# What an error code means, for a server that sent a code without a message (ours always sends
# both; docs/protocol.md lists the codes). A person reads sentences, not identifiers.
ERROR_SENTENCES: dict[str, str] = {
    "nick_invalid": "that nickname is not valid",
    "nick_taken": "that nickname is taken",
    "no_such_nick": "no such nick",
    "bad_request": "the server did not understand a request",
    "not_registered": "not registered yet",
    "line_too_long": "line too long, not sent",
    "flood": "slow down: too many lines at once",
    "server_full": "the server is full, try again later",
    "too_many_connections": "too many connections from this address",
    "no_such_room": "no such room",
    "bad_room_name": "that is not a valid room name",
    "not_in_room": "you are not in that room",
    "user_not_in_room": "they are not in that room",
    "bad_key": "that room needs a key: /join #room KEY",
    "not_operator": "only the room's operators can do that",
    "bad_password": "wrong password",
    "timeout": "timed out",
}


def error_text(code: object, message: object) -> str:
    """The sentence to show for an error: the server's message, else the meaning of its code.

    A code is never shown bare: an unknown one without a message becomes a detail of a sentence.
    Not sanitised: the caller shows it (render.sanitize) or writes it to stderr (sanitised too).
    """
    if isinstance(message, str) and message.strip():
        return message.strip()
    if not isinstance(code, str) or not code:
        return "the server refused that"
    known = ERROR_SENTENCES.get(code)
    return known if known is not None else f"the server refused that ({code})"
