"""The JSON Lines wire format, for programs and chat-client: one JSON object per line both ways.

Pure: `parse()` turns one line into a request, `encode()` turns an event into bytes.
"""

from __future__ import annotations

import json
from typing import Any

from chat import events as ev
from chat.protocol import ProtocolError, clean_text

NAME = "json"
VERSION = 1


def looks_like_json(line: str) -> bool:
    """Whether a first line selects JSON mode: it parses as a JSON object."""
    if not line.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _text_field(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ProtocolError("bad_request", f"field {key!r} must be a string")
    return clean_text(value)


def parse(line: str, registered: bool) -> ev.Request:
    """One line from a JSON client as a request; raises ProtocolError for a bad one."""
    try:
        obj = json.loads(line)
    except ValueError:
        raise ProtocolError("bad_request", "not a JSON object") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_request", "not a JSON object")
    kind = obj.get("type")
    if kind == "hello":
        if registered:
            raise ProtocolError("bad_request", "already registered; use 'nick' to rename")
        version = obj.get("version", VERSION)
        if version != VERSION:
            raise ProtocolError("bad_request", f"unsupported protocol version {version!r}")
        return ev.Hello(_text_field(obj, "nick").strip())
    if not registered:
        raise ProtocolError("not_registered", "send a 'hello' with your nick first")
    if kind == "message":
        return ev.Say(_text_field(obj, "text"))
    if kind == "action":
        return ev.Act(_text_field(obj, "text"))
    if kind == "private":
        return ev.Whisper(_text_field(obj, "to"), _text_field(obj, "text"))
    if kind == "nick":
        return ev.ChangeNick(_text_field(obj, "nick").strip())
    if kind == "who":
        return ev.Who()
    if kind == "ping":
        return ev.Ping(obj.get("token"))
    if kind == "quit":
        reason = obj.get("reason", "")
        return ev.Quit(clean_text(reason) if isinstance(reason, str) else "")
    raise ProtocolError("bad_request", f"unknown type {kind!r}")


def encode(event: ev.Event, recipient: str) -> bytes:
    """The line `recipient` receives for `event`, newline included."""
    if isinstance(event, ev.RoomEvent):
        cached = event.wire.get(NAME)
        if cached is None:
            cached = event.wire[NAME] = _dump(_room_event(event))
        return cached
    return _dump(_reply(event))


def _dump(obj: dict[str, Any]) -> bytes:
    # ensure_ascii keeps every line pure ASCII: nothing a terminal could misread if a person
    # looks at the raw stream.
    return (json.dumps(obj, separators=(", ", ": ")) + "\n").encode()


def _room_event(event: ev.RoomEvent) -> dict[str, Any]:
    head: dict[str, Any] = {"id": event.id, "ts": event.ts, "room": event.room}
    match event:
        case ev.Message(sender=sender, text=text):
            return {"type": "message", **head, "from": sender, "text": text}
        case ev.Action(sender=sender, text=text):
            return {"type": "action", **head, "from": sender, "text": text}
        case ev.PrivateMessage(sender=sender, recipient=to, text=text):
            return {"type": "private", **head, "from": sender, "to": to, "text": text}
        case ev.Joined(nick=nick, count=count):
            return {"type": "join", **head, "nick": nick, "count": count}
        case ev.Left(nick=nick, reason=reason, message=message, count=count):
            return {
                "type": "leave",
                **head,
                "nick": nick,
                "reason": reason,
                "message": message,
                "count": count,
            }
        case ev.Renamed(old=old, new=new):
            return {"type": "rename", **head, "old": old, "new": new}
    raise TypeError(f"no JSON form for {event!r}")


def _reply(event: ev.Event) -> dict[str, Any]:
    match event:
        case ev.Welcome(nick=nick, room=room, users=users, ts=ts):
            return {
                "type": "welcome",
                "version": VERSION,
                "nick": nick,
                "room": room,
                "users": list(users),
                "ts": ts,
            }
        case ev.UserList(room=room, users=users, ts=ts):
            return {"type": "users", "ts": ts, "room": room, "users": list(users)}
        case ev.Notice(text=text, ts=ts):
            return {"type": "notice", "ts": ts, "text": text}
        case ev.HelpText(ts=ts):
            return {"type": "notice", "ts": ts, "text": "commands: see docs/protocol.md"}
        case ev.Error(code=code, message=message, ts=ts):
            return {"type": "error", "ts": ts, "code": code, "message": message}
        case ev.Pong(token=token, ts=ts):
            return {"type": "pong", "ts": ts, "token": token}
        case ev.Goodbye(reason=reason, ts=ts):
            return {
                "type": "notice",
                "ts": ts,
                "text": f"goodbye ({reason})" if reason else "goodbye",
            }
    raise TypeError(f"no JSON form for {event!r}")
