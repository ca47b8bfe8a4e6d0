"""What the client knows about its rooms and its connection, as immutable snapshots. PURE.

The connection thread is the only writer: it computes a new `Status` with `apply()` or
`dataclasses.replace()` and publishes it with one assignment. The UI thread reads whatever
snapshot is current (toolbar, completion) and never sees a half-updated one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from client.wire import fold

ConnectionState = Literal["connecting", "connected", "reconnecting", "disconnected"]
Members = tuple[tuple[str, tuple[str, ...]], ...]  # (room, its nicks) in the order joined


def sorted_nicks(nicks: Iterable[str]) -> tuple[str, ...]:
    """Nicks without duplicates (ignoring ASCII case, as the server does), sorted."""
    unique = {fold(nick): nick for nick in nicks}
    return tuple(sorted(unique.values(), key=str.lower))


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


@dataclass(frozen=True)
class Status:
    """One consistent snapshot of the connection and the rooms I am in.

    Attributes:
        address: "host:port" of the server.
        state: connecting / connected / reconnecting / disconnected.
        nick: my nickname ('' before the first welcome).
        room: my current room: where what I type goes.
        members: every room I am in, in the order I joined them, with who is in it.
        retry_at: when reconnecting, the `time.monotonic()` of the next attempt.
        attempt: when reconnecting, the number of the next attempt (1 for the first).
        last_error: when reconnecting, why the last attempt failed ('' before the first).
        queued: lines waiting to be sent (typed while disconnected).
    """

    address: str
    state: ConnectionState = "connecting"
    nick: str = ""
    room: str = ""
    members: Members = ()
    retry_at: float | None = None
    attempt: int = 0
    last_error: str = ""
    queued: int = 0

    @property
    def rooms(self) -> tuple[str, ...]:
        """The rooms I am in, in the order I joined them."""
        return tuple(room for room, _ in self.members)

    @property
    def users(self) -> tuple[str, ...]:
        """Everyone in my current room, sorted, me included."""
        return self.users_of(self.room)

    @property
    def known(self) -> tuple[str, ...]:
        """Everyone in any of my rooms, sorted, me included."""
        return sorted_nicks(nick for _, nicks in self.members for nick in nicks)

    def users_of(self, room: str) -> tuple[str, ...]:
        folded = fold(room)
        return next((nicks for name, nicks in self.members if fold(name) == folded), ())

    def has_room(self, room: str) -> bool:
        return any(fold(name) == fold(room) for name, _ in self.members)

    def _set_members(self, room: str, nicks: Iterable[str]) -> Members:
        entry = (room, sorted_nicks(nicks))
        if self.has_room(room):
            return tuple(entry if fold(n) == fold(room) else (n, u) for n, u in self.members)
        return (*self.members, entry)

    def _without(self, room: str) -> Status:
        members = tuple((n, u) for n, u in self.members if fold(n) != fold(room))
        current = self.room
        if fold(current) == fold(room):
            current = members[-1][0] if members else ""  # the room joined last, as the server
        return dataclasses.replace(self, members=members, room=current)

    def _is_me(self, nick: Any) -> bool:
        return isinstance(nick, str) and fold(nick) == fold(self.nick)

    def apply(self, event: Mapping[str, Any]) -> Status:
        """The status after a server event."""
        kind = event.get("type")
        room = event.get("room")
        room = room if isinstance(room, str) else ""
        nick = event.get("nick")
        if kind == "welcome":
            me = nick if isinstance(nick, str) else self.nick
            return dataclasses.replace(
                self,
                state="connected",
                nick=me,
                room=room,
                members=((room, sorted_nicks(_strings(event.get("users")))),),
                retry_at=None,
                attempt=0,
                last_error="",
            )
        if kind == "room" and room:  # answers my join: who is there; it becomes current
            members = self._set_members(room, _strings(event.get("users")))
            return dataclasses.replace(self, members=members, room=room)
        # A `users` reply (to /who or /users) does not change the members: they are kept from
        # the events above and below, and a server from before the /who change answers /who
        # with everyone online labelled as its default room.
        if kind == "join" and room and isinstance(nick, str):
            if self._is_me(nick) and not self.has_room(room):
                return dataclasses.replace(self, members=self._set_members(room, [nick]))
            if self.has_room(room):
                members = self._set_members(room, [*self.users_of(room), nick])
                return dataclasses.replace(self, members=members)
        if kind in ("part", "kick") and room and isinstance(nick, str):
            if self._is_me(nick):
                return self._without(room)
            gone = fold(nick)
            members = self._set_members(room, (u for u in self.users_of(room) if fold(u) != gone))
            return dataclasses.replace(self, members=members) if self.has_room(room) else self
        if kind == "leave" and isinstance(nick, str):
            gone = fold(nick)
            return dataclasses.replace(
                self,
                members=tuple(
                    (name, tuple(u for u in users if fold(u) != gone))
                    for name, users in self.members
                ),
            )
        if kind == "rename":
            old, new = event.get("old"), event.get("new")
            if isinstance(old, str) and isinstance(new, str):
                folded = fold(old)
                members = tuple(
                    (name, sorted_nicks(new if fold(u) == folded else u for u in users))
                    for name, users in self.members
                )
                me = new if fold(self.nick) == folded else self.nick
                return dataclasses.replace(self, members=members, nick=me)
        return self

    def switch_to(self, room: str) -> Status:
        """Make a room I am in the current one (no-op for a room I am not in)."""
        for name, _ in self.members:
            if fold(name) == fold(room):
                return dataclasses.replace(self, room=name)
        return self
