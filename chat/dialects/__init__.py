"""Dialects: what a client's lines mean. `TextJsonDialect` (text and JSON Lines) and `IrcDialect`.

A dialect turns lines into hub operations and events into bytes. It never touches a socket:
everything it sends goes through its `Link` (chat/connection.py implements it), so a dialect can
be driven in a test with a fake link and a real hub, without sockets or threads, the way h11
drives HTTP. The connection composes one dialect; it does not know which.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from chat import events as ev
from chat.config import ServerConfig
from chat.hub import (
    BadKey,
    BadRoomKey,
    BadRoomName,
    ChatError,
    HistoryOff,
    Hub,
    Member,
    NickTaken,
    NoMoreRooms,
    NoSuchNick,
    NoSuchRoom,
    NotInRoom,
    NotOperator,
    TooManyRooms,
    Unavailable,
    UserNotInRoom,
)
from chat.protocol import Line, ProtocolError, room_error
from chat.wire import EncodeCache


@runtime_checkable
class Peer(Protocol):
    """What a dialect may ask of the connection holding a nickname it wants."""

    def hung_up(self) -> bool:
        """Whether the client has closed its side already (never blocks)."""
        ...

    def drop(self, reason: str) -> None: ...

    def wait_gone(self, timeout: float) -> bool:
        """Waits up to `timeout` seconds until the connection has left the hub."""
        ...


class Link(Member, Protocol):
    """A dialect's handle on its own connection. Also what the hub knows of it (a Member)."""

    @property
    def address(self) -> tuple[str, int]: ...

    @property
    def ending(self) -> bool:
        """The connection is ending: the dialect should stop handling lines."""
        ...

    def send(self, data: bytes) -> None:
        """Queues a reply for this client alone and has it sent. A reply that does not fit in
        the send queue disconnects the client, the same rule as for any other line."""
        ...

    def send_pieces(self, pieces: Iterable[bytes]) -> None:
        """Sends a long reply (a list of every room, every user) piece by piece, waiting for
        this client to take each one (only this client's reader waits)."""
        ...

    def end(self, reason: str) -> bool:
        """Ends the connection after the current lines; True if this was the first reason."""
        ...

    def label(self) -> str:
        """ "address nick" for log lines."""
        ...


class Dialect(Protocol):
    """One client's protocol state. Every method but `encode` is called by the connection's
    reader thread alone; `encode` by whichever thread delivers an event (under the hub lock)."""

    @property
    def max_line_bytes(self) -> int: ...

    @property
    def registered(self) -> bool:
        """The client has a nickname (the registration deadline no longer applies)."""
        ...

    def greet(self) -> None:
        """The connection is open: say hello if this protocol's server speaks first."""
        ...

    def handle(self, lines: list[Line]) -> None:
        """The complete lines of one `recv()`."""
        ...

    def encode(self, event: ev.Event, cache: EncodeCache | None) -> bytes:
        """The bytes this client receives for a hub event; b"" for nothing."""
        ...

    def silence_limit(self) -> float | None:
        """How long a registered client may stay silent now (None: for ever)."""
        ...

    def on_silence(self) -> bool:
        """The client was silent for `silence_limit()`: True to keep reading (e.g. a PING was
        sent), False to end the connection as timed out."""
        ...

    def farewell(self, reason: str, message: str) -> None:
        """The connection ends for `reason` (timed out, line too long, ...): tell the client,
        in this protocol's words."""
        ...

    def finish(self, reason: str) -> None:
        """The reader's last act with the hub: leave it (announced once to everyone)."""
        ...


class DialectClass(Protocol):
    """What a listener serves: a dialect class (TextJsonDialect, IrcDialect)."""

    def __call__(self, link: Link, hub: Hub, config: ServerConfig) -> Dialect: ...

    def refusal(self, message: str) -> bytes:
        """The admission refusal ("server full, try again later") as this protocol says it,
        sent before any dialect exists."""
        ...


# How long a newcomer waits for the connection that holds its nickname to finish, once that
# connection's client is known to have hung up (it is leaving; this only waits for the leave).
RECLAIM_WAIT_S = 2.0


def reclaim_nick(hub: Hub, nick: str) -> bool:
    """Frees `nick` if its holder's client has already hung up; True if it is free now.

    A client that closes without QUIT and reconnects at once would otherwise find its own
    ghost holding its nickname for the moment its old reader needs to notice the close.
    """
    holder = hub.holder(nick)
    if not isinstance(holder, Peer) or not holder.hung_up():
        return False
    holder.drop(ev.LeaveReason.CONNECTION_LOST)
    return holder.wait_gone(RECLAIM_WAIT_S)


# Long replies are cut into pieces of at most this size at line ends (see Link.send_pieces); a
# piece must fit in the smallest send queue a server may be given, or it could never be sent.
REPLY_PIECE_BYTES = 16 * 1024


def piece_bytes(config: ServerConfig) -> int:
    """How big one piece of a long reply may be: REPLY_PIECE_BYTES, or half the send queue when
    that is smaller. A piece larger than the whole queue could never be queued: waiting for
    room for it would always time out and drop the client (`--sendq-bytes 4096` and `/rooms`)."""
    return max(1, min(REPLY_PIECE_BYTES, config.sendq_bytes // 2))


def split_lines(data: bytes, size: int = REPLY_PIECE_BYTES) -> list[bytes]:
    """`data` (whole lines) cut at line ends into pieces of at most `size` bytes (a single
    line longer than that is a piece of its own)."""
    pieces: list[bytes] = []
    start = 0
    while start < len(data):
        end = data.rfind(b"\n", start, start + size) + 1  # the last line end that fits
        if end <= start:  # one line longer than `size`: it goes alone
            end = data.find(b"\n", start) + 1 or len(data)
        if start + size >= len(data):
            end = len(data)
        pieces.append(data[start:end])
        start = end
    return pieces


def sentence(error: ChatError) -> ProtocolError:
    """The text/JSON error for a refusal of the hub: a code (docs/protocol.md) and a sentence a
    person can read."""
    # A name the hub did not find is echoed as sent: quoted, escapes and all, if it holds
    # anything a terminal would act on or that would not show.
    name = error.name if error.name.isprintable() else repr(error.name)
    match error:
        case NickTaken():
            return ProtocolError("nick_taken", f"nickname {name} is taken")
        case NoSuchNick():
            return ProtocolError("no_such_nick", f"there is nobody called {name} online")
        case NoSuchRoom():
            return ProtocolError("no_such_room", f"there is no room called {name}")
        case BadRoomName():
            return ProtocolError(
                "bad_room_name", room_error(error.name) or f"invalid room name {name}"
            )
        case NotInRoom():
            return ProtocolError("not_in_room", f"you are not in {name}: /join {name} first")
        case UserNotInRoom():
            return ProtocolError("user_not_in_room", f"{name} is not in that room")
        case BadRoomKey():
            return ProtocolError("bad_key", f"{name} needs the right key: /join {name} KEY")
        case NotOperator():
            return ProtocolError("not_operator", f"only operators of {name} can do that")
        case TooManyRooms(limit=limit):
            return ProtocolError(
                "too_many_rooms", f"you are in {limit} rooms, the most allowed: /part one first"
            )
        case NoMoreRooms(limit=limit):
            return ProtocolError(
                "too_many_rooms",
                f"the server has {limit} rooms, the most it allows: join an existing one",
            )
        case BadKey(problem=problem):
            return ProtocolError("bad_key", problem)
        case Unavailable(problem=problem):  # cluster (#12): the link to Redis is down
            return ProtocolError("unavailable", problem)
        case HistoryOff():  # history (#11)
            what = "private messages" if error.name else "history"
            return ProtocolError("history_off", f"this server keeps no {what}")
    return ProtocolError("bad_request", str(error))
