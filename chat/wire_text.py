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
    "***   /quit [reason]     leave",
    "***   //text             a message that starts with /",
    "***   /help              this list",
)

_USAGE = {
    "msg": "usage: /msg NICK text",
    "me": "usage: /me text",
    "nick": "usage: /nick NEW",
}


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
    raise ProtocolError("bad_request", f"unknown command /{name} (try /help)")


def encode(event: ev.Event, recipient: str) -> bytes:
    """The line(s) `recipient` sees for `event`, newline included."""
    if isinstance(event, ev.RoomEvent) and not isinstance(event, ev.PrivateMessage):
        cached = event.wire.get(NAME)
        if cached is None:
            cached = event.wire[NAME] = _render(event, recipient).encode()
        return cached
    return _render(event, recipient).encode()


def _render(event: ev.Event, recipient: str) -> str:
    match event:
        case ev.Message(sender=sender, text=text):
            return f"<{sender}> {text}\n"
        case ev.Action(sender=sender, text=text):
            return f"* {sender} {text}\n"
        case ev.PrivateMessage(sender=sender, recipient=to, text=text):
            if sender == recipient and to != recipient:
                return f"[private to {to}] <{sender}> {text}\n"
            return f"[private] <{sender}> {text}\n"
        case ev.Joined(nick=nick, count=count):
            return f"*** {nick} joined ({count} online)\n"
        case ev.Left(nick=nick, reason=reason, message=message):
            why = f"{reason}: {message}" if message else reason
            return f"*** {nick} left ({why})\n"
        case ev.Renamed(old=old, new=new):
            return f"*** {old} is now known as {new}\n"
        case ev.Greeting(online=online):
            return f"* Welcome to chat! {online} online.\n* Choose a nickname ({NICK_RULE}):\n"
        case ev.Welcome(nick=nick, users=users):
            return f"* Hello {nick}. Online: {', '.join(users)}. Type /help for commands.\n"
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
