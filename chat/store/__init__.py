"""The history store's interface: what the hub records and what readers ask, wherever it lives.

The hub never talks to a database. It offers what happened (`offer_event`, `offer_room`) to a
`HistoryStore` with calls that never block, under its lock, and its readers ask for history
(`history`) in their own threads, outside the lock. The SQLite store (chat/store/sqlite.py) is
the default; a cluster store (Redis/Valkey) implements the same protocol elsewhere.

Everything in this module is pure: record types, the query, the conversation key of private
messages, and `select()`, the reference meaning of a query over a list of events (a store may
use it to merge what it has written with what it has not written yet, and tests use it to check
a store's answers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chat import events as ev
from chat.protocol import clean_text, in_order, nick_key, room_key

# What a store keeps: messages (notices included) and actions in rooms, and private messages
# when the operator allows it. Joins, parts, topics and modes are not history: a room's topic,
# key, secret flag and creator are kept as its `RoomRecord` instead.
HistoryEvent = ev.Message | ev.Action | ev.PrivateMessage

# The most events one question may ask for (a JSON `history` request, CHATHISTORY, /history N):
# an answer of 1,000 lines of ~500 bytes is ~0.5 MB, which a client's send queue takes in pieces.
MAX_HISTORY_LIMIT = 1000
# The largest message id a store can be asked about: SQLite's INTEGER is 64 bits. A bound past
# it (a client's 10**26) means the same as this one: everything before it, nothing after it.
MAX_EVENT_ID = 2**63 - 1


class StoreError(Exception):
    """The store cannot start (corrupt, locked, read-only or full file, newer schema): `str()`
    is one line for the operator, naming the file and what to do."""


@dataclass(frozen=True)
class RoomRecord:
    """What survives a restart of a room: its name as spelled, topic, key, secret flag, creator.

    `key` is the room key (empty: none); `topic_ts` and `created_ts` are Unix times.
    """

    name: str
    topic: str = ""
    topic_by: str = ""
    topic_ts: float = 0.0
    key: str = ""
    secret: bool = False
    creator: str = ""
    created_ts: float = 0.0


@dataclass(frozen=True)
class HistoryQuery:
    """Which events of one conversation to return; the answer is always oldest first.

    `target` is a conversation key: `room_key(name)` for a room, `conversation_key(a, b)` for
    the private messages between two users. Bounds are exclusive; ids are the hub's event ids
    (the ids users see), timestamps are Unix times:

    * no bound (LATEST): the `limit` newest events;
    * `before` / `before_ts`: the `limit` newest events older than the bound;
    * `after` / `after_ts`: the `limit` oldest events newer than the bound (the newest of them
      with `newest=True`: IRC's `CHATHISTORY LATEST target msgid=N`);
    * both (BETWEEN): the events between the two, the `limit` oldest of them, or the newest
      with `newest=True`;
    * `around`: the event `around` (if stored) and up to `limit` events in all, split evenly
      before and after it (the older half first).
    """

    target: str
    limit: int = 50
    before: int | None = None
    after: int | None = None
    around: int | None = None
    before_ts: float | None = None
    after_ts: float | None = None
    newest: bool = False  # with a lower bound: keep the newest `limit` of the range

    def keeps_newest(self) -> bool:
        """Whether, of more than `limit` matching events, the newest are kept (else the
        oldest)."""
        has_lower = self.after is not None or self.after_ts is not None
        return self.newest or not has_lower

    def matches(self, event: HistoryEvent) -> bool:
        """Whether `event` lies within the query's bounds (ignoring `around` and `limit`)."""
        if self.before is not None and event.id >= self.before:
            return False
        if self.after is not None and event.id <= self.after:
            return False
        if self.before_ts is not None and event.ts >= self.before_ts:
            return False
        return not (self.after_ts is not None and event.ts <= self.after_ts)


@dataclass(frozen=True)
class StoreStats:
    """Counters of a store since it started (the log and the benchmarks read them).

    `dropped`: events not recorded because the writer's queue was full; `failed`: events lost
    to write errors (disk full, I/O error); `degraded`: at least one of those happened.
    """

    written: int = 0
    dropped: int = 0
    failed: int = 0
    degraded: bool = False


def conversation_key(a: str, b: str) -> str:
    """The target of the private messages between users `a` and `b`, either way round.

    Nicknames cannot contain a space or start with "#", so this never equals a room key.
    """
    a, b = nick_key(a), nick_key(b)
    return f"{a} {b}" if a <= b else f"{b} {a}"  # (no sorted(): a reader's stack, #14)


def target_of(event: HistoryEvent) -> str:
    """The conversation an event belongs to (its room's key, or the two users' key)."""
    if isinstance(event, ev.PrivateMessage):
        return conversation_key(event.sender, event.recipient)
    return room_key(event.room)


# How every store writes an event down: its kind as a small integer (the events' own classes
# and flags), then as `fields()` lists them; `from_fields()` makes the event again.
MESSAGE, NOTICE, ACTION, PRIVATE, PRIVATE_NOTICE, PRIVATE_ACTION = range(6)


def fields(event: HistoryEvent) -> tuple[Any, ...]:
    """(id, ts, kind, room, sender, recipient, userhost, text) of `event`."""
    if isinstance(event, ev.PrivateMessage):
        kind = PRIVATE_ACTION if event.action else PRIVATE_NOTICE if event.notice else PRIVATE
        recipient = event.recipient
    else:
        kind = ACTION if isinstance(event, ev.Action) else NOTICE if event.notice else MESSAGE
        recipient = ""
    return (
        event.id,
        event.ts,
        kind,
        event.room,
        event.sender,
        recipient,
        event.userhost,
        event.text,
    )


def from_fields(row: Sequence[Any]) -> HistoryEvent:
    """The event whose `fields()` are `row`. Its text is cleaned by today's rule: a file or a
    Redis written by an older version may hold what that version let through (U+2028)."""
    event_id, ts, kind, room, sender, recipient, userhost, text = row
    text = clean_text(text)
    if kind == ACTION:
        return ev.Action(event_id, ts, room, sender=sender, text=text, userhost=userhost)
    if kind in (MESSAGE, NOTICE):
        return ev.Message(
            event_id, ts, room, sender=sender, text=text, userhost=userhost, notice=kind == NOTICE
        )
    return ev.PrivateMessage(
        event_id,
        ts,
        room,
        sender=sender,
        recipient=recipient,
        text=text,
        userhost=userhost,
        notice=kind == PRIVATE_NOTICE,
        action=kind == PRIVATE_ACTION,
    )


def select(events: Iterable[HistoryEvent], query: HistoryQuery) -> list[HistoryEvent]:
    """The answer to `query` from `events` of any order (duplicates by id counted once),
    oldest first: the reference meaning of HistoryQuery."""
    by_id = {e.id: e for e in events if target_of(e) == query.target}
    ordered = in_order(by_id.values(), key=lambda e: e.id)  # (no sort: a reader's stack, #14)
    limit = max(0, min(query.limit, MAX_HISTORY_LIMIT))
    if limit == 0:
        return []
    if query.around is not None:
        centre = query.around
        older = [e for e in ordered if e.id < centre and query.matches(e)]
        exact = [e for e in ordered if e.id == centre]
        newer = [e for e in ordered if e.id > centre and query.matches(e)]
        room = limit - len(exact)
        take_older = min(len(older), room // 2 + room % 2)
        take_newer = min(len(newer), room - take_older)
        take_older = min(len(older), room - take_newer)  # give unused room to the older side
        return older[len(older) - take_older :] + exact + newer[:take_newer]
    matching = [e for e in ordered if query.matches(e)]
    return matching[-limit:] if query.keeps_newest() else matching[:limit]


class HistoryStore(Protocol):
    """Where history and room records are kept; one per server, shared by every thread.

    Life: `start()` once (it may block: it opens files, migrates, starts threads), then
    `last_id()` and `rooms()` and `latest()` to restore the hub, then any number of the calls
    below from any thread, then `stop()` once (it flushes and joins whatever the store started).

    Thread safety: `offer_event`, `offer_room` and `stats` are called by the hub with THE hub
    lock held, from any reader thread at once. They must never block, never touch the disk or
    the network, and take at most a leaf lock of their own: a `put_nowait()` into the writer's
    bounded queue. When that queue is full they drop the item (counted in `stats().dropped`,
    logged once) rather than slow the chat. Writing happens in the store's own thread(s), in
    the order of the offers (which is the hub's id order, since the hub offers under its lock).
    `history` and `latest` are called by reader threads WITHOUT the hub lock: they may block on
    the disk or the network for as long as one query takes, each caller on its own connection
    (or equivalent), and must not lose events that were offered but not yet written (a reader
    asking right after a message must find it). `start`, `last_id`, `rooms` and `stop` are
    called by the thread that starts or stops the server, never with the hub lock held.
    """

    @property
    def description(self) -> str:
        """Where the store keeps its data, for the log ("history: /path/to/history.sqlite3")."""
        ...

    def start(self) -> None:
        """Opens (creating or migrating) the store and starts its writer; raises StoreError
        with one line for the operator if it cannot."""
        ...

    def last_id(self) -> int:
        """The largest event id ever stored (0 for a new store): the hub numbers new events
        after it, so the ids users see survive a restart."""
        ...

    def rooms(self) -> Sequence[RoomRecord]:
        """Every room record kept (rooms that should reappear after a restart)."""
        ...

    def latest(self, targets: Sequence[str], limit: int) -> dict[str, list[HistoryEvent]]:
        """The `limit` newest events of each target, oldest first (at start, to fill the
        hub's replay buffers); targets without events are absent."""
        ...

    def offer_event(self, event: HistoryEvent) -> bool:
        """Queues `event` to be written; never blocks. False: dropped (queue full, stopping)."""
        ...

    def offer_room(self, record: RoomRecord) -> bool:
        """Queues a room's record (created, topic or modes changed) to be written, replacing
        the one with the same `room_key(name)`; never blocks. False: dropped."""
        ...

    def history(self, query: HistoryQuery) -> list[HistoryEvent]:
        """The answer to `query` (see HistoryQuery), oldest first; may block on I/O. Includes
        events offered but not yet written. Permission checks are the caller's (the hub's)."""
        ...

    def stats(self) -> StoreStats:
        """The counters so far; never blocks."""
        ...

    def stop(self, timeout_s: float) -> None:
        """Writes what is queued (for at most `timeout_s`; what is left is counted as dropped
        and logged), then closes the store and joins its threads. Idempotent."""
        ...
