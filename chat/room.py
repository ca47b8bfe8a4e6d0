"""Room: the registry of members and their nicknames, the only shared chat state; owns THE lock.

Every operation is one short critical section: check and change the registry, number the event,
and hand it to each member's outbox with a non-blocking `deliver()`. No socket I/O, no waiting,
no callbacks into other locks happen under the lock, so one slow client can never stall the room,
and every member sees the events in the same order (the order of the room's ids). Only after
the lock is released are the members asked to `flush()` (send without blocking) or, if their
queue was full, dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from chat import events as ev
from chat.protocol import nick_key

DEFAULT_ROOM = "#lobby"


class Member(Protocol):
    """What the room needs of a connection; any front-end (text, JSON, IRC) can be one."""

    def deliver(self, event: ev.Event) -> bool:
        """Queues `event` for the client without blocking; False if its send queue is full."""
        ...

    def flush(self) -> None:
        """Sends what is queued if it can without blocking; called outside the room lock."""
        ...

    def drop(self, reason: str) -> None:
        """Disconnects the client with `reason`; called outside the room lock."""
        ...


class _Handover:
    """Who got an event under the lock: flush them, or drop those who refused, after it."""

    __slots__ = ("refused", "took")

    def __init__(self) -> None:
        self.took: list[Member] = []
        self.refused: list[Member] = []

    def give_locked(self, members: Iterable[Member], event: ev.Event) -> _Handover:
        for member in members:
            (self.took if member.deliver(event) else self.refused).append(member)
        return self

    def complete(self) -> None:
        """Outside the lock: the I/O part of the operation."""
        for member in self.refused:
            member.drop(ev.LeaveReason.SENDQ_EXCEEDED)
        for member in self.took:
            member.flush()


class NickTaken(Exception):
    pass


class NoSuchNick(Exception):
    pass


class Room:
    """The members of one chat room, by nickname.

    Thread safety: `_lock` guards `_by_key`, `_nick_of` and `_next_id`. Each public method takes
    it once, briefly; while holding it a method only touches these dicts, builds one event and
    calls members' `deliver()`, which takes only the member's own outbox lock (lock order:
    room lock, then outbox lock; never the reverse). Who took the event and who refused it (a
    full outbox) is collected in a `_Handover`, completed after the lock is released: flushing
    and dropping members is socket I/O.
    """

    def __init__(self, name: str = DEFAULT_ROOM, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._by_key: dict[str, tuple[str, Member]] = {}  # nick_key -> (nick, member)
        self._nick_of: dict[Member, str] = {}
        self._next_id = 1

    # -- queries -------------------------------------------------------------------------------

    def nicks(self) -> tuple[str, ...]:
        """A sorted snapshot of the nicknames online."""
        with self._lock:
            return tuple(sorted(self._nick_of.values(), key=nick_key))

    def __len__(self) -> int:
        with self._lock:
            return len(self._nick_of)

    def nick_of(self, member: Member) -> str | None:
        with self._lock:
            return self._nick_of.get(member)

    # -- operations ----------------------------------------------------------------------------

    def join(self, member: Member, nick: str) -> ev.Welcome:
        """Adds `member` as `nick`, atomically: of two members joining as one nick, one wins.

        Raises NickTaken. Everyone, the newcomer included, gets a `Joined` event.
        """
        with self._lock:
            if nick_key(nick) in self._by_key:
                raise NickTaken(nick)
            self._by_key[nick_key(nick)] = (nick, member)
            self._nick_of[member] = nick
            users = tuple(sorted(self._nick_of.values(), key=nick_key))
            welcome = ev.Welcome(nick=nick, room=self.name, users=users, ts=self._clock())
            # The welcome goes first, so the newcomer's stream starts with it.
            member.deliver(welcome)
            joined = ev.Joined(*self._stamp_locked(), nick=nick, count=len(self._nick_of))
            handover = _Handover().give_locked(self._nick_of, joined)
        handover.complete()
        return welcome

    def leave(self, member: Member, reason: str, message: str = "") -> bool:
        """Removes `member` and tells the others why; False if it was not a member."""
        with self._lock:
            nick = self._nick_of.pop(member, None)
            if nick is None:
                return False
            del self._by_key[nick_key(nick)]
            left = ev.Left(
                *self._stamp_locked(),
                nick=nick,
                reason=reason,
                message=message,
                count=len(self._nick_of),
            )
            handover = _Handover().give_locked(self._nick_of, left)
        handover.complete()
        return True

    def rename(self, member: Member, new: str) -> None:
        """Renames `member` to `new` (check-and-set, like join); raises NickTaken."""
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
            renamed = ev.Renamed(*self._stamp_locked(), old=old, new=new)
            handover = _Handover().give_locked(self._nick_of, renamed)
        handover.complete()

    def say(self, member: Member, *texts: str) -> None:
        """Messages from `member` to everyone else (the sender knows what it wrote).

        Several texts become consecutive messages handed over as one `Batch`: one trip through
        the lock and one queue entry per member, however many lines the sender pasted.
        """
        with self._lock:
            nick = self._nick_of[member]
            messages = tuple(
                ev.Message(*self._stamp_locked(), sender=nick, text=text) for text in texts
            )
            event: ev.Event = messages[0] if len(messages) == 1 else ev.Batch(messages)
            others = (m for m in self._nick_of if m is not member)
            handover = _Handover().give_locked(others, event)
        handover.complete()

    def act(self, member: Member, text: str) -> None:
        """An action (`/me`), shown to everyone, its author included."""
        with self._lock:
            nick = self._nick_of[member]
            action = ev.Action(*self._stamp_locked(), sender=nick, text=text)
            handover = _Handover().give_locked(self._nick_of, action)
        handover.complete()

    def whisper(self, member: Member, to: str, text: str) -> None:
        """A private message to the member called `to`, copied to its sender; raises NoSuchNick."""
        with self._lock:
            sender = self._nick_of[member]
            target = self._by_key.get(nick_key(to))
            if target is None:
                raise NoSuchNick(to)
            recipient_nick, recipient = target
            private = ev.PrivateMessage(
                *self._stamp_locked(), sender=sender, recipient=recipient_nick, text=text
            )
            handover = _Handover().give_locked({recipient: None, member: None}, private)
        handover.complete()

    def announce(self, text: str) -> None:
        """A server notice to every member."""
        with self._lock:
            notice = ev.Notice(text=text, ts=self._clock())
            handover = _Handover().give_locked(self._nick_of, notice)
        handover.complete()

    # -- helpers -------------------------------------------------------------------------------

    def _stamp_locked(self) -> tuple[int, float, str]:
        """The next event's id, time and room: ids increase by one per event, in lock order.

        Delivering under the lock, in id order, is what gives every member the same order of
        events; it is cheap because `deliver()` only appends to a queue.
        """
        event_id = self._next_id
        self._next_id += 1
        return event_id, self._clock(), self.name
