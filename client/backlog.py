"""Which messages this client has shown, by id: no duplicate across a reconnect, paging back. PURE.

The server numbers every message, and the number is the one in its history store (#11), so an
id identifies a message across reconnects and restarts. The connection's reader thread is the
only user of a `Backlog`: it drops a message it has shown already, remembers the newest and
oldest id it saw in each room (to ask for what it missed after a reconnect, and for older pages),
and merges a history answer that came in several pieces.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from client.wire import fold

# Ids remembered to drop duplicates: far more than a reconnect's catch-up (at most 1,000
# messages a room) plus the live messages that arrive meanwhile.
REMEMBERED_IDS = 20_000
# The most messages asked for at once after a reconnect (the server's limit per answer).
CATCH_UP_LIMIT = 1000
PAGE = 50

_SHOWN_TYPES = ("message", "action")


def _room_of(event: Mapping[str, Any]) -> str:
    room = event.get("room")
    return fold(room) if isinstance(room, str) else ""


def _id_of(event: Mapping[str, Any]) -> int | None:
    value = event.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Backlog:
    """Message ids seen, per room.

    Thread safety: the connection's reader thread alone changes it; `older()` may be called
    from the UI thread: it reads one value from a dict (one atomic step), at worst a page that
    the reader has just moved past, whose duplicates `first_time` drops.
    """

    def __init__(self, remembered: int = REMEMBERED_IDS) -> None:
        self._order: deque[int] = deque()
        self._ids: set[int] = set()
        self._remembered = remembered
        self._newest: dict[str, int] = {}
        self._oldest: dict[str, int] = {}
        self._parts: list[dict[str, Any]] = []

    def newest(self, room: str) -> int | None:
        return self._newest.get(fold(room))

    def oldest(self, room: str) -> int | None:
        return self._oldest.get(fold(room))

    def first_time(self, event: Mapping[str, Any]) -> bool:
        """Notes a message or action; False if it was shown already (drop it). Other events,
        and messages without an id, are always new."""
        if event.get("type") not in _SHOWN_TYPES:
            return True
        event_id = _id_of(event)
        if event_id is None:
            return True
        if event_id in self._ids:
            return False
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self._remembered:
            self._ids.discard(self._order.popleft())
        room = _room_of(event)
        if room:
            self._newest[room] = max(self._newest.get(room, 0), event_id)
            self._oldest[room] = min(self._oldest.get(room, event_id), event_id)
        return True

    def merge(self, event: Mapping[str, Any]) -> dict[str, Any] | None:
        """A `history` object from the server: None while more pieces of the same answer are
        to come (`partial`), else the whole answer in one object."""
        if event.get("partial") is True:
            self._parts.append(dict(event))
            return None
        parts, self._parts = [*self._parts, dict(event)], []
        messages = [m for part in parts for m in part.get("messages", []) if isinstance(m, dict)]
        return {**parts[-1], "messages": messages, "partial": False}

    def fresh(self, answer: Mapping[str, Any]) -> dict[str, Any]:
        """`answer` with only the messages not shown yet (now noted as shown)."""
        messages = answer.get("messages", [])
        kept = [m for m in messages if isinstance(m, dict) and self.first_time(m)]
        return {**answer, "messages": kept}

    def catch_up(self, room: str) -> dict[str, Any] | None:
        """The request for what was said in `room` since the newest message seen there (after a
        reconnect), or None if nothing was ever seen there."""
        newest = self.newest(room)
        if newest is None:
            return None
        return {"type": "history", "room": room, "after": newest, "limit": CATCH_UP_LIMIT}

    def older(self, room: str) -> dict[str, Any]:
        """The request for the page before the oldest message seen in `room` (PageUp)."""
        request: dict[str, Any] = {"type": "history", "room": room, "limit": PAGE}
        oldest = self.oldest(room)
        if oldest is not None:
            request["before"] = oldest
        return request
