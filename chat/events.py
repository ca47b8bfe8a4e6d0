"""The chat's vocabulary, independent of any wire format: what clients ask for and what happens.

Requests are what a front-end decodes from a client's line; events are what the room produces.
A wire module (`wire_text`, `wire_json`, and later IRC) turns lines into requests and events into
lines, so the room and the sessions never know which format a member speaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------------
# Requests: client -> server


@dataclass(frozen=True)
class Hello:
    """Registration: the nickname the client wants."""

    nick: str


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class Act:
    text: str


@dataclass(frozen=True)
class Whisper:
    to: str
    text: str


@dataclass(frozen=True)
class ChangeNick:
    nick: str


@dataclass(frozen=True)
class Who:
    pass


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Ping:
    token: Any = None


@dataclass(frozen=True)
class Quit:
    reason: str = ""


@dataclass(frozen=True)
class Nothing:
    """A line that asks for nothing (an empty line)."""


Request = Hello | Say | Act | Whisper | ChangeNick | Who | Help | Ping | Quit | Nothing

# ---------------------------------------------------------------------------------------------
# Events: server -> client


class LeaveReason:
    """Why a member left; the strings are part of the protocol (docs/protocol.md)."""

    QUIT = "quit"
    CONNECTION_LOST = "connection lost"
    TIMED_OUT = "timed out"
    FLOODING = "kicked for flooding"
    SENDQ_EXCEEDED = "send queue exceeded"
    SHUTDOWN = "server shutting down"
    LINE_TOO_LONG = "line too long"


def _wire_cache() -> dict[str, bytes]:
    return {}


@dataclass(frozen=True)
class RoomEvent:
    """Something that happened in a room, numbered by the room (`id`) and stamped (`ts`).

    `wire` caches the encoded line per wire format: a broadcast to 100 text users encodes once.
    Only the room lock's holder writes it (see Room), so no lock of its own is needed.
    """

    id: int
    ts: float
    room: str
    wire: dict[str, bytes] = field(
        default_factory=_wire_cache, init=False, repr=False, compare=False
    )


@dataclass(frozen=True)
class Message(RoomEvent):
    sender: str = ""
    text: str = ""


@dataclass(frozen=True)
class Action(RoomEvent):
    sender: str = ""
    text: str = ""


@dataclass(frozen=True)
class PrivateMessage(RoomEvent):
    sender: str = ""
    recipient: str = ""
    text: str = ""


@dataclass(frozen=True)
class Joined(RoomEvent):
    nick: str = ""
    count: int = 0


@dataclass(frozen=True)
class Left(RoomEvent):
    nick: str = ""
    reason: str = ""
    message: str = ""
    count: int = 0


@dataclass(frozen=True)
class Renamed(RoomEvent):
    old: str = ""
    new: str = ""


# Replies to one client only: not numbered, not cached.


@dataclass(frozen=True)
class Greeting:
    """Sent on connect, before the client has chosen a wire format."""

    online: int


@dataclass(frozen=True)
class Welcome:
    nick: str
    room: str
    users: tuple[str, ...]
    ts: float


@dataclass(frozen=True)
class UserList:
    room: str
    users: tuple[str, ...]
    ts: float


@dataclass(frozen=True)
class Notice:
    text: str
    ts: float


@dataclass(frozen=True)
class HelpText:
    ts: float


@dataclass(frozen=True)
class Error:
    code: str
    message: str
    ts: float
    # Before registration a text client gets a new nickname prompt after the error.
    prompt_again: bool = False


@dataclass(frozen=True)
class Pong:
    token: Any
    ts: float


@dataclass(frozen=True)
class Goodbye:
    reason: str
    ts: float


# Message, Action, PrivateMessage, Joined, Left and Renamed are RoomEvents.
Event = RoomEvent | Greeting | Welcome | UserList | Notice | HelpText | Error | Pong | Goodbye
