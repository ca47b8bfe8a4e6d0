"""The text wire format, for people on nc or telnet: `/commands` in, `<nick> text` lines out.

Pure: `parse()` turns one line into a request, `encode()` turns an event into bytes.
"""

from __future__ import annotations

import re
import time

from chat import events as ev
from chat.protocol import NICK_RULE, ProtocolError, clean_text, room_key
from chat.wire import EncodeCache, encode_once

NAME = "text"

HELP_LINES = (
    "*** Commands:",
    "***   /who [#room]       who is in this room (or in #room)",
    "***   /users             everyone online, in every room",
    "***   /msg NICK text     private message",
    "***   /me text           action: * you text",
    "***   /nick NEW          change your nickname",
    "***   /join #room [key]  join a room (or switch to it): your messages go there",
    "***   /part [#room] [why] leave a room (the current one by default)",
    "***   /rooms             the rooms and how many are in each",
    "***   /topic [text]      show or set the current room's topic",
    "***   /kick NICK [why]   operators: remove someone from the current room",
    "***   /key [KEY]         operators: set the room's key (none: remove it)",
    "***   /secret on|off     operators: hide the room from /rooms",
    "***   /history [N]       the room's last N messages (/history since 09:30)",
    "***   /away [why]        mark yourself away (alone: back)",
    "***   /quit [reason]     leave",
    "***   //text             a message that starts with /",
    "***   /help              this list",
)

_USAGE = {
    "msg": "usage: /msg NICK text",
    "me": "usage: /me text",
    "nick": "usage: /nick NEW",
    "join": "usage: /join #room [key]",
    "kick": "usage: /kick NICK [reason]",
    "secret": "usage: /secret on|off",
}

# Events that belong to one room: shown with a "[#room] " prefix unless it is the current room.
_ROOM_SCOPED = (
    ev.Message,
    ev.Action,
    ev.Joined,
    ev.Parted,
    ev.Kicked,
    ev.TopicChanged,
    ev.ModeChanged,
)


def parse(line: str, registered: bool) -> ev.Request:
    """One line from a text client as a request; raises ProtocolError for a bad command.

    `line` is as the client sent it, and cleaned here (chat.protocol.clean_text) but for room
    names and keys: one holding a control or bidi character is refused by its rule instead of
    silently becoming another room (a nickname is cleaned, then checked).
    """
    said = line  # a message is cleaned as sent (clean_text turns its tabs into spaces itself)
    line = line.replace("\t", " ")  # a tab separates a command's words like a space
    if not registered:
        # A newcomer may type a command out of habit before choosing a name: /nick NAME
        # registers and /quit leaves (any other command is a nickname the dialect explains).
        command, _, rest = line.strip().partition(" ")
        if command.lower() == "/nick" and rest.strip():
            return ev.Hello(clean_text(rest).strip())
        if command.lower() == "/quit":
            return ev.Quit(clean_text(rest).strip())
        return ev.Hello(clean_text(said).strip())
    if not line.strip():
        return ev.Nothing()
    if line.startswith("//"):
        return ev.Say(clean_text(said[1:]))
    if not line.startswith("/"):
        return ev.Say(clean_text(said))
    name, _, rest = line[1:].partition(" ")
    name = name.lower()
    rest = rest.strip(" ")
    words = [word for word in rest.split(" ") if word]  # only spaces separate: not U+0085
    if name == "msg":
        to, _, text = rest.partition(" ")
        text = clean_text(text).strip()  # "ESC[2J" alone is no text
        if not to or not text:
            raise ProtocolError("bad_request", _USAGE["msg"])
        return ev.Whisper(clean_text(to), text)
    if name == "me":
        if not rest:
            raise ProtocolError("bad_request", _USAGE["me"])
        return ev.Act(clean_text(rest))
    if name == "nick":
        new = clean_text(rest).strip()
        if not new or " " in new:
            raise ProtocolError("bad_request", _USAGE["nick"])
        return ev.ChangeNick(new)
    if name == "who":
        if len(words) > 1 or (words and not words[0].startswith("#")):
            raise ProtocolError("bad_request", "usage: /who [#room]   (everyone online: /users)")
        return ev.Who(words[0] if words else None)
    if name == "users":
        return ev.ListUsers()
    if name == "help":
        return ev.Help()
    if name == "quit":
        return ev.Quit(clean_text(rest).strip())
    if name == "away":
        return ev.SetAway(clean_text(rest).strip())
    if name == "join":
        if not 1 <= len(words) <= 2:
            raise ProtocolError("bad_request", _USAGE["join"])
        return ev.JoinRoom(words[0], words[1] if len(words) == 2 else "")
    if name == "part":
        if words and words[0].startswith("#"):
            return ev.PartRoom(words[0], clean_text(rest[len(words[0]) :]).strip())
        return ev.PartRoom(None, clean_text(rest).strip())
    if name == "rooms":
        return ev.ListRooms()
    if name == "topic":
        return ev.SetTopic(clean_text(rest).strip() or None)
    if name == "kick":
        if not words:
            raise ProtocolError("bad_request", _USAGE["kick"])
        return ev.KickUser(clean_text(words[0]), clean_text(rest[len(words[0]) :]).strip())
    if name == "key":
        if len(words) > 1:
            raise ProtocolError("bad_request", "usage: /key [KEY]   (one word; none removes it)")
        return ev.SetRoomMode(key=rest)
    if name == "secret":
        if rest.lower() not in ("on", "off"):
            raise ProtocolError("bad_request", _USAGE["secret"])
        return ev.SetRoomMode(secret=rest.lower() == "on")
    if name == "history":
        return _history_request(words)
    raise ProtocolError("bad_request", f"unknown command /{clean_text(name)} (try /help)")


# -- history (#11) ----------------------------------------------------------------------------

_HISTORY_USAGE = "usage: /history [#room] [N]  or  /history [#room] since HH:MM"
_HH_MM_RE = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)\Z")


def _history_request(words: list[str]) -> ev.ShowHistory:
    room = words.pop(0) if words and words[0].startswith("#") else None
    if not words:
        return ev.ShowHistory(room)
    if len(words) == 1 and words[0].isdigit() and words[0].isascii():
        limit = int(words[0])
        if limit < 1:
            raise ProtocolError("bad_request", _HISTORY_USAGE)
        return ev.ShowHistory(room, limit=limit)
    if len(words) == 2 and words[0].lower() == "since":
        match = _HH_MM_RE.match(words[1])
        if match is not None:
            return ev.ShowHistory(room, since_hm=(int(match[1]), int(match[2])))
    raise ProtocolError("bad_request", _HISTORY_USAGE)


def clock_time(ts: float, now: float) -> str:
    """The time as HH:MM for a moment on the day of `now` (local time), else with its date."""
    then = time.localtime(ts)
    if time.localtime(now)[:3] == then[:3]:
        return time.strftime("%H:%M", then)
    return time.strftime("%Y-%m-%d %H:%M", then)


def history_lines(event: ev.History, recipient: str) -> str:
    """A divider, one line per message with its time, and a closing divider."""
    count = len(event.events)
    if not count:
        return "" if event.replay else f"--- no history in {event.target} ---\n"
    plural = "s" if count > 1 else ""
    since = clock_time(event.events[0].ts, event.ts)
    if event.replay:
        head = f"--- history: {count} message{plural} since {since} ---\n"
        tail = "--- end of history ---\n"
    else:
        head = f"--- history of {event.target}: {count} message{plural} since {since} ---\n"
        tail = "--- end of history ---\n"
    lines = [head]
    for item in event.events:
        lines.append(f"[{clock_time(item.ts, event.ts)}] {_render(item, recipient)}")
    lines.append(tail)
    return "".join(lines)


def encode(
    event: ev.Event,
    recipient: str,
    current_room: str | None = None,
    cache: EncodeCache | None = None,
) -> bytes:
    """The line(s) `recipient` sees for `event`, newline included.

    Lines about a room other than `current_room` start with "[#room] ". Room events are the
    same for every member with the same prefix, so a fan-out encodes each variant once
    (`cache`); private messages and replies depend on the recipient and are not cached.
    """
    if isinstance(event, ev.Batch):
        form = _PREFIXED if _prefixed(event.events[0], current_room) else NAME
        # The hot path of every broadcast: look in the cache before building anything.
        if cache is not None and (data := cache.get(form)) is not None:
            return data
        return encode_once(
            cache, form, lambda: b"".join(encode(e, recipient, current_room) for e in event.events)
        )
    if isinstance(event, ev.Kicked) and event.nick == recipient:
        return _kicked_me(event, current_room).encode()
    if isinstance(event, ev.RoomEvent) and not isinstance(event, ev.PrivateMessage):
        prefixed = _prefixed(event, current_room)
        form = _PREFIXED if prefixed else NAME
        if cache is not None and (data := cache.get(form)) is not None:
            return data

        def render() -> bytes:
            text = _render(event, recipient)
            return (f"[{event.room}] {text}" if prefixed else text).encode()

        return encode_once(cache, form, render)
    return _render(event, recipient).encode()


_PREFIXED = NAME + "["  # the cache's name for the "[#room] " variant


def _prefixed(event: ev.RoomEvent, current_room: str | None) -> bool:
    return (
        isinstance(event, _ROOM_SCOPED)
        and current_room is not None
        and event.room != current_room  # the common case, without folding
        and room_key(event.room) != room_key(current_room)
    )


def _kicked_me(event: ev.Kicked, current_room: str | None) -> str:
    """What the kicked user reads: who, why, and where its plain lines go now."""
    line = f"*** You were kicked from {event.room} by {event.by} ({event.reason})."
    if current_room is not None and room_key(event.room) != room_key(current_room):
        return line + "\n"
    if event.rooms_left:
        return line + f" You are now talking in {event.rooms_left[-1]}.\n"
    return line + " You are in no room now: /join #room to talk again.\n"


def _mode_sentence(event: ev.ModeChanged) -> str:
    """Room mode changes in words, without IRC notation and never showing a key."""
    parts: list[str] = []
    args = list(event.args)
    sign = "+"
    for letter in event.modes:
        if letter in "+-":
            sign = letter
        elif letter == "k":
            if args:
                args.pop(0)
            parts.append("set a key on the room" if sign == "+" else "removed the room's key")
        elif letter == "s":
            parts.append("made the room secret" if sign == "+" else "made the room public")
        elif letter == "o":
            nick = args.pop(0) if args else "?"
            parts.append(
                f"made {nick} an operator" if sign == "+" else f"took operator from {nick}"
            )
    return f"*** {event.by} {', '.join(parts) or 'changed the room'} ({event.room})\n"


def _render(event: ev.Event, recipient: str) -> str:
    match event:
        case ev.Message(sender=sender, text=text, notice=notice):
            return f"-{sender}- {text}\n" if notice else f"<{sender}> {text}\n"
        case ev.Action(sender=sender, text=text):
            return f"* {sender} {text}\n"
        case ev.PrivateMessage(sender=sender, recipient=to, text=text, action=action):
            body = f"* {sender} {text}" if action else f"<{sender}> {text}"
            if sender == recipient and to != recipient:
                return f"[private to {to}] {body}\n"
            return f"[private] {body}\n"
        case ev.Joined(nick=nick, count=count):
            return f"*** {nick} joined ({count} online)\n"
        case ev.Parted(nick=nick, room=room, message=message):
            why = f" ({message})" if message else ""
            return f"*** {nick} left {room}{why}\n"
        case ev.Kicked(nick=nick, room=room, by=by, reason=reason):
            return f"*** {nick} was kicked from {room} by {by} ({reason})\n"
        case ev.TopicChanged(by=by, topic=topic):
            return (
                f"*** {by} set the topic: {topic}\n" if topic else f"*** {by} cleared the topic\n"
            )
        case ev.ModeChanged():
            return _mode_sentence(event)
        case ev.Left(nick=nick, reason=reason, message=message):
            why = f"{reason}: {message}" if message else reason
            return f"*** {nick} left ({why})\n"
        case ev.Renamed(old=old, new=new):
            return f"*** {old} is now known as {new}\n"
        case ev.Greeting(online=online, password=True):
            # Nothing about who is online before the password: not even how many.
            return "* Welcome to chat!\n* Password:\n"
        case ev.Greeting(online=online):
            return f"* Welcome to chat! {online} online.\n* Choose a nickname ({NICK_RULE}):\n"
        case ev.Welcome(nick=nick, users=users, more_users=more):
            sample = user_sample(users, more)
            return f"* Hello {nick}. Online: {sample}. Type /help for commands.\n"
        case ev.RoomView(room=room, users=users, topic=topic):
            about = f" Topic: {topic}" if topic else ""
            shown = user_sample(users[: ev.SHOWN_USERS], len(users) - ev.SHOWN_USERS)
            return f"*** Now talking in {room} ({len(users)}): {shown}.{about}\n"
        case ev.RoomList(rooms=rooms):
            return room_list_lines(rooms, len(rooms))
        case ev.TopicReply(room=room, topic=topic, by=by):
            return (
                f"*** Topic of {room}: {topic} (set by {by})\n"
                if topic
                else (f"*** {room} has no topic\n")
            )
        case ev.UserList(room=None, users=users):
            return f"*** Online ({len(users)}): {', '.join(users)}\n"
        case ev.UserList(room=str() as room, users=users):
            return f"*** Users in {room} ({len(users)}): {', '.join(users)}\n"
        case ev.Notice(text=text):
            return f"*** {text}\n"
        case ev.HelpText():
            return "\n".join(HELP_LINES) + "\n"
        case ev.Error(message=message, prompt_again=prompt_again):
            again = "* Choose a nickname:\n" if prompt_again else ""
            return f"! {message}\n{again}"
        case ev.AwayStatus(nick=nick, text=None, was_away=False) if nick == recipient:
            return "*** You were not marked as away\n"
        case ev.AwayStatus(nick=nick, text=None):
            return "*** You are back\n" if nick == recipient else f"*** {nick} is back\n"
        case ev.AwayStatus(nick=nick, text=str() as text):
            if nick == recipient:
                return f"*** You are away: {text} (/away alone: back)\n"
            return f"*** {nick} is away: {text}\n"
        case ev.Pong():
            return "*** pong\n"
        case ev.Goodbye(reason=reason):
            return f"*** Goodbye ({reason}).\n" if reason else "*** Goodbye.\n"
        case ev.History():
            return history_lines(event, recipient)
    raise TypeError(f"no text form for {event!r}")


def user_sample(users: tuple[str, ...], more: int) -> str:
    """`alice, bob` or, with `more` users not listed, `alice, bob, ... and 9,950 others`."""
    listed = ", ".join(users)
    if more <= 0:
        return listed
    return f"{listed}, ... and {more:,} other{'s' if more > 1 else ''}"


# A room listing is cut into lines of this many rooms, so that a server with a thousand rooms
# answers /rooms with short lines instead of one line longer than any client accepts.
ROOMS_PER_LINE = 20


def room_list_lines(rooms: tuple[ev.RoomInfo, ...], total: int) -> str:
    """`*** Rooms (N): #a (3), #b (1), ...`, continued on `***   ...` lines."""
    if not rooms:
        return "*** Rooms (0): none\n"
    out = []
    for start in range(0, len(rooms), ROOMS_PER_LINE):
        chunk = ", ".join(f"{r.name} ({r.count})" for r in rooms[start : start + ROOMS_PER_LINE])
        out.append(f"*** Rooms ({total}): {chunk}\n" if start == 0 else f"***   {chunk}\n")
    return "".join(out)
