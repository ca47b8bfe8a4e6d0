"""Hub: the whole shared chat state (the nickname namespace and every room); owns THE lock.

Every operation is one short critical section: check and change the registry, number the event,
and hand it to each recipient's outbox with a non-blocking `deliver()`. No socket I/O, no waiting,
no callbacks into other locks happen under the lock, so one slow client can never stall the chat,
and every user sees the events in the same order (the order of the hub's ids).

There is one lock for the nickname namespace and all the rooms together, on purpose: an
operation that touches several rooms (a quit, a rename) or the namespace and a room (registering
into the default room) is still one critical section, and there is no lock order between rooms
to get wrong. The cost is that two rooms never run their broadcasts in parallel; each critical
section is a few dict operations plus one list append per recipient, so that is cheap next to
the socket I/O that happens outside it (docs/architecture.md).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, NamedTuple, Protocol

from chat import events as ev
from chat.protocol import (
    AWAY_MAX_CHARS,
    clean_text,
    clean_topic,
    in_order,
    key_error,
    nick_key,
    room_error,
    room_key,
)
from chat.store import (
    MAX_EVENT_ID,
    MAX_HISTORY_LIMIT,
    HistoryEvent,
    HistoryQuery,
    HistoryStore,
    RoomRecord,
    conversation_key,
)
from chat.wire import EncodeCache

DEFAULT_ROOM = "#lobby"
# Rooms one user may be in at once (advertised to IRC clients as CHANLIMIT), and rooms on the
# whole server. Each room costs about 1 KiB; without a limit one IRC connection created ~850
# rooms a second. Both are options of chat-server.
DEFAULT_ROOMS_PER_USER = 25
DEFAULT_MAX_ROOMS = 1000
# Joins, parts and quits in a room with more members than this are told only to the user who
# joins or parts, not to everyone: 10,000 users arriving in one room would otherwise be 50
# million join notices, and as many again when they leave (large IRC networks and streaming
# chats do the same). Member lists, counts, kicks, topics and modes stay exact. 0: never quiet.
DEFAULT_QUIET_ROOM_SIZE = 200
# At most this many nicknames in a welcome (the rest are counted: `Welcome.more_users`).
WELCOME_USERS = ev.SHOWN_USERS
# History (#11): messages replayed to a user joining a room, from the room's in-memory tail.
DEFAULT_REPLAY = 50
# A replay is delivered under the lock with the join, so it must fit in the newcomer's send
# queue with room to spare: at most this many bytes (estimated: twice the UTF-8 text plus a
# line's overhead), the oldest left out first.
DEFAULT_REPLAY_BYTES = 64 * 1024


class Member(Protocol):
    """What the hub needs of a connection; any front-end (text, JSON, IRC) can be one."""

    def deliver(self, event: ev.Event, cache: EncodeCache | None = None) -> bool:
        """Queues `event` for the client without blocking; False if its send queue is full.
        Called under the hub lock; `cache` is shared by the recipients of one fan-out."""
        ...

    def flush(self) -> None:
        """Has what is queued sent soon (chat/sender.py); never blocks; called outside the hub
        lock."""
        ...

    def drop(self, reason: str) -> None:
        """Disconnects the client with `reason`; called outside the hub lock."""
        ...


def _plain_dict(role: str) -> dict[Any, Any]:
    return {}


class Muted:
    """Cluster (#12): the threads whose events go to nobody. A cluster node applying again a
    request it already delivered before Redis lost its data (the reply of the append was lost,
    the retry went into the new stream) applies it to its replica like every node, but its
    users do not get it twice (chat/cluster/hub.py's follower marks itself around it).

    Not a `threading.local`: every hub operation asks, and reading a thread-local makes the
    asking thread its own dict, kept as long as the thread: 0.28 KiB for every reader that
    ever delivered an event (#14, memory per client). Here a reader reads one attribute.

    Thread safety: `threads` is replaced whole (one assignment, read without a lock); `_lock`
    (a leaf lock) makes two followers' changes (two nodes in one process) not lose each other.
    """

    __slots__ = ("_lock", "threads")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.threads: frozenset[int] = frozenset()

    def mark(self, on: bool) -> None:
        """The calling thread's events go to nobody (on) or to their members again (off)."""
        me = threading.get_ident()
        with self._lock:
            self.threads = self.threads | {me} if on else self.threads - {me}

    def here(self) -> bool:
        """Whether the calling thread is marked (one attribute read when none is)."""
        threads = self.threads
        return bool(threads) and threading.get_ident() in threads


muted = Muted()


class _Handover:
    """Who got an event under the lock: flush them, or drop those who refused, after it."""

    __slots__ = ("refused", "took")

    def __init__(self) -> None:
        self.took: list[Member] = []
        self.refused: list[Member] = []

    def give_locked(self, members: Iterable[Member], event: ev.Event) -> _Handover:
        if muted.here():  # a cluster node's repeat of a delivered request
            return self
        cache = EncodeCache()  # each wire format encodes the event once for all of them
        for member in members:
            (self.took if member.deliver(event, cache) else self.refused).append(member)
        return self

    def complete(self) -> None:
        """Outside the lock: the I/O part of the operation."""
        for member in self.refused:
            member.drop(ev.LeaveReason.SENDQ_EXCEEDED)
        for member in self.took:
            member.flush()


class ChatError(Exception):
    """A request the hub refuses; `name` is the nickname or room it is about."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self.name = name


class NickTaken(ChatError):
    pass


class NoSuchNick(ChatError):
    pass


class NoSuchRoom(ChatError):
    pass


class BadRoomName(ChatError):
    pass


class NotInRoom(ChatError):
    """The user asking is not in the room (IRC 442, or 404 for a message)."""


class UserNotInRoom(ChatError):
    """The user acted upon is not in the room (IRC 441)."""


class BadRoomKey(ChatError):
    pass


class NotOperator(ChatError):
    pass


class TooManyRooms(ChatError):
    """The user is in as many rooms as one user may be (`limit`)."""

    def __init__(self, name: str = "", limit: int = 0) -> None:
        super().__init__(name)
        self.limit = limit


class NoMoreRooms(ChatError):
    """The server has as many rooms as it allows (`limit`); joining an existing one works."""

    def __init__(self, name: str = "", limit: int = 0) -> None:
        super().__init__(name)
        self.limit = limit


class HistoryOff(ChatError):
    """This server keeps no history (--no-history), or no private history (#11)."""


class BadKey(ChatError):
    """A key that cannot be a room key; `problem` says why."""

    def __init__(self, name: str = "", problem: str = "") -> None:
        super().__init__(name)
        self.problem = problem


# -- cluster (#12): a hub linked to other processes (chat/cluster) may fail in these ways --------
class Unavailable(ChatError):
    """The chat cannot do it now: the cluster link is down; `problem` says what happened."""

    def __init__(self, name: str = "", problem: str = "") -> None:
        super().__init__(name)
        self.problem = problem


class LinkError(Exception):
    """A hub could not open its link to other processes (chat/cluster); one clear sentence."""


# -- end of cluster (#12) --------------------------------------------------------------------


@dataclass(eq=False)
class RoomState:
    """One room's state; only ever touched with the hub lock held."""

    name: str
    permanent: bool = False
    members: dict[Member, None] = field(default_factory=dict)  # insertion-ordered set
    ops: set[Member] = field(default_factory=set)
    topic: str = ""
    topic_by: str = ""
    topic_ts: float = 0.0
    key: str = ""
    secret: bool = False
    # History (#11): who created the room (its operator when it comes back after a restart or
    # after being empty), and its last messages, replayed to newcomers (None: history is off).
    creator: str = ""
    created_ts: float = 0.0
    recent: deque[HistoryEvent] | None = None
    saved: bool = False  # the store has its record


def record_of(state: RoomState) -> RoomRecord:
    """What the store keeps of a room (the hub lock is held)."""
    return RoomRecord(
        state.name,
        state.topic,
        state.topic_by,
        state.topic_ts,
        state.key,
        state.secret,
        state.creator,
        state.created_ts,
    )


class Identity(NamedTuple):
    """Who a user is, as WHOIS and WHO tell it: the nick as spelled, "user@host", the real
    name (the nick for whoever gave none) and the away message (None: here)."""

    nick: str
    userhost: str
    realname: str
    away: str | None


class Hub:
    """The users online, by nickname, and the rooms they are in.

    Thread safety: `_lock` guards everything: `_by_key` and `_nick_of` (the one nickname
    namespace of every front-end), `_userhost`, `_realname`, `_away`, `_rooms` (room key ->
    RoomState), `_rooms_of` (member -> the keys of its rooms, in join order), `_most_users` and
    `_next_id`. Each public method takes it once, briefly; while holding it a method only
    touches these dicts, builds one event and calls recipients' `deliver()`, which takes only
    the recipient's own outbox lock (lock order: hub lock, then outbox lock; never the reverse).
    Members whose outbox is full are collected and dropped after the lock is released, because
    dropping one is I/O.

    History (#11): the lock also guards `_dormant` (empty rooms history keeps) and each room's
    `recent` replay buffer. `store.offer_event` / `offer_room` are called under the lock and
    never block (an append to the writer's queue, chat/store); `store.history` is called
    without it, in the asking reader's thread (`history()`), and may wait for the disk.

    `lock_factory` and `dict_factory` exist for the classroom (chat/classroom.py), which runs
    this very code without its lock and with dicts that widen the race windows:
    `dict_factory(role)` makes the two nickname dicts (role "registry") and the default room's
    member dict (role "members").
    """

    def __init__(
        self,
        name: str = DEFAULT_ROOM,
        *,
        clock: Callable[[], float] = time.time,
        rooms_per_user: int = DEFAULT_ROOMS_PER_USER,
        max_rooms: int = DEFAULT_MAX_ROOMS,
        quiet_room_size: int = DEFAULT_QUIET_ROOM_SIZE,
        lock_factory: Callable[[], AbstractContextManager[Any]] = threading.Lock,
        dict_factory: Callable[[str], dict[Any, Any]] = _plain_dict,
        store: HistoryStore | None = None,
        replay: int = DEFAULT_REPLAY,
        replay_bytes: int = DEFAULT_REPLAY_BYTES,
        store_private: bool = False,
    ) -> None:
        problem = room_error(name)
        if problem is not None:
            raise ValueError(problem)
        self.name = name  # the default room, where text and JSON users land
        self.rooms_per_user = rooms_per_user
        self.max_rooms = max_rooms
        self.quiet_room_size = quiet_room_size
        self._hushed = False  # the server is stopping: every room is quiet (hush())
        self._clock = clock
        self._lock = lock_factory()
        self._by_key: dict[str, tuple[str, Member]] = dict_factory("registry")  # key -> holder
        self._nick_of: dict[Member, str] = dict_factory("registry")
        self._userhost: dict[Member, str] = {}
        # An IRC user's real name (USER's last parameter: WHOIS, WHO); only those who gave one
        # other than their nick have an entry (text and JSON users give none).
        self._realname: dict[Member, str] = {}
        self._away: dict[Member, str] = {}  # IRC's AWAY: those away, and why
        self._most_users = 0  # the most users online at once since the start (IRC's LUSERS)
        lobby = RoomState(name, permanent=True, members=dict_factory("members"))
        self._rooms: dict[str, RoomState] = {room_key(name): lobby}
        self._rooms_of: dict[Member, dict[str, None]] = {}
        self._next_id = 1
        # -- history (#11) --
        self.store = store
        self.replay = replay
        self.replay_bytes = replay_bytes
        self.store_private = store_private
        # Rooms with no one in them that history keeps (their topic, key, secret flag, creator
        # and last messages): they come back as they were when someone joins. Not counted in
        # max_rooms, but at most max_rooms of them are kept (the longest dormant is forgotten
        # first: `_rest_locked`); listed by /rooms with 0 users.
        self._dormant: dict[str, RoomState] = {}
        if store is not None:
            lobby.recent = deque(maxlen=replay)

    # -- queries -------------------------------------------------------------------------------

    def nicks(self) -> tuple[str, ...]:
        """A sorted snapshot of the nicknames online (every room, every front-end)."""
        with self._lock:
            return tuple(in_order(self._nick_of.values(), key=nick_key))

    def users(self) -> ev.UserList:
        """Everyone online, in every room (text `/users`, JSON `users`)."""
        return ev.UserList(None, self.nicks(), self._clock())

    def who(self, asker: Member, room: str) -> ev.UserList:
        """The members of `room`, operators marked "@"; raises NoSuchRoom (also for a secret
        room `asker` is not in: its existence is not told)."""
        with self._lock:
            state = self._visible_state_locked(asker, room)
            return ev.UserList(state.name, self._users_locked(state), self._clock())

    def holder(self, nick: str) -> Member | None:
        """Who holds `nick` now (to check whether its client has already hung up)."""
        with self._lock:
            found = self._by_key.get(nick_key(nick))
            return None if found is None else found[1]

    def __len__(self) -> int:
        with self._lock:
            return len(self._nick_of)

    def identity_of(self, nick: str) -> Identity | None:
        """Who the user called `nick` is (WHOIS, WHO), or None if nobody is."""
        with self._lock:
            holder = self._by_key.get(nick_key(nick))
            if holder is None:
                return None
            nick, member = holder
            return Identity(
                nick,
                self._userhost.get(member, ""),
                self._realname.get(member, nick),
                self._away.get(member),
            )

    def set_away(self, member: Member, message: str) -> str | None:
        """Marks `member` away with `message` (cleaned, cut to AWAY_MAX_CHARS), or back if it
        is empty; returns the message kept (None: back). Only those who ask learn it (WHOIS,
        WHO, a private message's answer): nothing is announced."""
        message = clean_text(message)[:AWAY_MAX_CHARS].strip()
        with self._lock:
            if member not in self._nick_of or not message:
                self._away.pop(member, None)
                return None
            self._away[member] = message
            return message

    def rooms_of(self, member: Member) -> tuple[str, ...]:
        """The names of the rooms `member` is in, in the order it joined them."""
        with self._lock:
            return tuple(self._rooms[k].name for k in self._rooms_of.get(member, ()))

    def visible_rooms_of(self, nick: str, asker: Member) -> tuple[str, ...] | None:
        """The rooms of the user `nick` that `asker` may know about (WHOIS); None: no such nick."""
        with self._lock:
            holder = self._by_key.get(nick_key(nick))
            if holder is None:
                return None
            states = [self._rooms[k] for k in self._rooms_of.get(holder[1], ())]
            return tuple(
                ("@" if holder[1] in s.ops else "") + s.name
                for s in states
                if not s.secret or asker in s.members
            )

    def room_names(self, room: str, asker: Member) -> tuple[str, tuple[str, ...]] | None:
        """(room name, its users, operators marked "@"), or None if `asker` may not see it."""
        with self._lock:
            state = self._rooms.get(room_key(room))
            if state is None or (state.secret and asker not in state.members):
                return None
            return state.name, self._users_locked(state)

    def room_modes(self, room: str, asker: Member) -> tuple[str, bool, str, bool] | None:
        """(room name, has a key, the key, secret), or None if there is no such room or it is
        secret and `asker` is not in it. Anyone may learn that a room has a key (a join needs
        to know), but the key itself is "" for non-members: only members may see it."""
        with self._lock:
            state = self._rooms.get(room_key(room))
            if state is None or (state.secret and asker not in state.members):
                return None
            key = state.key if asker in state.members else ""
            return state.name, bool(state.key), key, state.secret

    def list_rooms(self, asker: Member) -> ev.RoomList:
        """The rooms with their member counts; secret ones only to their members."""
        with self._lock:
            rooms = tuple(
                ev.RoomInfo(s.name, len(s.members), s.topic)
                for s in self._rooms.values()
                if not s.secret or asker in s.members
            ) + tuple(  # rooms kept by history, empty now (#11)
                ev.RoomInfo(s.name, 0, s.topic) for s in self._dormant.values() if not s.secret
            )
            return ev.RoomList(rooms, self._clock())

    def topic(self, asker: Member, room: str) -> ev.TopicReply:
        """The topic of `room`; raises NoSuchRoom (also for a secret room `asker` is not in)."""
        with self._lock:
            state = self._visible_state_locked(asker, room)
            return ev.TopicReply(state.name, state.topic, state.topic_by, state.topic_ts)

    def room_count(self) -> int:
        with self._lock:
            return len(self._rooms)

    def counts(self) -> tuple[int, int, int]:
        """(users online, the most ever online at once, rooms), read at one moment."""
        with self._lock:
            return len(self._nick_of), self._most_users, len(self._rooms)

    def hush(self) -> None:
        """The server is stopping and everyone is leaving: from now on joins and leaves are
        told to nobody but the user concerned, as in a quiet room. Telling each of 10,000
        leaving users about the others would be 50 million events nobody reads."""
        with self._lock:
            self._hushed = True

    # -- cluster (#12): ChatServer opens the hub before it listens, closes it after the readers.
    # A hub of one process has nothing to open; chat/cluster's ClusterHub links to Redis here.

    def open(self) -> None:
        """Links the hub to its peers, if it has any; raises LinkError."""

    def close(self) -> None:
        """Unlinks it and joins any thread `open()` started."""

    def barrier(self) -> None:
        """Returns once everything the chat did before the call has been delivered here (a
        ping is a delivery barrier). One process: at once; a cluster node waits until it has
        applied the stream as far as it went when asked."""

    def attach_sender(self, wait_sent: Callable[[float], bool]) -> None:
        """`wait_sent(timeout)` waits until the sender has sent what is queued (the server's
        `Sender.wait_idle`). One process: not needed (each reader's turn is one recv());
        a cluster node's follower waits on it now and then (#12: chat/cluster/hub.py)."""

    # -- the nickname namespace ----------------------------------------------------------------

    def register(self, member: Member, nick: str, userhost: str = "", realname: str = "") -> None:
        """Claims `nick` for `member`, atomically (of two claims of one nick, one wins); enters
        no room (IRC users choose theirs). Raises NickTaken."""
        with self._lock:
            self._claim_locked(member, nick, userhost)
            if realname and realname != nick:
                self._realname[member] = realname

    def join(self, member: Member, nick: str, userhost: str = "") -> ev.Welcome:
        """Registers `member` as `nick` and puts it in the default room, in one step.

        Raises NickTaken. Everyone in the room, the newcomer included, gets a `Joined` event
        (only the newcomer if the room is quiet: `_told_locked`); the newcomer gets its
        `Welcome` first.
        """
        with self._lock:
            self._claim_locked(member, nick, userhost)
            state = self._rooms[room_key(self.name)]
            state.members[member] = None
            self._rooms_of.setdefault(member, {})[room_key(self.name)] = None
            welcome = self._welcome_locked(nick, state)
            # The welcome goes first, so the newcomer's stream starts with it.
            welcomed = member.deliver(welcome)
            handover = self._publish_locked(
                self._told_locked(state, member),
                lambda i, ts: ev.Joined(
                    i, ts, state.name, nick=nick, count=len(state.members), userhost=userhost
                ),
            )
            if not welcomed or not self._replay_locked(member, state):
                handover.refused.append(member)  # too big for its send queue: as any line
        handover.complete()
        return welcome

    def leave(self, member: Member, reason: str, message: str = "") -> bool:
        """Unregisters `member`, takes it out of every room, and tells each user who shared a
        room with it why, once (not those who only share quiet rooms with it: `_told_locked`);
        False if it was not registered."""
        message = clean_text(message)
        with self._lock:
            nick = self._nick_of.pop(member, None)
            if nick is None:
                return False
            del self._by_key[nick_key(nick)]
            userhost = self._userhost.pop(member, "")
            self._realname.pop(member, None)
            self._away.pop(member, None)
            keys = list(self._rooms_of.pop(member, {}))
            states = [self._rooms[k] for k in keys]
            loud = [s for s in states if not self._quiet_locked(s)]  # counted before it leaves
            for state in states:
                self._remove_locked(state, member)
            recipients = self._union_locked(loud)
            rooms = tuple(s.name for s in states)
            handover = self._publish_locked(
                recipients,
                lambda i, ts: ev.Left(
                    i,
                    ts,
                    rooms[0] if rooms else self.name,
                    nick=nick,
                    reason=reason,
                    message=message,
                    count=len(self._nick_of),
                    userhost=userhost,
                    rooms=rooms,
                ),
            )
        handover.complete()
        return True

    def rename(self, member: Member, new: str) -> None:
        """Renames `member` to `new` (check-and-set, like join); raises NickTaken. The member and
        everyone sharing a room with it hear about it, once."""
        with self._lock:
            old = self._nick_of[member]
            holder = self._by_key.get(nick_key(new))
            if holder is not None and holder[1] is not member:
                raise NickTaken(new)
            if old == new:
                return
            del self._by_key[nick_key(old)]
            self._by_key[nick_key(new)] = (new, member)
            self._nick_of[member] = new
            states = [self._rooms[k] for k in self._rooms_of.get(member, ())]
            recipients = self._union_locked(states)
            recipients[member] = None
            userhost = self._userhost.get(member, "")
            rooms = tuple(s.name for s in states)
            handover = self._publish_locked(
                recipients,
                lambda i, ts: ev.Renamed(
                    i,
                    ts,
                    rooms[0] if rooms else self.name,
                    old=old,
                    new=new,
                    userhost=userhost,
                    rooms=rooms,
                ),
            )
        handover.complete()

    # -- rooms ---------------------------------------------------------------------------------

    def enter(self, member: Member, room: str, key: str = "", *, show_if_in: bool = True) -> bool:
        """Puts `member` in `room`, creating it (with `member` as its operator) if needed.

        Everyone in the room, the newcomer included, gets a `Joined`; then the newcomer gets a
        `RoomView`. If it was in the room already, nothing is announced and it gets the view
        only if `show_if_in` (a text user switching rooms). Returns whether it joined.
        Raises BadRoomName, BadRoomKey, TooManyRooms, NoMoreRooms.
        """
        problem = room_error(room)
        if problem is not None:
            raise BadRoomName(room)
        with self._lock:
            nick = self._nick_of[member]
            k = room_key(room)
            state = self._rooms.get(k)
            if state is not None and member in state.members:
                if not show_if_in:
                    return False
                handover = _Handover().give_locked([member], self._view_locked(state))
                joined = False
            else:
                if len(self._rooms_of.get(member, ())) >= self.rooms_per_user:
                    raise TooManyRooms(room, self.rooms_per_user)
                if state is None and k in self._dormant:  # history kept it (#11)
                    state = self._revive_locked(k, member, nick, key)
                elif state is None:
                    if len(self._rooms) >= self.max_rooms:
                        raise NoMoreRooms(room, self.max_rooms)
                    state = self._rooms[k] = RoomState(room)
                    state.ops.add(member)
                    if self.store is not None:
                        state.creator, state.created_ts = nick, self._clock()
                        state.recent = deque(maxlen=self.replay)
                elif state.key and key != state.key:
                    raise BadRoomKey(state.name)
                elif not state.ops and state.creator and nick_key(state.creator) == nick_key(nick):
                    state.ops.add(member)  # its creator, back in a room with no operator (#11)
                handover = self._enter_locked(member, nick, state)
                joined = True
        handover.complete()
        return joined

    def _enter_locked(self, member: Member, nick: str, state: RoomState) -> _Handover:
        """Adds `member` to `state`, tells everyone there, then shows the newcomer the room."""
        state.members[member] = None
        self._rooms_of.setdefault(member, {})[room_key(state.name)] = None
        userhost = self._userhost.get(member, "")
        name = state.name
        handover = self._publish_locked(
            self._told_locked(state, member),
            lambda i, ts: ev.Joined(
                i, ts, name, nick=nick, count=len(state.members), userhost=userhost
            ),
        )
        # else: in `handover.took`, flushed (the replay, if any, right after the view)
        if not member.deliver(self._view_locked(state)) or not self._replay_locked(member, state):
            handover.refused.append(member)
        return handover

    def part(self, member: Member, room: str, message: str = "") -> None:
        """Takes `member` out of `room`; everyone there, the parting member included, gets a
        `Parted` (only the parting member if the room is quiet). Raises NoSuchRoom, NotInRoom."""
        message = clean_text(message)
        with self._lock:
            state = self._member_state_locked(member, room)
            nick = self._nick_of[member]
            userhost = self._userhost.get(member, "")
            handover = self._publish_locked(
                self._told_locked(state, member),
                lambda i, ts: ev.Parted(
                    i,
                    ts,
                    state.name,
                    nick=nick,
                    message=message,
                    count=len(state.members) - 1,
                    userhost=userhost,
                ),
            )
            del self._rooms_of[member][room_key(state.name)]
            self._remove_locked(state, member)
        handover.complete()

    def kick(self, member: Member, room: str, nick: str, reason: str = "") -> None:
        """A room operator removes `nick` from `room`; everyone there (the target included)
        gets a `Kicked`. Raises NoSuchRoom, NotInRoom, NotOperator, NoSuchNick, UserNotInRoom."""
        reason = clean_text(reason)
        with self._lock:
            state = self._member_state_locked(member, room)
            if member not in state.ops:
                raise NotOperator(state.name)
            holder = self._by_key.get(nick_key(nick))
            if holder is None:
                raise NoSuchNick(nick)
            target_nick, target = holder
            if target not in state.members:
                raise UserNotInRoom(target_nick)
            by = self._nick_of[member]
            userhost = self._userhost.get(member, "")
            rooms_left = tuple(
                self._rooms[k].name for k in self._rooms_of[target] if k != room_key(state.name)
            )
            handover = self._publish_locked(
                state.members,
                lambda i, ts: ev.Kicked(
                    i,
                    ts,
                    state.name,
                    nick=target_nick,
                    by=by,
                    reason=reason or by,
                    count=len(state.members) - 1,
                    userhost=userhost,
                    rooms_left=rooms_left,
                ),
            )
            del self._rooms_of[target][room_key(state.name)]
            self._remove_locked(state, target)
        handover.complete()

    def set_topic(self, member: Member, room: str, topic: str) -> None:
        """Sets the topic of a room `member` is in; everyone there gets a `TopicChanged`."""
        topic = clean_topic(topic)
        with self._lock:
            state = self._member_state_locked(member, room)
            by = self._nick_of[member]
            state.topic, state.topic_by, state.topic_ts = topic, by, self._clock()
            self._save_room_locked(state)
            handover = self._publish_locked(
                state.members,
                lambda i, ts: ev.TopicChanged(
                    i, ts, state.name, by=by, topic=topic, userhost=self._userhost.get(member, "")
                ),
            )
        handover.complete()

    def set_modes(
        self, member: Member, room: str, changes: Iterable[tuple[str, str]]
    ) -> tuple[str, tuple[str, ...]]:
        """A room operator changes modes: ("+k", key), ("-k", ""), ("+s", ""), ("-s", ""),
        ("+o", nick), ("-o", nick). Everyone in the room gets one `ModeChanged` with what really
        changed, which is also returned. Raises NoSuchRoom, NotInRoom, NotOperator, NoSuchNick,
        UserNotInRoom, BadKey (checked before anything changes)."""
        changes = list(changes)
        with self._lock:
            state = self._member_state_locked(member, room)
            if member not in state.ops:
                raise NotOperator(state.name)
            for mode, arg in changes:  # after the operator check: refuse in that order
                if mode == "+k" and (problem := key_error(arg)) is not None:
                    raise BadKey(state.name, problem)
            targets: dict[str, Member] = {}
            for mode, arg in changes:
                if mode[1] == "o":
                    holder = self._by_key.get(nick_key(arg))
                    if holder is None:
                        raise NoSuchNick(arg)
                    if holder[1] not in state.members:
                        raise UserNotInRoom(holder[0])
                    targets[arg] = holder[1]
            applied: list[tuple[str, str]] = []
            for mode, arg in changes:
                if mode == "+k" and arg and arg != state.key:
                    state.key = arg
                    applied.append((mode, arg))
                elif mode == "-k" and state.key:
                    state.key = ""
                    applied.append((mode, "*"))
                elif mode in ("+s", "-s") and state.secret != (mode == "+s"):
                    state.secret = mode == "+s"
                    applied.append((mode, ""))
                elif mode in ("+o", "-o"):
                    target = targets[arg]
                    if (target in state.ops) != (mode == "+o"):
                        (state.ops.add if mode == "+o" else state.ops.discard)(target)
                        applied.append((mode, self._nick_of[target]))
            if not applied:
                return "", ()
            if any(m[1] in "ks" for m, _ in applied):
                self._save_room_locked(state)
            modes = _mode_string([m for m, _ in applied])
            args = tuple(a for _, a in applied if a)
            by = self._nick_of[member]
            handover = self._publish_locked(
                state.members,
                lambda i, ts: ev.ModeChanged(
                    i,
                    ts,
                    state.name,
                    by=by,
                    modes=modes,
                    args=args,
                    userhost=self._userhost.get(member, ""),
                ),
            )
        handover.complete()
        return modes, args

    # -- talking -------------------------------------------------------------------------------

    def say(
        self, member: Member, *texts: str, room: str | None = None, notice: bool = False
    ) -> None:
        """Messages to everyone else in `room` (default: the default room); the sender knows
        what it wrote. Raises NoSuchRoom, NotInRoom.

        Several texts become consecutive messages handed over as one `Batch`: one trip through
        the lock and one queue entry per member, however many lines the sender pasted.
        """
        texts = tuple(clean_text(text) for text in texts)  # whichever front-end sent them
        with self._lock:
            state = self._member_state_locked(member, room or self.name)
            nick = self._nick_of[member]
            userhost = self._userhost.get(member, "")
            messages = tuple(
                ev.Message(
                    self._take_id_locked(),
                    self._clock(),
                    state.name,
                    sender=nick,
                    text=text,
                    userhost=userhost,
                    notice=notice,
                )
                for text in texts
            )
            event: ev.Event = messages[0] if len(messages) == 1 else ev.Batch(messages)
            self._record_locked(state, messages)
            others = (m for m in state.members if m is not member)
            handover = _Handover().give_locked(others, event)
        handover.complete()

    def act(self, member: Member, text: str, room: str | None = None, *, echo: bool = True) -> None:
        """An action (`/me`) in `room` (default: the default room), shown to its author too if
        `echo`. Raises NoSuchRoom, NotInRoom."""
        text = clean_text(text)
        with self._lock:
            state = self._member_state_locked(member, room or self.name)
            nick = self._nick_of[member]
            action = ev.Action(
                self._take_id_locked(),
                self._clock(),
                state.name,
                sender=nick,
                text=text,
                userhost=self._userhost.get(member, ""),
            )
            self._record_locked(state, (action,))
            skip = None if echo else member
            handover = _Handover().give_locked((m for m in state.members if m is not skip), action)
        handover.complete()

    def whisper(
        self,
        member: Member,
        to: str,
        text: str,
        *,
        echo: bool = True,
        notice: bool = False,
        action: bool = False,
    ) -> None:
        """A private message to the user called `to`, copied to its sender if `echo`;
        raises NoSuchNick."""
        text = clean_text(text)
        with self._lock:
            sender = self._nick_of[member]
            target = self._by_key.get(nick_key(to))
            if target is None:
                raise NoSuchNick(to)
            recipient_nick, recipient = target
            event = ev.PrivateMessage(
                self._take_id_locked(),
                self._clock(),
                "",
                sender=sender,
                recipient=recipient_nick,
                text=text,
                userhost=self._userhost.get(member, ""),
                notice=notice,
                action=action,
            )
            if self.store is not None and self.store_private:  # --history-private (#11)
                self.store.offer_event(event)
            recipients = {recipient: None, member: None} if echo else {recipient: None}
            handover = _Handover().give_locked(recipients, event)
        handover.complete()

    def announce(self, text: str) -> None:
        """A server notice to every user online."""
        with self._lock:
            notice = ev.Notice(text=text, ts=self._clock())
            handover = _Handover().give_locked(self._nick_of, notice)
        handover.complete()

    # -- checks --------------------------------------------------------------------------------

    def check_invariants(self) -> list[str]:
        """What is wrong with the registry, if anything (the audit at shutdown, and tests).

        The two nickname dicts must describe the same members: every nickname maps to a member
        known by that nickname (else a ghost answers to it), and every member can be found by its
        own nickname (else it is lost: unreachable by /msg, its name free for someone else).
        Every room member is online and knows it is in the room, and the other way round; only
        the default room may be empty. What is kept per user (user@host, real name, away) is
        kept for users online only (else every departed user would leave it behind).
        """
        with self._lock:
            by_key = dict(self._by_key)
            nick_of = dict(self._nick_of)
            rooms = {k: (s.name, dict(s.members), set(s.ops)) for k, s in self._rooms.items()}
            rooms_of = {m: dict(keys) for m, keys in self._rooms_of.items()}
            kept = [
                ("user@host", list(self._userhost)),
                ("real name", list(self._realname)),
                ("away message", list(self._away)),
            ]
        problems = [
            f"left behind: the {what} of {member!r}, who is offline"
            for what, members in kept
            for member in members
            if member not in nick_of
        ]
        problems += [
            f"ghost: {nick!r} is registered to a client that no longer has that name"
            for nick, member in by_key.values()
            if nick_of.get(member) != nick
        ]
        for member, nick in nick_of.items():
            holder = by_key.get(nick_key(nick))
            if holder is None or holder[1] is not member:
                problems.append(f"lost member: {nick!r} ({member!r}) is unreachable by its name")
        for k, (name, members, ops) in rooms.items():
            if not members and k != room_key(self.name):
                problems.append(f"empty room {name!r} was not removed")
            for member in members:
                if member not in nick_of:
                    problems.append(f"room {name!r} holds {member!r}, who is offline")
                elif k not in rooms_of.get(member, {}):
                    problems.append(f"{nick_of[member]!r} is in {name!r} without knowing it")
            if not ops <= set(members):
                problems.append(f"room {name!r} has an operator who is not in it")
        for member, keys in rooms_of.items():
            for k in keys:
                if k not in rooms or member not in rooms[k][1]:
                    problems.append(f"{member!r} thinks it is in {k!r} but is not")
        return problems

    # -- helpers -------------------------------------------------------------------------------

    def _claim_locked(self, member: Member, nick: str, userhost: str) -> None:
        key = nick_key(nick)
        if key in self._by_key:
            raise NickTaken(nick)
        # Memory per idle client (#14): a nick already in its folded form is its own key (not
        # a second copy), and the member's room set is made by its first room (setdefault).
        self._by_key[nick if key == nick else key] = (nick, member)
        self._nick_of[member] = nick
        self._userhost[member] = userhost or f"{nick}@chat"
        self._most_users = max(self._most_users, len(self._nick_of))

    def _member_state_locked(self, member: Member, room: str) -> RoomState:
        state = self._visible_state_locked(member, room)
        if member not in state.members:
            raise NotInRoom(state.name)
        return state

    def _visible_state_locked(self, asker: Member, room: str) -> RoomState:
        """The room, if `asker` may know it exists: a secret room is "no such room" to
        everyone outside it, whatever they ask (topic, modes, who, a message)."""
        state = self._rooms.get(room_key(room))
        if state is None or (state.secret and asker not in state.members):
            raise NoSuchRoom(room)
        return state

    def _remove_locked(self, state: RoomState, member: Member) -> None:
        state.members.pop(member, None)
        state.ops.discard(member)
        if not state.members and not state.permanent:
            del self._rooms[room_key(state.name)]
            if state.saved:  # its record is in the store: it stays, empty (#11)
                self._rest_locked(state)

    def _recall_locked(self, record: RoomRecord) -> None:
        """Brings back a room the store (or a cluster snapshot) kept: its record goes into the
        room of that name if it is in use, or into a dormant room; its replay buffer starts
        empty."""
        k = room_key(record.name)
        state = self._rooms.get(k) or RoomState(record.name)
        state.topic, state.topic_by, state.topic_ts = record.topic, record.topic_by, record.topic_ts
        state.key, state.secret = record.key, record.secret
        state.creator, state.created_ts = record.creator, record.created_ts
        state.recent = deque(maxlen=self.replay)
        state.saved = True
        if k not in self._rooms:
            self._rest_locked(state)

    def _rest_locked(self, state: RoomState) -> None:
        """Keeps an empty room that history knows, dormant. At most `max_rooms` are kept, or
        someone creating, talking in and leaving rooms in a loop would grow the server's memory
        without end: the one dormant longest is forgotten (by the hub only: its messages stay in
        the store; joining it again makes a new room of that name, whose members may read them)."""
        self._dormant[room_key(state.name)] = state
        while len(self._dormant) > max(self.max_rooms, 0):
            del self._dormant[next(iter(self._dormant))]

    def _quiet_locked(self, state: RoomState) -> bool:
        """Whether joins and leaves in `state` (counting the user who joins or leaves) are told
        only to that user (DEFAULT_QUIET_ROOM_SIZE, or hush())."""
        return self._hushed or 0 < self.quiet_room_size < len(state.members)

    def _told_locked(self, state: RoomState, member: Member) -> Iterable[Member]:
        """Who hears that `member` (in `state` now) joins or leaves it: everyone there, or, in
        a quiet room, `member` alone (its own join echo and part)."""
        return (member,) if self._quiet_locked(state) else state.members

    def _welcome_locked(self, nick: str, state: RoomState) -> ev.Welcome:
        """At most WELCOME_USERS names: the room's longest-present members, sorted (taking them
        costs the same in a room of 10,000 as in a room of 10); the others are counted."""
        # keys(), not the dict itself: the classroom's slow-motion dict (chat/classroom.py)
        # pauses in __iter__ to widen the broadcast's race, and this list is not that race.
        firsts = islice(state.members.keys(), WELCOME_USERS)
        shown = [self._nick_of[m] for m in firsts]
        return ev.Welcome(
            nick=nick,
            room=state.name,
            users=tuple(in_order(shown, key=nick_key)),  # (no sort: a reader's stack, #14)
            ts=self._clock(),
            more_users=len(state.members) - len(shown),
        )

    def _union_locked(self, states: list[RoomState]) -> dict[Member, None]:
        recipients: dict[Member, None] = {}
        for state in states:
            recipients.update(state.members)
        return recipients

    def _users_locked(self, state: RoomState) -> tuple[str, ...]:
        """The room's users, sorted, operators marked "@"."""
        users = in_order(state.members, key=lambda m: nick_key(self._nick_of[m]))
        return tuple(("@" if m in state.ops else "") + self._nick_of[m] for m in users)

    def _view_locked(self, state: RoomState) -> ev.RoomView:
        return ev.RoomView(
            room=state.name,
            users=self._users_locked(state),
            topic=state.topic,
            topic_by=state.topic_by,
            topic_ts=state.topic_ts,
            ts=self._clock(),
            secret=state.secret,
            has_key=bool(state.key),
        )

    def _take_id_locked(self) -> int:
        event_id = self._next_id
        self._next_id += 1
        return event_id

    def _publish_locked(
        self,
        recipients: Iterable[Member],
        make: Callable[[int, float], ev.RoomEvent],
        skip: Member | None = None,
    ) -> _Handover:
        """Numbers a new event, offers it to every recipient but `skip`; returns who took it and
        who refused, to be completed (flushed, dropped) once the lock is released.

        Delivering under the lock, in id order, is what gives every member the same order of
        events; it is cheap because `deliver()` only appends to a queue.
        """
        event = make(self._take_id_locked(), self._clock())
        return _Handover().give_locked((m for m in recipients if m is not skip), event)

    # -- history (#11) -------------------------------------------------------------------------
    # The store is offered each message under the lock (never blocking: chat/store); replays
    # come from each room's in-memory tail under the lock, so they are exact (no gap, no
    # duplicate with the live messages that follow); other questions go to the store outside
    # the lock, in the asker's reader thread.

    def restore_history(self) -> None:
        """At start, from a started store: number events after its last id (the ids users see
        survive a restart), bring back its rooms (empty, dormant) and their last messages."""
        store = self.store
        if store is None:
            return
        lobby_key = room_key(self.name)
        # The default room's record, and at most max_rooms others (the newest: see _rest_locked).
        records = list(store.rooms())
        others = sorted((r for r in records if room_key(r.name) != lobby_key), key=_created)
        records = [r for r in records if room_key(r.name) == lobby_key]
        records += others[len(others) - max(self.max_rooms, 0) :]
        targets = [room_key(r.name) for r in records]
        if lobby_key not in targets:
            targets.append(lobby_key)
        tails = store.latest(targets, self.replay) if self.replay > 0 else {}
        with self._lock:
            self._next_id = max(self._next_id, store.last_id() + 1)
            for record in records:
                self._recall_locked(record)
            for k, events in tails.items():
                found = self._rooms.get(k) or self._dormant.get(k)
                if found is not None and found.recent is not None:
                    found.recent.extend(events)

    def history(
        self,
        member: Member,
        target: str,
        *,
        limit: int = DEFAULT_REPLAY,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
        before_ts: float | None = None,
        after_ts: float | None = None,
        newest: bool = False,
    ) -> ev.History:
        """Stored messages of room `target` (which `member` must be in: a secret room is "no
        such room" to others, as everywhere) or of the private conversation between `member`
        and the user `target`, oldest first (chat/store HistoryQuery says what the bounds
        mean). Raises HistoryOff, NoSuchRoom, NotInRoom. The store is asked outside the lock:
        this may wait for the disk, in the asker's own reader thread."""
        store = self.store
        if store is None:
            raise HistoryOff("")
        with self._lock:
            if target.startswith("#"):
                if room_key(target) in self._dormant and room_key(target) not in self._rooms:
                    if self._dormant[room_key(target)].secret:
                        raise NoSuchRoom(target)
                    raise NotInRoom(self._dormant[room_key(target)].name)
                name = self._member_state_locked(member, target).name
                key = room_key(name)
            else:
                if not self.store_private:
                    raise HistoryOff(target)
                name = target
                key = conversation_key(self._nick_of[member], target)
        limit = max(1, min(limit, MAX_HISTORY_LIMIT))
        query = HistoryQuery(
            key,
            limit=limit,
            before=None if before is None else min(before, MAX_EVENT_ID),
            after=None if after is None else min(after, MAX_EVENT_ID),
            around=None if around is None else min(around, MAX_EVENT_ID),
            before_ts=before_ts,
            after_ts=after_ts,
            newest=newest,
        )
        events = store.history(query)
        return ev.History(name, tuple(events), self._clock(), more=len(events) >= limit)

    def _revive_locked(self, k: str, member: Member, nick: str, key: str) -> RoomState:
        """A room history kept comes back as it was; its creator gets its operator status
        back, and anyone else joins as a plain member (a room with no creator recorded: the
        first to join is its operator, as for a new room). Raises BadRoomKey, NoMoreRooms."""
        state = self._dormant[k]
        if state.key and key != state.key:
            raise BadRoomKey(state.name)
        if len(self._rooms) >= self.max_rooms:
            raise NoMoreRooms(state.name, self.max_rooms)
        del self._dormant[k]
        self._rooms[k] = state
        if not state.creator or nick_key(state.creator) == nick_key(nick):
            state.ops.add(member)
        return state

    def _replay_locked(self, member: Member, state: RoomState) -> bool:
        """Delivers the room's last messages to a newcomer (nothing if there are none); False if
        its send queue refused them."""
        if not state.recent or self.replay <= 0:
            return True
        chosen: list[HistoryEvent] = []
        budget = self.replay_bytes
        for event in reversed(state.recent):
            budget -= 2 * len(event.text.encode()) + 100 + len(event.sender) + len(event.room)
            if budget < 0:
                break
            chosen.append(event)
        if not chosen:
            return True
        chosen.reverse()
        more = len(chosen) < len(state.recent) or len(state.recent) == state.recent.maxlen
        replay = ev.History(state.name, tuple(chosen), self._clock(), replay=True, more=more)
        return member.deliver(replay)

    def _record_locked(self, state: RoomState, events: Iterable[HistoryEvent]) -> None:
        """Remembers messages for replay and offers them to the store (never blocks)."""
        store = self.store
        if store is None or state.recent is None:
            return
        if not state.saved:  # its first message: the room is worth keeping now
            self._save_room_locked(state)
        for event in events:
            state.recent.append(event)
            store.offer_event(event)

    def _save_room_locked(self, state: RoomState) -> None:
        if self.store is not None and state.recent is not None:
            if not state.created_ts:
                state.created_ts = self._clock()
            state.saved = True
            self.store.offer_room(record_of(state))


def _created(record: RoomRecord) -> float:
    return record.created_ts


def _mode_string(modes: list[str]) -> str:
    """["+k", "+o", "-s"] -> "+ko-s"."""
    out = ""
    sign = ""
    for mode in modes:
        if mode[0] != sign:
            sign = mode[0]
            out += sign
        out += mode[1]
    return out
