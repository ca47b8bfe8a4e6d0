"""The chat's vocabulary, independent of any wire format: what clients ask for and what happens.

Requests are what a dialect decodes from a client's line; events are what the hub produces.
The codecs of chat/wire turn lines into requests and events into lines, so the hub and the
connections never know which format a member speaks. Every class here is immutable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The most nicknames a welcome or a text/JSON room view lists; the rest are counted ("and 9,950
# others"): in a room of 10,000 the full list would be ~100 KB for every newcomer. IRC NAMES
# stays complete (it is sent in pieces).
SHOWN_USERS = 50

# ---------------------------------------------------------------------------------------------
# Requests: client -> server


@dataclass(frozen=True)
class Hello:
    """Registration: the nickname the client wants (and the server password, if it has one)."""

    nick: str
    password: str | None = None


@dataclass(frozen=True)
class Say:
    """A message to the sender's current room (text, JSON) or to `room` when given."""

    text: str
    room: str | None = None


@dataclass(frozen=True)
class Act:
    text: str
    room: str | None = None


@dataclass(frozen=True)
class JoinRoom:
    """Join a room (and, for text and JSON users, make it the current room)."""

    room: str
    key: str = ""


@dataclass(frozen=True)
class PartRoom:
    """Leave a room; `room` None means the current one."""

    room: str | None = None
    message: str = ""


@dataclass(frozen=True)
class ListRooms:
    pass


@dataclass(frozen=True)
class SetTopic:
    """Show the topic (`topic` None) or set it."""

    topic: str | None = None
    room: str | None = None


@dataclass(frozen=True)
class KickUser:
    nick: str
    reason: str = ""
    room: str | None = None


@dataclass(frozen=True)
class SetRoomMode:
    """Room operators only: `key` "" removes the key, None leaves it; `secret` likewise."""

    key: str | None = None
    secret: bool | None = None
    room: str | None = None


@dataclass(frozen=True)
class Whisper:
    to: str
    text: str


@dataclass(frozen=True)
class ChangeNick:
    nick: str


@dataclass(frozen=True)
class Who:
    """The members of a room (`room` None: the current room)."""

    room: str | None = None


@dataclass(frozen=True)
class ListUsers:
    """Everyone online, in every room."""


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
class SetAway:
    """Away with `text` (IRC's AWAY), or back when it is empty."""

    text: str = ""


@dataclass(frozen=True)
class Nothing:
    """A line that asks for nothing (an empty line)."""


# -- history (#11): a block of its own -------------------------------------------------------


@dataclass(frozen=True)
class ShowHistory:
    """Stored messages of a room (`room` None: the current one) or, with `with_nick`, of the
    private conversation with that user. Bounds are exclusive event ids; `since` is a Unix
    time (the text form `/history since HH:MM` is made one by the dialect, `since_hm`);
    `limit` None: the server's default."""

    room: str | None = None
    limit: int | None = None
    before: int | None = None
    after: int | None = None
    since: float | None = None
    since_hm: tuple[int, int] | None = None
    with_nick: str | None = None


Request = (
    Hello
    | Say
    | Act
    | Whisper
    | ChangeNick
    | Who
    | ListUsers
    | Help
    | Ping
    | Quit
    | Nothing
    | JoinRoom
    | PartRoom
    | ListRooms
    | SetTopic
    | KickUser
    | SetRoomMode
    | ShowHistory
    | SetAway
)

# ---------------------------------------------------------------------------------------------
# Events: server -> client


class LeaveReason:
    """Why a member left; the strings are part of the protocol (docs/protocol.md)."""

    QUIT = "quit"
    CONNECTION_LOST = "connection lost"
    TIMED_OUT = "timed out"
    FLOODING = "kicked for flooding"
    SENDQ_EXCEEDED = "send queue exceeded"
    SEND_TIMED_OUT = "send timed out"  # the classroom's naive design: no queue, a blocked send
    SHUTDOWN = "server shutting down"
    LINE_TOO_LONG = "line too long"
    PING_TIMEOUT = "ping timeout"
    BAD_PASSWORD = "bad password"
    SERVER_ERROR = "server error"  # a bug (or the --unsafe-registry demo) crashed its thread


@dataclass(frozen=True)
class RoomEvent:
    """Something that happened in a room, numbered by the hub (`id`) and stamped (`ts`).

    A broadcast encodes it once per wire format (chat/wire `EncodeCache`), not once per member.
    """

    id: int
    ts: float
    room: str


# `userhost` is the "user@host" half of an IRC source (`nick!user@host`) of whoever caused the
# event: IRC front-ends need it, the others ignore it. `notice` marks an IRC NOTICE (text users
# see `-alice- text`), which automatic clients must never answer.


@dataclass(frozen=True)
class Message(RoomEvent):
    sender: str = ""
    text: str = ""
    userhost: str = ""
    notice: bool = False


@dataclass(frozen=True)
class Action(RoomEvent):
    sender: str = ""
    text: str = ""
    userhost: str = ""


@dataclass(frozen=True)
class PrivateMessage(RoomEvent):
    sender: str = ""
    recipient: str = ""
    text: str = ""
    userhost: str = ""
    notice: bool = False
    action: bool = False


@dataclass(frozen=True)
class Joined(RoomEvent):
    nick: str = ""
    count: int = 0
    userhost: str = ""


@dataclass(frozen=True)
class Parted(RoomEvent):
    """`nick` left `room` but is still online."""

    nick: str = ""
    message: str = ""
    count: int = 0
    userhost: str = ""


@dataclass(frozen=True)
class Kicked(RoomEvent):
    """`by` (a room operator) removed `nick` from `room`."""

    nick: str = ""
    by: str = ""
    reason: str = ""
    count: int = 0
    userhost: str = ""  # the kicker's
    # The rooms the kicked user is still in, in join order: its own dialect uses them to say
    # where it now talks. Never encoded for anyone else.
    rooms_left: tuple[str, ...] = ()


@dataclass(frozen=True)
class TopicChanged(RoomEvent):
    by: str = ""
    topic: str = ""
    userhost: str = ""


@dataclass(frozen=True)
class ModeChanged(RoomEvent):
    """Room modes changed, in IRC notation: `modes` "+k", "-s", "+o"; `args` ("key",), ("bob",)."""

    by: str = ""
    modes: str = ""
    args: tuple[str, ...] = ()
    userhost: str = ""


@dataclass(frozen=True)
class Left(RoomEvent):
    """`nick` went offline. Announced once to each user sharing a room with it; `rooms` are the
    rooms it was in, `room` the first of them, `count` the users still online."""

    nick: str = ""
    reason: str = ""
    message: str = ""
    count: int = 0
    userhost: str = ""
    rooms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Renamed(RoomEvent):
    """A nickname changed; announced once to each user sharing a room with it, and to itself."""

    old: str = ""
    new: str = ""
    userhost: str = ""
    rooms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Batch:
    """Several room events that happened in a row, delivered as one queue entry.

    A client that pastes or scripts 50 lines is read in one `recv()`; handing each member one
    batch instead of 50 events is what keeps fan-out cheap (one lock round and one wake-up per
    member per batch).
    """

    events: tuple[RoomEvent, ...]


# Replies to one client only: not numbered, not cached.


@dataclass(frozen=True)
class Greeting:
    """Sent on connect, before the client has chosen a wire format; after the password in
    text mode when the server has one (then `password` says to ask for it first)."""

    online: int
    password: bool = False


@dataclass(frozen=True)
class Welcome:
    """`users`: at most SHOWN_USERS nicknames of the default room; `more_users`: the others."""

    nick: str
    room: str
    users: tuple[str, ...]
    ts: float
    more_users: int = 0


@dataclass(frozen=True)
class UserList:
    """The members of `room` (operators marked "@"), or everyone online when `room` is None."""

    room: str | None
    users: tuple[str, ...]
    ts: float


@dataclass(frozen=True)
class RoomView:
    """Sent to a user who joins (or switches to) a room: who is there, the topic, its modes.

    `users` are nicknames, operators first marked with "@" (IRC style). `switched` is True when
    a text or JSON user made `room` its current room.
    """

    room: str
    users: tuple[str, ...]
    topic: str
    topic_by: str
    topic_ts: float
    ts: float
    secret: bool = False
    has_key: bool = False
    switched: bool = True


@dataclass(frozen=True)
class RoomInfo:
    name: str
    count: int
    topic: str


@dataclass(frozen=True)
class RoomList:
    rooms: tuple[RoomInfo, ...]
    ts: float


@dataclass(frozen=True)
class TopicReply:
    room: str
    topic: str
    by: str
    ts: float


@dataclass(frozen=True)
class Notice:
    text: str
    ts: float


@dataclass(frozen=True)
class HelpText:
    ts: float


@dataclass(frozen=True)
class AwayStatus:
    """Whether `nick` is away (`text`, None: back): the answer to one's own `SetAway`, or told
    to whoever sends an away user a private message. `was_away` False: back, but it had not
    been away (a plain "/away" said "You are back", which was not true)."""

    nick: str
    text: str | None
    ts: float
    was_away: bool = True


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


@dataclass(frozen=True)
class History:
    """Stored messages sent to one client, oldest first: the replay when it joins a room
    (`replay`), or the answer to a history request. `target` is the room's name or, for a
    private conversation, the other user's nickname. `more`: older messages may exist (the
    answer is as long as asked)."""

    target: str
    events: tuple[RoomEvent, ...]
    ts: float
    replay: bool = False
    more: bool = False


# Message, Action, PrivateMessage, Joined, Parted, Kicked, TopicChanged, ModeChanged, Left and
# Renamed are RoomEvents.
Event = (
    RoomEvent
    | Batch
    | Greeting
    | Welcome
    | UserList
    | RoomView
    | RoomList
    | TopicReply
    | Notice
    | HelpText
    | Error
    | Pong
    | Goodbye
    | History
    | AwayStatus
)
