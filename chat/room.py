"""Room: the registry of members and their nicknames, the only shared chat state; owns THE lock.

Every operation is one short critical section: check and change the registry, number the event,
and hand it to each member's outbox with a non-blocking `deliver()`. No socket I/O, no waiting,
no callbacks into other locks happen under the lock, so one slow client can never stall the room,
and every member sees the events in the same order (the order of the room's ids).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from chat import events as ev
from chat.protocol import nick_key

DEFAULT_ROOM = "#lobby"


class Member(Protocol):
    """What the room needs of a connection; any front-end (text, JSON, IRC) can be one."""

    def deliver(self, event: ev.Event) -> bool:
        """Queues `event` for the client without blocking; False if its send queue is full."""
        ...

    def drop(self, reason: str) -> None:
        """Disconnects the client with `reason`; called outside the room lock."""
        ...


class NickTaken(Exception):
    pass


class NoSuchNick(Exception):
    pass


class Room:
    """The members of one chat room, by nickname.

    Thread safety: `_lock` guards `_by_key`, `_nick_of` and `_next_id`. Each public method takes
    it once, briefly; while holding it a method only touches these dicts, builds one event and
    calls members' `deliver()`, which takes only the member's own outbox lock (lock order:
    room lock, then outbox lock; never the reverse). Members whose outbox is full are collected
    and dropped after the lock is released, because dropping one is I/O.
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
            overflowed = self._publish_locked(
                lambda i, ts: ev.Joined(i, ts, self.name, nick=nick, count=len(self._nick_of))
            )
        self._drop_all(overflowed)
        return welcome

    def leave(self, member: Member, reason: str, message: str = "") -> bool:
        """Removes `member` and tells the others why; False if it was not a member."""
        with self._lock:
            nick = self._nick_of.pop(member, None)
            if nick is None:
                return False
            del self._by_key[nick_key(nick)]
            overflowed = self._publish_locked(
                lambda i, ts: ev.Left(
                    i,
                    ts,
                    self.name,
                    nick=nick,
                    reason=reason,
                    message=message,
                    count=len(self._nick_of),
                )
            )
        self._drop_all(overflowed)
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
            overflowed = self._publish_locked(
                lambda i, ts: ev.Renamed(i, ts, self.name, old=old, new=new)
            )
        self._drop_all(overflowed)

    def say(self, member: Member, text: str) -> None:
        """A message from `member` to everyone else (the sender knows what it wrote)."""
        with self._lock:
            nick = self._nick_of[member]
            overflowed = self._publish_locked(
                lambda i, ts: ev.Message(i, ts, self.name, sender=nick, text=text), skip=member
            )
        self._drop_all(overflowed)

    def act(self, member: Member, text: str) -> None:
        """An action (`/me`), shown to everyone, its author included."""
        with self._lock:
            nick = self._nick_of[member]
            overflowed = self._publish_locked(
                lambda i, ts: ev.Action(i, ts, self.name, sender=nick, text=text)
            )
        self._drop_all(overflowed)

    def whisper(self, member: Member, to: str, text: str) -> None:
        """A private message to the member called `to`, copied to its sender; raises NoSuchNick."""
        with self._lock:
            sender = self._nick_of[member]
            target = self._by_key.get(nick_key(to))
            if target is None:
                raise NoSuchNick(to)
            recipient_nick, recipient = target
            event = ev.PrivateMessage(
                self._take_id_locked(),
                self._clock(),
                self.name,
                sender=sender,
                recipient=recipient_nick,
                text=text,
            )
            overflowed = [m for m in {recipient, member} if not m.deliver(event)]
        self._drop_all(overflowed)

    def announce(self, text: str) -> None:
        """A server notice to every member."""
        with self._lock:
            notice = ev.Notice(text=text, ts=self._clock())
            overflowed = [m for m in self._nick_of if not m.deliver(notice)]
        self._drop_all(overflowed)

    # -- helpers -------------------------------------------------------------------------------

    def _take_id_locked(self) -> int:
        event_id = self._next_id
        self._next_id += 1
        return event_id

    def _publish_locked(
        self, make: Callable[[int, float], ev.RoomEvent], skip: Member | None = None
    ) -> list[Member]:
        """Numbers a new event, offers it to every member but `skip`; returns those who refused.

        Delivering under the lock is what gives every member the same order of events; it is
        cheap because `deliver()` only appends to a queue.
        """
        event = make(self._take_id_locked(), self._clock())
        return [m for m in self._nick_of if m is not skip and not m.deliver(event)]

    @staticmethod
    def _drop_all(members: list[Member]) -> None:
        for member in members:
            member.drop(ev.LeaveReason.SENDQ_EXCEEDED)
