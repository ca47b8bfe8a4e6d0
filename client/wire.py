"""The client's side of the JSON Lines framing: encode a message, split bytes into lines. PURE.

A copy of the few rules the client needs from docs/protocol.md, so the client stays a separate
program that speaks the wire protocol and imports nothing from the server package.
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1

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
