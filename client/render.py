"""Turning server events into lines for the screen: sanitising, time stamps, nick colours. PURE.

Nothing here touches a terminal, a socket or a clock: a received event (a JSON object from the
server, already decoded) goes in, a `Line` of prompt-toolkit style fragments comes out. The UI
prints those fragments; the tests read them.

Safety: every string taken from the network goes through `sanitize()` before it becomes a
fragment, even though the server is supposed to have cleaned it already. prompt-toolkit only
neutralises ESC; BEL, CR, C1 controls (`\\x9b` is a one-byte CSI on some terminals), bidi
overrides and lone surrogates (which would crash the encoder) are our job.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prompt_toolkit.utils import get_cwidth

from client.wire import NICK_CHARS, fold
from client.wire import error_text as error_text  # re-exported: errors become sentences

Fragment = tuple[str, str]

# Control characters are made visible, not silently dropped: a C0 control becomes its Unicode
# "control picture" (ESC -> U+241B, BEL -> U+2407, CR -> U+240D, LF -> U+240A), so a peer (or a
# buggy server) trying `\x1b[2J` shows up as harmless text `␛[2J` and nobody can fake a second
# line with an embedded newline. Anything without a picture becomes U+FFFD.
_REPLACEMENT = "\ufffd"
_SANITIZE_TABLE: dict[int, str] = {code: chr(0x2400 + code) for code in range(0x20)}
_SANITIZE_TABLE[0x09] = " "  # a tab is just a space, as the server does
_SANITIZE_TABLE[0x7F] = "\u2421"  # DEL
_SANITIZE_TABLE.update(dict.fromkeys(range(0x80, 0xA0), _REPLACEMENT))  # C1 controls
# Bidi embeddings/overrides/isolates can reorder what follows them on the screen (including the
# next nick); line and paragraph separators can break a line in some terminals.
_SANITIZE_TABLE.update(dict.fromkeys(range(0x202A, 0x202F), _REPLACEMENT))
_SANITIZE_TABLE.update(dict.fromkeys(range(0x2066, 0x206A), _REPLACEMENT))
_SANITIZE_TABLE.update({0x2028: _REPLACEMENT, 0x2029: _REPLACEMENT})
# Lone surrogates can arrive through JSON ("\ud800") and cannot be encoded for the terminal.
_SANITIZE_TABLE.update(dict.fromkeys(range(0xD800, 0xE000), _REPLACEMENT))


def sanitize(text: str) -> str:
    """Return `text` with every terminal control made visible and harmless.

    Args:
        text: any string received from the network.

    Returns:
        The same text with C0/C1 controls, DEL, bidi controls, line separators and lone
        surrogates replaced by visible characters; printable text (any script) is unchanged.
    """
    return text.translate(_SANITIZE_TABLE)


def _mode_words(event: Mapping[str, Any]) -> str:
    """A room's mode change in words, as text mode tells it (docs/protocol.md): no IRC
    notation, and never a key, even from a server that sent one."""
    args = event.get("args")
    rest = [sanitize(str(a)) for a in args] if isinstance(args, list) else []
    parts: list[str] = []
    sign = "+"
    for letter in _field(event, "modes"):
        if letter in "+-":
            sign = letter
        elif letter == "k":
            if rest:
                rest.pop(0)
            parts.append("set a key on the room" if sign == "+" else "removed the room's key")
        elif letter == "s":
            parts.append("made the room secret" if sign == "+" else "made the room public")
        elif letter == "o":
            nick = rest.pop(0) if rest else "?"
            parts.append(
                f"made {nick} an operator" if sign == "+" else f"took operator from {nick}"
            )
    return ", ".join(parts) or "changed the room"


def _field(event: Mapping[str, Any], name: str) -> str:
    """A display-safe string field of an event ('' when missing; non-strings are shown as JSON)."""
    value = event.get(name, "")
    return sanitize(value if isinstance(value, str) else str(value))


# Stable nick colours: the same nick (ignoring ASCII case, as the server does) always gets the
# same colour, in every run and on every machine, so the hash must not be Python's randomised
# `hash()`. The palette avoids black/white/grey so that it reads on dark and light backgrounds.
NICK_COLOURS: tuple[str, ...] = (
    "ansired",
    "ansigreen",
    "ansiyellow",
    "ansiblue",
    "ansimagenta",
    "ansicyan",
    "ansibrightred",
    "ansibrightgreen",
    "ansibrightyellow",
    "ansibrightblue",
    "ansibrightmagenta",
    "ansibrightcyan",
)


def nick_colour(nick: str) -> str:
    """The colour of a nickname: a pure function of the nick, ignoring ASCII case."""
    digest = zlib.crc32(nick.encode("utf-8", "replace").lower())
    return NICK_COLOURS[digest % len(NICK_COLOURS)]


def nick_style(nick: str) -> str:
    """The prompt-toolkit style string of a nickname."""
    return f"class:nick fg:{nick_colour(nick)}"


def format_time(ts: float) -> str:
    """HH:MM in local time."""
    return time.strftime("%H:%M", time.localtime(ts))


def mentions(text: str, nick: str) -> bool:
    """True if `text` mentions `nick` as a whole word, ignoring case ("alice:", "@alice", ...)."""
    if not nick:
        return False
    # A mention is the nick not glued to more nickname characters.
    pattern = rf"(?<![{NICK_CHARS}]){re.escape(nick)}(?![{NICK_CHARS}])"
    return re.search(pattern, text, re.IGNORECASE) is not None


@dataclass(frozen=True)
class Line:
    """One line for the screen.

    Attributes:
        fragments: prompt-toolkit (style, text) pairs, time stamp first.
        highlight: the line is for me (mentions my nick, or a private message to me): the UI
            rings the bell.
        indent: the column where the text starts (after time and nick); a wrapped line's
            continuation rows start there, as in irssi and weechat.
    """

    fragments: tuple[Fragment, ...]
    highlight: bool = False
    indent: int = len("HH:MM ")

    @property
    def plain(self) -> str:
        """The text as a person reads it, without styles."""
        return "".join(text for _, text in self.fragments)


DIM = "class:dim"
ERROR = "class:error"
HISTORY = "class:history"  # replayed and requested history (#11): dimmed, original times


def _stamp(ts: float) -> Fragment:
    return ("class:time", format_time(ts) + " ")


def info_line(text: str, ts: float, *, style: str = DIM) -> Line:
    """A line of the client's own (connection state, help, usage errors): `-!- text`."""
    return Line((_stamp(ts), (style, "-!- " + sanitize(text))))


def own_message_line(nick: str, text: str, ts: float, *, queued: bool = False) -> Line:
    """The echo of a message I typed (the server does not send `message` back to its sender)."""
    fragments: list[Fragment] = [
        _stamp(ts),
        ("class:own", "<"),
        (nick_style(nick) + " class:own bold", sanitize(nick)),
        ("class:own", "> "),
        ("class:own", sanitize(text)),
    ]
    if queued:
        fragments.append((DIM, "  (queued: not connected)"))
    return Line(tuple(fragments), indent=_width(fragments[:4]))


# Events of a room other than the current one get a `[#room] ` prefix (as in text mode).
_ROOM_PREFIXED = frozenset({"message", "action", "join"})


def render_event(
    event: Mapping[str, Any],
    own_nick: str,
    now: float,
    current_room: str = "",
    *,
    room_before: str = "",
) -> Line | None:
    """Render one event received from the server.

    Args:
        event: a decoded JSON object with a `type`.
        own_nick: my nickname when the event arrived (for mentions and "you").
        now: the time to show when the event has no `ts`.
        current_room: my current room (after the event); events of other rooms are prefixed
            with theirs.
        room_before: my current room before the event: when I was kicked from it or left it,
            the line says where I talk now.

    Returns:
        The line to show, or None for events that are not shown (`pong`, unknown types: the
        protocol may grow).
    """
    line = _render(event, own_nick, now)
    room = event.get("room")
    if (
        line is not None
        and event.get("type") in ("kick", "part")
        and event.get("nick") == own_nick
        and isinstance(room, str)
        and room.lower() == room_before.lower()
    ):
        where = (
            f"now talking in {sanitize(current_room)}"
            if current_room
            else "you are in no room now: /join #room"
        )
        return Line((*line.fragments, (line.fragments[-1][0], f"; {where}")), line.highlight)
    if (
        line is None
        or event.get("type") not in _ROOM_PREFIXED
        or not isinstance(room, str)
        or not current_room
        or fold(room) == fold(current_room)
    ):
        return line
    prefix = ("class:room", f"[{sanitize(room)}] ")
    return Line(
        (line.fragments[0], prefix, *line.fragments[1:]),
        line.highlight,
        line.indent + get_cwidth(prefix[1]),
    )


def _render(event: Mapping[str, Any], own_nick: str, now: float) -> Line | None:
    kind = event.get("type")
    ts_value = event.get("ts")
    ts = float(ts_value) if isinstance(ts_value, (int, float)) else now
    stamp = _stamp(ts)

    def dim(text: str) -> Line:
        return Line((stamp, (DIM, "-!- " + text)))

    if kind == "message":
        sender, text = _field(event, "from"), _field(event, "text")
        highlight = sender != own_nick and mentions(text, own_nick)
        body = "class:mention" if highlight else ""
        opening, closing = ("-", "- ") if event.get("notice") is True else ("<", "> ")
        fragments = (
            stamp,
            (body, opening),
            (nick_style(sender) + (" class:mention" if highlight else ""), sender),
            (body, closing),
            (body, text),
        )
        return Line(fragments, highlight, _width(fragments[:-1]))
    if kind == "action":
        sender, text = _field(event, "from"), _field(event, "text")
        highlight = sender != own_nick and mentions(text, own_nick)
        extra = " class:mention" if highlight else ""
        return Line(
            (
                stamp,
                ("class:action" + extra, " * "),
                (nick_style(sender) + " class:action" + extra, sender),
                ("class:action" + extra, " " + text),
            ),
            highlight,
        )
    if kind == "private":
        sender, to, text = _field(event, "from"), _field(event, "to"), _field(event, "text")
        if sender == own_nick:
            label = f"[private to {to}] "
            highlight = False
        else:
            label = "[private] "
            highlight = True
        if event.get("action") is True:  # an IRC user's /me in private
            return Line(
                (
                    stamp,
                    ("class:private", label + "* "),
                    (nick_style(sender) + " class:private", sender),
                    ("class:private", " " + text),
                ),
                highlight,
            )
        return Line(
            (
                stamp,
                ("class:private", label),
                ("class:private", "<"),
                (nick_style(sender) + " class:private", sender),
                ("class:private", "> "),
                ("class:private", text),
            ),
            highlight,
        )
    if kind == "join":
        return dim(f"{_field(event, 'nick')} joined ({_field(event, 'count')} here)")
    if kind == "leave":
        reason, message = _field(event, "reason"), _field(event, "message")
        why = f"{reason}: {message}" if message else reason
        return dim(f"{_field(event, 'nick')} left ({why}, {_field(event, 'count')} online)")
    if kind == "rename":
        old, new = _field(event, "old"), _field(event, "new")
        if new == own_nick:
            return dim(f"You are now known as {new}")
        return dim(f"{old} is now known as {new}")
    if kind == "users":
        users = event.get("users")
        listed = users if isinstance(users, list) else []
        names = [sanitize(u) for u in listed if isinstance(u, str)]
        room = event.get("room")
        if isinstance(room, str) and room:  # the reply to /who: one room's members
            return dim(f"People in {sanitize(room)} ({len(names)}): {', '.join(names)}")
        return dim(f"Online ({len(names)}): {', '.join(names)}")  # to /users: everyone
    if kind == "welcome":
        users = event.get("users")
        count = len(users) if isinstance(users, list) else 0
        more = event.get("more_users")  # a large room's welcome lists 50 and counts the rest
        count += more if isinstance(more, int) else 0
        return dim(
            f"Welcome to {_field(event, 'room')} as {_field(event, 'nick')} ({count} here)."
            " Type /help for commands."
        )
    if kind == "part":
        message = _field(event, "message")
        if event.get("nick") == own_nick:
            return dim(f"You left {_field(event, 'room')}" + (f" ({message})" if message else ""))
        why = f"{message}, " if message else ""
        left = _field(event, "count")
        return dim(f"{_field(event, 'nick')} left {_field(event, 'room')} ({why}{left} here)")
    if kind == "kick":
        reason = _field(event, "reason")
        why = f" ({reason})" if reason else ""
        if event.get("nick") == own_nick:  # not dimmed: it happened to me
            return Line(
                (
                    stamp,
                    (
                        ERROR,
                        f"-!- You were kicked from {_field(event, 'room')}"
                        f" by {_field(event, 'by')}{why}",
                    ),
                ),
                highlight=True,
            )
        return dim(
            f"{_field(event, 'nick')} was kicked from {_field(event, 'room')} by"
            f" {_field(event, 'by')}{why}"
        )
    if kind == "topic":
        room, topic, by = _field(event, "room"), _field(event, "topic"), _field(event, "by")
        if "id" in event:  # a change, announced to the room
            return dim(
                f"{by} set the topic of {room}: {topic}"
                if topic
                else f"{by} removed the topic of {room}"
            )
        if not topic:
            return dim(f"{room} has no topic")
        return dim(f"Topic of {room}: {topic}" + (f" (set by {by})" if by else ""))
    if kind == "mode":
        return dim(f"{_field(event, 'by')} {_mode_words(event)} ({_field(event, 'room')})")
    if kind == "room":
        users = event.get("users")
        operators = event.get("operators")
        ops = (
            {fold(o) for o in operators if isinstance(o, str)}
            if isinstance(operators, list)
            else set()
        )
        members = [u for u in users if isinstance(u, str)] if isinstance(users, list) else []
        roster = ", ".join(("@" if fold(u) in ops else "") + sanitize(u) for u in members)
        topic = _field(event, "topic")
        return dim(
            f"Now talking in {_field(event, 'room')} ({len(members)}): {roster}"
            + (f". Topic: {topic}" if topic else "")
        )
    if kind == "rooms":
        rooms = event.get("rooms")
        listed = [r for r in rooms if isinstance(r, dict)] if isinstance(rooms, list) else []
        shown = ", ".join(f"{_field(r, 'room')} ({_field(r, 'count')})" for r in listed)
        return dim(f"Rooms ({len(listed)}): {shown}")
    if kind == "away":
        nick, raw = _field(event, "nick"), event.get("text")  # null: back
        text = sanitize(raw) if isinstance(raw, str) else ""
        if fold(nick) == fold(own_nick):
            if not text and event.get("was_away") is False:  # a plain /away, not away before
                return dim("You were not marked as away")
            return dim(f"You are away: {text}" if text else "You are back")
        return dim(f"{nick} is away: {text}" if text else f"{nick} is back")
    if kind == "notice":
        return dim(f"server: {_field(event, 'text')}")
    if kind == "error":
        return Line(
            (stamp, (ERROR, "-!- " + sanitize(error_text(event.get("code"), event.get("message")))))
        )
    return None


def render_history(event: Mapping[str, Any], own_nick: str, now: float) -> list[Line]:
    """A `history` answer (#11): a divider, each message dimmed with its original time, and a
    closing divider; nothing for an empty replay. Messages of the past never ring the bell."""
    messages = event.get("messages")
    listed = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    where = _field(event, "room") or _field(event, "with")
    replay = event.get("replay") is True
    if not listed:
        return [] if replay else [info_line(f"no more history in {where}", now)]
    first_ts = listed[0].get("ts")
    since = ""
    if isinstance(first_ts, (int, float)):
        today = time.localtime(now)[:3] == time.localtime(first_ts)[:3]
        since = " since " + (
            format_time(first_ts)
            if today
            else time.strftime("%Y-%m-%d %H:%M", time.localtime(first_ts))
        )
    count = len(listed)
    head = f"--- history of {where}: {count} message{'s' if count > 1 else ''}{since} ---"
    lines = [Line((_stamp(now), (HISTORY, head)))]
    for message in listed:
        line = _render(message, own_nick, now)
        if line is not None:
            faded = tuple((HISTORY, text) for _, text in line.fragments)
            lines.append(Line(faded, highlight=False, indent=line.indent))
    lines.append(Line((_stamp(now), (HISTORY, "--- end of history ---"))))
    return lines


def _width(fragments: tuple[Fragment, ...] | list[Fragment]) -> int:
    return sum(get_cwidth(text) for _, text in fragments)


def wrap(line: Line, columns: int) -> list[list[Fragment]]:
    """Break a line into rows of at most `columns` cells, continuation rows indented.

    Breaks after a space when there is one in the second half of the row, else anywhere
    (a long URL). The indent is dropped when it would leave less than half the width.

    Returns:
        The rows, each a list of fragments (without a newline).
    """
    indent = line.indent if line.indent <= columns // 2 else 0
    cells = [(style, ch, get_cwidth(ch)) for style, text in line.fragments for ch in text]
    rows: list[list[tuple[str, str, int]]] = []
    current: list[tuple[str, str, int]] = []
    used = 0
    start = 0  # cells of `current` that are the indent
    for cell in cells:
        if used + cell[2] > columns and len(current) > start:
            cut = len(current)
            spaces = [i for i in range(start, len(current)) if current[i][1] == " "]
            if spaces and spaces[-1] + 1 > (start + len(current)) // 2 and cell[1] != " ":
                cut = spaces[-1] + 1
            rows.append(current[:cut])
            carry = current[cut:]
            current = [("", " ", 1)] * indent + carry
            start = indent
            used = indent + sum(c[2] for c in carry)
            if cell[1] == " " and not carry:
                continue  # no row starts with the space it broke at
        current.append(cell)
        used += cell[2]
    rows.append(current)
    return [_merge(row) for row in rows]


def _merge(cells: list[tuple[str, str, int]]) -> list[Fragment]:
    fragments: list[Fragment] = []
    for style, ch, _ in cells:
        if fragments and fragments[-1][0] == style:
            fragments[-1] = (style, fragments[-1][1] + ch)
        else:
            fragments.append((style, ch))
    return fragments
