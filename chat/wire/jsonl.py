"""The JSON Lines wire format, for programs and chat-client: one JSON object per line both ways.

Pure: `parse()` turns one line into a request, `encode()` turns an event into bytes.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeGuard, cast

from chat import events as ev
from chat.protocol import ProtocolError, clean_text
from chat.wire import EncodeCache, encode_once

NAME = "json"
VERSION = 1


class _NotFinite(ValueError):
    """NaN or Infinity in a request: not JSON (RFC 8259), and echoed back (a ping's token) it
    would make a line that most parsers outside Python reject."""


def _finite(text: str) -> float:
    """A JSON number as a float; 1e999 (infinite as a float), NaN and Infinity are refused.
    Only numbers with a fraction or exponent come here: a line without one costs nothing."""
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


# One decoder and one encoder for every line, made once: `json.loads(line, strict=False)` and
# `json.dumps(obj, separators=...)` build a new one on every call (any option but the
# defaults does), which cost more than the parsing or encoding of a short line itself
# (2.3 -> 0.8 µs a line parsed, 2.6 -> 1.9 µs a message encoded; every broadcast encodes
# each event once, every cluster node once more). Both keep no state between calls: the
# json module shares its own default pair between threads the same way.
_DECODER = json.JSONDecoder(strict=False, parse_float=_finite, parse_constant=_finite)
_ENCODER = json.JSONEncoder(separators=(", ", ": "))


# The request types, for the error that names them.
REQUEST_TYPES = [
    "hello",
    "message",
    "action",
    "private",
    "join",
    "part",
    "rooms",
    "topic",
    "kick",
    "mode",
    "nick",
    "who",
    "users",
    "ping",
    "quit",
    "history",
    "away",
]


def looks_like_json(line: str) -> bool:
    """Whether a first line selects JSON mode: it parses as a JSON object (or nests so deep
    that the parser gives up, which no nickname does; `{bob}` is a nickname)."""
    if not line.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except RecursionError:
        return True
    except ValueError:
        return False


def _loads(line: str) -> Any:
    try:
        # strict=False: a control character inside a string is taken (and cleaned from text
        # fields, refused in names), as it was when lines were cleaned before parsing.
        return _DECODER.decode(line)
    except RecursionError:  # [[[[... a thousand deep: the parser gives up, so do we
        raise ProtocolError("bad_request", "JSON nested too deeply") from None
    except _NotFinite:
        raise ProtocolError("bad_request", "numbers must be finite: no NaN or Infinity") from None
    except ValueError:
        raise ProtocolError("bad_request", "not a JSON object") from None


def _text_field(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ProtocolError("bad_request", f"field {key!r} must be a string")
    return clean_text(value)


def _is_whole(value: object) -> TypeGuard[int]:
    """A JSON integer: not a bool (True is an int in Python, and True == 1), not a float (1.0
    == 1). Every integer field of a request is checked with this."""
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(obj: dict[str, Any], key: str) -> str | None:
    """A string field that may be missing (None); present, it must be a string."""
    if obj.get(key) is None:
        return None
    return _text_field(obj, key).strip()


def _name_field(obj: dict[str, Any], key: str) -> str:
    """A room name or key as sent, not cleaned: one holding a control or bidi character is
    refused by its rule (room_error, key_error) instead of silently becoming another name."""
    value = obj.get(key)
    if not isinstance(value, str):
        raise ProtocolError("bad_request", f"field {key!r} must be a string")
    return value.strip(" ")


def _optional_name(obj: dict[str, Any], key: str) -> str | None:
    return None if obj.get(key) is None else _name_field(obj, key)


def parse(line: str, registered: bool) -> ev.Request:
    """One line from a JSON client as a request; raises ProtocolError for a bad one."""
    obj = _loads(line)
    if not isinstance(obj, dict):
        raise ProtocolError("bad_request", "not a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(
            "bad_request", f'every request needs a "type": one of {", ".join(REQUEST_TYPES)}'
        )
    if kind == "hello":
        if registered:
            raise ProtocolError("bad_request", "already registered; use 'nick' to rename")
        version = obj.get("version", VERSION)
        if not _is_whole(version) or version != VERSION:
            raise ProtocolError("bad_request", f"unsupported protocol version {version!r}")
        password = obj.get("password")
        return ev.Hello(
            _text_field(obj, "nick").strip(), password if isinstance(password, str) else None
        )
    if not registered:
        raise ProtocolError("not_registered", "send a 'hello' with your nick first")
    if kind == "message":
        return ev.Say(_text_field(obj, "text"), _optional_name(obj, "room"))
    if kind == "action":
        return ev.Act(_text_field(obj, "text"), _optional_name(obj, "room"))
    if kind == "join":
        return ev.JoinRoom(_name_field(obj, "room"), _optional_name(obj, "key") or "")
    if kind == "part":
        return ev.PartRoom(_optional_name(obj, "room"), _optional(obj, "message") or "")
    if kind == "rooms":
        return ev.ListRooms()
    if kind == "topic":
        return ev.SetTopic(_optional(obj, "topic"), _optional_name(obj, "room"))
    if kind == "kick":
        return ev.KickUser(
            _text_field(obj, "nick"), _optional(obj, "reason") or "", _optional_name(obj, "room")
        )
    if kind == "mode":
        key, secret = _optional_name(obj, "key"), obj.get("secret")
        if secret is not None and not isinstance(secret, bool):
            raise ProtocolError("bad_request", "field 'secret' must be true or false")
        if key is None and secret is None:
            raise ProtocolError("bad_request", "a 'mode' request needs 'key' or 'secret'")
        return ev.SetRoomMode(key, secret, _optional_name(obj, "room"))
    if kind == "private":
        return ev.Whisper(_text_field(obj, "to"), _text_field(obj, "text"))
    if kind == "nick":
        return ev.ChangeNick(_text_field(obj, "nick").strip())
    if kind == "who":
        return ev.Who(_optional_name(obj, "room"))
    if kind == "users":
        return ev.ListUsers()
    if kind == "ping":
        return ev.Ping(obj.get("token"))
    if kind == "quit":
        reason = obj.get("reason", "")
        return ev.Quit(clean_text(reason) if isinstance(reason, str) else "")
    if kind == "history":
        return _history_request(obj)
    if kind == "away":
        return ev.SetAway(clean_text(_optional(obj, "text") or ""))
    raise ProtocolError(
        "bad_request", f"unknown type {kind!r}: use one of {', '.join(REQUEST_TYPES)}"
    )


def encode(
    event: ev.Event,
    recipient: str,
    current_room: str | None = None,
    cache: EncodeCache | None = None,
) -> bytes:
    """The line `recipient` receives for `event`, newline included (the same for everyone, so
    a fan-out encodes it once through `cache`)."""
    if cache is not None and isinstance(event, ev.RoomEvent | ev.Batch):
        data = cache.get(NAME)  # the hot path of every broadcast: encoded by another member
        if data is not None:
            return data
    if isinstance(event, ev.Batch):
        return encode_once(cache, NAME, lambda: _batch_lines(event.events))
    if isinstance(event, ev.RoomEvent):
        return encode_once(cache, NAME, lambda: _dump(_room_event(event)))
    if isinstance(event, ev.RoomList):
        return room_list_lines(event)
    if isinstance(event, ev.History):
        return history_lines(event)
    return _dump(_reply(event))


# A room listing is sent as several "rooms" objects, the last without "more": a thousand rooms
# with long topics would otherwise be one line of megabytes. Each object holds at most this many
# rooms and, beyond its first room, at most this many bytes: one room with the longest topic is
# 5 KiB at worst (390 emoji, each escaped as a \ud83d\ude00 pair), so an object never outgrows a
# small send queue (--sendq-bytes 16384), which would drop the client who asked.
ROOMS_PER_OBJECT = 50
ROOMS_OBJECT_BYTES = 1024


def room_list_lines(event: ev.RoomList) -> bytes:
    groups: list[list[dict[str, Any]]] = [[]]
    size = 0
    for info in event.rooms:
        room = {"room": info.name, "count": info.count, "topic": info.topic}
        room_bytes = len(_dump(room))
        full = len(groups[-1]) >= ROOMS_PER_OBJECT or size + room_bytes > ROOMS_OBJECT_BYTES
        if groups[-1] and full:
            groups.append([])
            size = 0
        groups[-1].append(room)
        size += room_bytes
    out = []
    for i, group in enumerate(groups):
        obj: dict[str, Any] = {"type": "rooms", "ts": event.ts, "rooms": group}
        if i < len(groups) - 1:
            obj["more"] = True
        out.append(_dump(obj))
    return b"".join(out)


def _dump(obj: dict[str, Any]) -> bytes:
    # ensure_ascii keeps every line pure ASCII: nothing a terminal could misread if a person
    # looks at the raw stream.
    return (_ENCODER.encode(obj) + "\n").encode()


def _batch_lines(events: tuple[ev.RoomEvent, ...]) -> bytes:
    """The lines of a batch: byte for byte `_dump(_room_event(e))` of each event.

    A batch from `Hub.say` is messages of one sender in one room (a pasted block, or a bot
    flat out: 100 and more a batch). Their shared parts are encoded once, and each message adds
    its id, time and text, each value encoded by json as `_dump` would (the same ASCII escapes;
    an int's and a float's repr are what json writes), in `_room_event`'s order of keys. This
    is the hottest line of a busy server (every node of a cluster encodes every message):
    0.8 µs a message instead of 2.7. tests/test_properties.py checks it against `_dump`.
    """
    if not all(type(e) is ev.Message for e in events):
        return b"".join(_dump(_room_event(e)) for e in events)
    messages = cast(tuple[ev.Message, ...], events)
    first = messages[0]
    if not all(
        m.room == first.room
        and m.sender == first.sender
        and m.notice == first.notice
        and math.isfinite(m.ts)
        for m in messages
    ):
        return b"".join(_dump(_room_event(e)) for e in events)
    encode = _ENCODER.encode
    head = '{"type": "message", "id": '
    middle = f', "room": {encode(first.room)}, "from": {encode(first.sender)}, "text": '
    tail = ', "notice": true}\n' if first.notice else "}\n"
    return "".join(
        f'{head}{int(m.id)!r}, "ts": {m.ts!r}{middle}{encode(m.text)}{tail}' for m in messages
    ).encode()


def _room_event(event: ev.RoomEvent) -> dict[str, Any]:
    head: dict[str, Any] = {"id": event.id, "ts": event.ts, "room": event.room}
    match event:
        case ev.Message(sender=sender, text=text, notice=notice):
            extra = {"notice": True} if notice else {}
            return {"type": "message", **head, "from": sender, "text": text, **extra}
        case ev.Action(sender=sender, text=text):
            return {"type": "action", **head, "from": sender, "text": text}
        case ev.PrivateMessage(sender=sender, recipient=to, text=text, notice=notice, action=act):
            del head["room"]
            extra = {"notice": True} if notice else {}
            if act:
                extra["action"] = True
            return {"type": "private", **head, "from": sender, "to": to, "text": text, **extra}
        case ev.Parted(nick=nick, message=message, count=count):
            return {"type": "part", **head, "nick": nick, "message": message, "count": count}
        case ev.Kicked(nick=nick, by=by, reason=reason, count=count):
            # rooms_left is for the kicked user's own session on the server: not sent.
            return {
                "type": "kick",
                **head,
                "nick": nick,
                "by": by,
                "reason": reason,
                "count": count,
            }
        case ev.TopicChanged(by=by, topic=topic):
            return {"type": "topic", **head, "by": by, "topic": topic}
        case ev.ModeChanged(by=by, modes=modes):
            return {"type": "mode", **head, "by": by, "modes": modes, "args": _shown_args(event)}
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
                "rooms": list(event.rooms),
            }
        case ev.Renamed(old=old, new=new, rooms=rooms):
            return {"type": "rename", **head, "old": old, "new": new, "rooms": list(rooms)}
    raise TypeError(f"no JSON form for {event!r}")


def _reply(event: ev.Event) -> dict[str, Any]:
    match event:
        case ev.Welcome(nick=nick, room=room, users=users, ts=ts, more_users=more):
            welcome = {
                "type": "welcome",
                "version": VERSION,
                "nick": nick,
                "room": room,
                "users": list(users),
                "ts": ts,
            }
            return welcome | ({"more_users": more} if more > 0 else {})
        case ev.RoomView(room=room, users=users, topic=topic, ts=ts):
            # At most SHOWN_USERS users, the rest counted; "operators" is complete.
            view = {
                "type": "room",
                "ts": ts,
                "room": room,
                "users": [u.lstrip("@") for u in users[: ev.SHOWN_USERS]],
                "operators": [u[1:] for u in users if u.startswith("@")],
                "topic": topic,
                "secret": event.secret,
                "key": event.has_key,
            }
            more = len(users) - ev.SHOWN_USERS
            return view | ({"more_users": more} if more > 0 else {})
        case ev.TopicReply(room=room, topic=topic, by=by, ts=ts):
            return {"type": "topic", "ts": ts, "room": room, "by": by, "topic": topic}
        case ev.UserList(room=room, users=users, ts=ts):
            # A room's list marks its operators with "@" (IRC style); JSON says it apart.
            return {
                "type": "users",
                "ts": ts,
                "room": room,
                "users": [u.removeprefix("@") for u in users],
                "operators": [u[1:] for u in users if u.startswith("@")],
            }
        case ev.Notice(text=text, ts=ts):
            return {"type": "notice", "ts": ts, "text": text}
        case ev.AwayStatus(nick=nick, text=None, ts=ts, was_away=was_away):
            return {"type": "away", "ts": ts, "nick": nick, "text": None, "was_away": was_away}
        case ev.AwayStatus(nick=nick, text=text, ts=ts):
            return {"type": "away", "ts": ts, "nick": nick, "text": text}
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


def _shown_args(event: ev.ModeChanged) -> list[str]:
    """The mode arguments, with a new key replaced by "*": a key is not broadcast."""
    args = list(event.args)
    shown: list[str] = []
    sign = "+"
    for letter in event.modes:
        if letter in "+-":
            sign = letter
        elif letter in "ko" and args:
            arg = args.pop(0)
            shown.append("*" if letter == "k" and sign == "+" else arg)
    return shown


# -- history (#11) ----------------------------------------------------------------------------

# A history answer is sent as several "history" objects, all but the last with "partial": true,
# for the reason a room listing is (ROOMS_OBJECT_BYTES): each object stays small next to the
# smallest send queue, whatever the messages hold.
HISTORY_PER_OBJECT = 50
HISTORY_OBJECT_BYTES = 4096


def _optional_id(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not _is_whole(value) or value < 0:
        raise ProtocolError("bad_request", f"field {key!r} must be a message id (a number)")
    return value


def _history_request(obj: dict[str, Any]) -> ev.ShowHistory:
    limit = obj.get("limit")
    if limit is not None and (not _is_whole(limit) or limit < 1):
        raise ProtocolError("bad_request", "field 'limit' must be a whole number, at least 1")
    since = obj.get("since")
    if since is not None and (not isinstance(since, int | float) or isinstance(since, bool)):
        raise ProtocolError("bad_request", "field 'since' must be a Unix time (a number)")
    return ev.ShowHistory(
        room=_optional_name(obj, "room"),
        limit=limit,
        before=_optional_id(obj, "before"),
        after=_optional_id(obj, "after"),
        since=None if since is None else float(since),
        with_nick=_optional(obj, "with"),
    )


def history_lines(event: ev.History) -> bytes:
    """{"type": "history", "room" (or "with"), "replay", "more", "messages": [...]} objects."""
    where = {"with": event.target} if not event.target.startswith("#") else {"room": event.target}
    groups: list[list[dict[str, Any]]] = [[]]
    size = 0
    for item in event.events:
        message = _room_event(item)
        message_bytes = len(_dump(message))
        full = len(groups[-1]) >= HISTORY_PER_OBJECT or size + message_bytes > HISTORY_OBJECT_BYTES
        if groups[-1] and full:
            groups.append([])
            size = 0
        groups[-1].append(message)
        size += message_bytes
    out = []
    for i, group in enumerate(groups):
        obj: dict[str, Any] = {
            "type": "history",
            "ts": event.ts,
            **where,
            "replay": event.replay,
            "more": event.more,
            "messages": group,
        }
        if i < len(groups) - 1:
            obj["partial"] = True
        out.append(_dump(obj))
    return b"".join(out)
