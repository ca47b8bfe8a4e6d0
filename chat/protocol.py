"""Pure protocol pieces shared by every wire format: limits, line framing, text hygiene, nicknames.

Nothing here touches a socket, a thread or a clock, so every rule can be tested with plain calls
(feed bytes whole, one byte at a time, with trailing garbage) and reused by any front-end.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from bisect import insort
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar

# A line may carry 2 KiB of text in any script (up to 4 bytes a character in UTF-8 would be 8 KiB
# in the worst case, but 2 KiB of typical text plus JSON escaping fits well in 4 KiB).
MAX_LINE_BYTES = 4096
# Past this many bytes without a newline the peer is not a chat client: drop it. Until then an
# over-long line is discarded piece by piece, so memory per connection stays at MAX_LINE_BYTES.
MAX_DISCARD_BYTES = 64 * 1024

NICK_MAX_CHARS = 16
# The IRC nickname rule (RFC 2812 section 2.3.1), so that every front-end shares one namespace.
_NICK_RE = re.compile(r"[A-Za-z\[\]\\^_`{|}][A-Za-z0-9\[\]\\^_`{|}-]*\Z")
NICK_RULE = "1-16 letters, digits or _-[]\\^{}|` not starting with a digit or -"


class ProtocolError(Exception):
    """A peer broke a rule; `code` is the machine-readable error code of docs/protocol.md."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LineTooLong(ProtocolError):
    """One over-long line was dropped; the connection goes on."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES) -> None:
        super().__init__("line_too_long", f"line too long (max {max_bytes} bytes), dropped")


class EndlessLine(ProtocolError):
    """No newline within MAX_DISCARD_BYTES: the peer is not a chat client; the connection ends."""

    def __init__(self) -> None:
        super().__init__("line_too_long", "line too long, no newline in sight")


@dataclass(frozen=True)
class Line:
    """One complete line from the peer, or the marker of one that was too long and dropped."""

    data: bytes
    too_long: bool = False


class LineDecoder:
    """Splits a byte stream into lines of at most `max_line` bytes.

    `feed()` returns the complete lines, without the `\\n` or `\\r\\n`. An over-long line comes
    back once as `Line(b"", too_long=True)` and the rest of it, up to its newline, is skipped.
    A line longer than `max_discard` raises `EndlessLine`: the caller disconnects.
    """

    __slots__ = ("_buffer", "_discarded", "_discarding", "_max_discard", "_max_line")  # #14

    def __init__(self, max_line: int = MAX_LINE_BYTES, max_discard: int = MAX_DISCARD_BYTES):
        self._max_line = max_line
        self._max_discard = max_discard
        # The start of an unfinished line, made by its first piece: most reads end with whole
        # lines, and an idle client keeps no buffer (#14, memory per client).
        self._buffer: bytearray | None = None
        self._discarding = False
        self._discarded = 0

    def feed(self, data: bytes) -> list[Line]:
        lines: list[Line] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                if start < len(data):
                    self._keep(data[start:], lines)
                return lines
            line = data[start:end]
            start = end + 1
            if self._discarding:
                self._discarding = False
                self._discarded = 0
                continue
            if self._buffer is not None:
                self._buffer += line
                line, self._buffer = bytes(self._buffer), None
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self._max_line:
                lines.append(Line(b"", too_long=True))
            else:
                lines.append(Line(line))

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held in memory."""
        return 0 if self._buffer is None else len(self._buffer)

    def _keep(self, tail: bytes, lines: list[Line]) -> None:
        if self._discarding:
            self._discarded += len(tail)
        elif (kept := self.pending + len(tail)) > self._max_line + 1:  # +1: a '\r' may follow
            self._discarded = kept
            self._buffer = None
            self._discarding = True
            lines.append(Line(b"", too_long=True))
        elif self._buffer is None:
            self._buffer = bytearray(tail)
        else:
            self._buffer += tail
        if self._discarding and self._discarded > self._max_discard:
            raise EndlessLine


# Terminal escape sequences are removed whole, so that no "[31m" debris is left behind:
# CSI (ESC [ ... final), OSC / DCS / APC / PM / SOS strings (ended by BEL or ST), two-byte escapes,
# and their 8-bit C1 forms.
_ESCAPE_SEQUENCE_RE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -~]?"
)
# What remains that a terminal or a bidi-aware renderer would act on: C0 (but tab), DEL, C1,
# the Unicode bidi embedding / override / isolate / mark characters that can reorder a line, and
# the line and paragraph separators U+2028/U+2029, which GUI clients (HexChat's Pango, a browser)
# draw as a line break: a forged second line, like NEL (U+0085, a C1).
_CONTROL_RE = re.compile(
    r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


# A lone surrogate (JSON's "\ud800") is no character: it cannot be encoded as UTF-8, so every
# text and IRC member's encoder would fail on it. It becomes U+FFFD, as invalid UTF-8 does.
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")


# Anything clean_text would change (ESC and the C1 introducers are controls too). Most lines hold
# none of it, and one search is far cheaper than the three substitutions: every message passes
# here twice (its dialect, then the hub, whichever front-end sent it).
_NEEDS_CLEANING_RE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def clean_text(raw: str) -> str:
    """Returns `raw` safe to show on any terminal: no escape sequences, controls or bidi tricks,
    and encodable as UTF-8."""
    if _NEEDS_CLEANING_RE.search(raw) is None:
        return raw
    text = _ESCAPE_SEQUENCE_RE.sub("", raw)
    text = _CONTROL_RE.sub("", text)
    text = _SURROGATE_RE.sub("\ufffd", text)
    return text.replace("\t", " ")


def decode_text(data: bytes) -> str:
    """Bytes from the wire as clean text; invalid UTF-8 becomes U+FFFD instead of an error."""
    return clean_text(data.decode("utf-8", errors="replace"))


def nick_error(nick: str) -> str | None:
    """Why `nick` is not a valid nickname, or None when it is."""
    if not nick:
        return "a nickname cannot be empty"
    if len(nick) > NICK_MAX_CHARS:
        return f"nickname too long (max {NICK_MAX_CHARS})"
    if not _NICK_RE.match(nick):
        return f"invalid nickname {nick!r}: use {NICK_RULE}"
    return None


# Case folding lives here and only here: every comparison of names goes through these two.
# CASEMAPPING=ascii (IRC): only A-Z fold, so "É" and "é" stay two rooms, as IRC clients expect.
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def nick_key(nick: str) -> str:
    """The form in which nicknames are compared: ASCII case does not make a new name."""
    # str.lower() folds ASCII exactly like the table and is ten times faster; it runs on every
    # delivery, so it takes every name it can (isascii() is a flag, not a scan).
    return nick.lower() if nick.isascii() else nick.translate(_ASCII_FOLD)


# At most this many items are put in order one by one (`in_order`); more are sorted.
SHALLOW_SORT_MAX = 256

_T = TypeVar("_T")


def in_order(items: Collection[_T], key: Callable[[_T], Any]) -> list[_T]:
    """`sorted(items, key=key)`, without CPython's list sort for up to SHALLOW_SORT_MAX items.

    Why (#14, memory per client): the list sort keeps a 4 KiB scratch array on the C stack of
    the thread that sorts, even for an empty list, and a thread keeps every stack page it ever
    touched. One `sorted()` in a reader thread (the names in a room's welcome) made that
    reader's stack 12 KiB instead of 8 for as long as its client stayed: an idle client in a
    room cost 20 KiB instead of 16. `bisect.insort` keeps a short list in order as it is
    built, on a shallow stack; a long one (a room of thousands) is sorted, as inserting one by
    one would cost more than the page.
    """
    if len(items) > SHALLOW_SORT_MAX:
        return sorted(items, key=key)
    keyed: list[tuple[Any, int, _T]] = []  # (the count: equal keys keep their order)
    for count, item in enumerate(items):
        insort(keyed, (key(item), count, item))
    return [item for _, _, item in keyed]


def nick_mask(mask: str) -> Callable[[str], bool]:
    """Whether a nickname matches an IRC mask (WHO): "*" stands for any characters, "?" for
    one, case as `nick_key` folds it; "0" alone is everyone (RFC 1459). Every other character,
    the "[]" a nick may hold included, stands for itself."""
    if mask == "0":
        return lambda nick: True
    # fnmatch's translation matches each part between stars at its first place with atomic
    # groups: linear, where a naive ".*a.*a.*b" backtracks (0.25 ms a nick, seconds for a WHO
    # of a large server). "[[]" is its way of saying a literal "[".
    match = re.compile(fnmatch.translate(nick_key(mask).replace("[", "[[]"))).match
    return lambda nick: match(nick_key(nick)) is not None


# Room names: "#" and up to 49 more characters (IRC's CHANNELLEN=50, CHANTYPES=#), none of
# which may be a space, a comma (IRC's list separator), a colon or a control character.
ROOM_MAX_CHARS = 50
ROOM_PREFIX = "#"
# Topics as long as common IRC servers allow (TOPICLEN=390): a topic fits one IRC line with room
# to spare, and a list of every room's topic stays a few hundred KiB at most.
TOPIC_MAX_CHARS = 390
# Room keys (passwords): IRC's usual KEYLEN; one word of printable characters.
KEY_MAX_CHARS = 23
# An IRC user's real name (USER's last parameter, shown by WHOIS and WHO), cut to this: one
# line's worth in any client, and the hub keeps one per user who gave one.
REALNAME_MAX_CHARS = 50
# An away message (IRC's AWAY, AWAYLEN): a sentence, not a letter.
AWAY_MAX_CHARS = 200
# Unicode categories never allowed in a name: controls (Cc), format characters such as the
# bidi overrides that make "#\u202egnp.exe" display as "#exe.png" (Cf), surrogates,
# private use and unassigned code points (Cs, Co, Cn), and every kind of space (Zs, Zl, Zp).
_BAD_NAME_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


def _bad_name_char(name: str) -> str | None:
    for char in name:
        if unicodedata.category(char) in _BAD_NAME_CATEGORIES or char in ",:":
            return char
    return None


def room_error(name: str) -> str | None:
    """Why `name` is not a valid room name, or None when it is."""
    if not name.startswith(ROOM_PREFIX) or len(name) < 2:
        return f"a room name is {ROOM_PREFIX} and a name, like #lobby: not {name!r}"
    if len(name) > ROOM_MAX_CHARS:
        return f"room name too long (max {ROOM_MAX_CHARS})"
    bad = _bad_name_char(name)
    if bad is not None:
        return (
            f"invalid room name {name!r}: no spaces, commas, colons, control or "
            f"direction characters (found U+{ord(bad):04X})"
        )
    return None


def room_key(name: str) -> str:
    """The form in which room names are compared (ASCII case-insensitive, like nicknames)."""
    return name.lower() if name.isascii() else name.translate(_ASCII_FOLD)


def key_error(key: str) -> str | None:
    """Why `key` cannot be a room key, or None when it can."""
    if not key:
        return "a key cannot be empty"
    if len(key) > KEY_MAX_CHARS:
        return f"key too long (max {KEY_MAX_CHARS})"
    if _bad_name_char(key) is not None or clean_text(key) != key:
        return "a key is one word: no spaces, commas, colons or control characters"
    return None


def clean_topic(raw: str) -> str:
    """A topic as anyone may see it: clean text, one line, at most TOPIC_MAX_CHARS."""
    return clean_text(raw).strip()[:TOPIC_MAX_CHARS]
