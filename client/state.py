"""What the client knows about the room and its connection, as immutable snapshots. PURE.

The connection thread is the only writer: it computes a new `Status` with `apply()` or
`dataclasses.replace()` and publishes it with one assignment. The UI thread reads whatever
snapshot is current (toolbar, completion) and never sees a half-updated one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

ConnectionState = Literal["connecting", "connected", "reconnecting", "disconnected"]


def sorted_nicks(nicks: Iterable[str]) -> tuple[str, ...]:
    """Nicks without duplicates (ignoring ASCII case, as the server does), sorted."""
    unique = {nick.lower(): nick for nick in nicks}
    return tuple(sorted(unique.values(), key=str.lower))


@dataclass(frozen=True)
class Status:
    """One consistent snapshot of the connection and the room.

    Attributes:
        address: "host:port" of the server.
        state: connecting / connected / reconnecting / disconnected.
        nick: my nickname ('' before the first welcome).
        users: everyone online, sorted, me included.
        retry_at: when reconnecting, the `time.monotonic()` of the next attempt.
        queued: lines waiting to be sent (typed while disconnected).
    """

    address: str
    state: ConnectionState = "connecting"
    nick: str = ""
    users: tuple[str, ...] = ()
    retry_at: float | None = None
    queued: int = 0

    def apply(self, event: Mapping[str, Any]) -> Status:
        """The status after a server event (welcome, join, leave, rename, users)."""
        kind = event.get("type")
        if kind == "welcome":
            users = event.get("users")
            nick = event.get("nick")
            return dataclasses.replace(
                self,
                state="connected",
                nick=nick if isinstance(nick, str) else self.nick,
                users=sorted_nicks(u for u in users if isinstance(u, str))
                if isinstance(users, list)
                else self.users,
                retry_at=None,
            )
        if kind == "users":
            users = event.get("users")
            if isinstance(users, list):
                return dataclasses.replace(
                    self, users=sorted_nicks(u for u in users if isinstance(u, str))
                )
        if kind == "join":
            nick = event.get("nick")
            if isinstance(nick, str):
                return dataclasses.replace(self, users=sorted_nicks((*self.users, nick)))
        if kind == "leave":
            nick = event.get("nick")
            if isinstance(nick, str):
                gone = nick.lower()
                return dataclasses.replace(
                    self, users=tuple(u for u in self.users if u.lower() != gone)
                )
        if kind == "rename":
            old, new = event.get("old"), event.get("new")
            if isinstance(old, str) and isinstance(new, str):
                users = (new if u.lower() == old.lower() else u for u in self.users)
                nick = new if self.nick.lower() == old.lower() else self.nick
                return dataclasses.replace(self, users=sorted_nicks(users), nick=nick)
        return self
