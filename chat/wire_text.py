"""The text wire format, for people on nc or telnet: `/commands` in, `<nick> text` lines out.

Pure: `parse()` turns one clean line into a request, `encode()` turns an event into bytes.
"""

from __future__ import annotations

from chat import events as ev
from chat.protocol import NICK_RULE, ProtocolError

NAME = "text"

HELP_LINES = (
    "*** Commands:",
    "***   /who               who is online",
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
    """One line from a text client as a request; raises ProtocolError for a bad command."""
    if not registered:
        return ev.Hello(line.strip())
    if not line.strip():
        return ev.Nothing()
    if line.startswith("//"):
        return ev.Say(line[1:])
    if not line.startswith("/"):
        return ev.Say(line)
    name, _, rest = line[1:].partition(" ")
    name = name.lower()
    rest = rest.strip()
    words = rest.split()
    if name == "msg":
        to, _, text = rest.partition(" ")
        if not to or not text.strip():
            raise ProtocolError("bad_request", _USAGE["msg"])
        return ev.Whisper(to, text.strip())
    if name == "me":
        if not rest:
            raise ProtocolError("bad_request", _USAGE["me"])
        return ev.Act(rest)
    if name == "nick":
        if not rest or " " in rest:
            raise ProtocolError("bad_request", _USAGE["nick"])
        return ev.ChangeNick(rest)
    if name == "who":
        return ev.Who()
    if name == "help":
        return ev.Help()
    if name == "quit":
        return ev.Quit(rest)
    if name == "join":
        if not 1 <= len(words) <= 2:
            raise ProtocolError("bad_request", _USAGE["join"])
        return ev.JoinRoom(words[0], words[1] if len(words) == 2 else "")
    if name == "part":
        if words and words[0].startswith("#"):
            return ev.PartRoom(words[0], rest[len(words[0]) :].strip())
        return ev.PartRoom(None, rest)
    if name == "rooms":
        return ev.ListRooms()
    if name == "topic":
        return ev.SetTopic(rest or None)
    if name == "kick":
        if not words:
            raise ProtocolError("bad_request", _USAGE["kick"])
        return ev.KickUser(words[0], rest[len(words[0]) :].strip())
    if name == "key":
        return ev.SetRoomMode(key=rest)
    if name == "secret":
        if rest.lower() not in ("on", "off"):
            raise ProtocolError("bad_request", _USAGE["secret"])
        return ev.SetRoomMode(secret=rest.lower() == "on")
    raise ProtocolError("bad_request", f"unknown command /{name} (try /help)")


def encode(event: ev.Event, recipient: str, current_room: str | None = None) -> bytes:
    """The line(s) `recipient` sees for `event`, newline included.

    Lines about a room other than `current_room` start with "[#room] ".
    """
    if isinstance(event, ev.Batch):
        prefixed = _prefixed(event.events[0], current_room)
        cache_key = NAME + "[" if prefixed else NAME
        cached = event.wire.get(cache_key)
        if cached is None:
            cached = b"".join(encode(e, recipient, current_room) for e in event.events)
            event.wire[cache_key] = cached
        return cached
    if isinstance(event, ev.RoomEvent) and not isinstance(event, ev.PrivateMessage):
        prefixed = _prefixed(event, current_room)
        cache_key = NAME + "[" if prefixed else NAME
        cached = event.wire.get(cache_key)
        if cached is None:
            text = _render(event, recipient)
            if prefixed:
                text = f"[{event.room}] {text}"
            cached = event.wire[cache_key] = text.encode()
        return cached
    return _render(event, recipient).encode()


def _prefixed(event: ev.RoomEvent, current_room: str | None) -> bool:
    return (
        isinstance(event, _ROOM_SCOPED)
        and current_room is not None
        and event.room.lower() != current_room.lower()
    )


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
        case ev.ModeChanged(by=by, modes=modes, args=args):
            return f"*** {by} set mode {' '.join((modes, *args))}\n"
        case ev.Left(nick=nick, reason=reason, message=message):
            why = f"{reason}: {message}" if message else reason
            return f"*** {nick} left ({why})\n"
        case ev.Renamed(old=old, new=new):
            return f"*** {old} is now known as {new}\n"
        case ev.Greeting(online=online, password=True):
            return f"* Welcome to chat! {online} online.\n* Password:\n"
        case ev.Greeting(online=online):
            return f"* Welcome to chat! {online} online.\n* Choose a nickname ({NICK_RULE}):\n"
        case ev.Welcome(nick=nick, users=users):
            return f"* Hello {nick}. Online: {', '.join(users)}. Type /help for commands.\n"
        case ev.RoomView(room=room, users=users, topic=topic):
            about = f" Topic: {topic}" if topic else ""
            return f"*** Now talking in {room} ({len(users)}): {', '.join(users)}.{about}\n"
        case ev.RoomList(rooms=rooms):
            listing = ", ".join(f"{r.name} ({r.count})" for r in rooms)
            return f"*** Rooms ({len(rooms)}): {listing}\n"
        case ev.TopicReply(room=room, topic=topic, by=by):
            return (
                f"*** Topic of {room}: {topic} (set by {by})\n"
                if topic
                else (f"*** {room} has no topic\n")
            )
        case ev.UserList(users=users):
            return f"*** Online ({len(users)}): {', '.join(users)}\n"
        case ev.Notice(text=text):
            return f"*** {text}\n"
        case ev.HelpText():
            return "\n".join(HELP_LINES) + "\n"
        case ev.Error(message=message, prompt_again=prompt_again):
            again = "* Choose a nickname:\n" if prompt_again else ""
            return f"! {message}\n{again}"
        case ev.Pong():
            return "*** pong\n"
        case ev.Goodbye(reason=reason):
            return f"*** Goodbye ({reason}).\n" if reason else "*** Goodbye.\n"
    raise TypeError(f"no text form for {event!r}")
