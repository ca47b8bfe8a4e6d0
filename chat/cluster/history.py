"""History in a cluster: what a snapshot carries for it, and replay buffers refilled from Redis.

Every node applies every event, so history needs no messages of its own in the stream: each
node's hub records what it applies (its replay buffers, the rooms history keeps while empty)
exactly as a single server does, and the store (chat/store/redis.py) keeps the messages for
everyone. Two things a node that starts from a snapshot (chat/cluster/hub.py) would otherwise
not have, and that every node must have alike:

* the history part of the replica: each room's creator and whether history keeps it, and the
  empty ("dormant") rooms history keeps with their topic, key and secret flag. A node without
  them would let anyone into a keyed room that was empty when it started, or hand a returning
  creator no operator status, where the others refuse or grant it: the replicas would part;
* each room's replay buffer, filled from the store with the newest messages older than the
  snapshot's next event id; the entries after the snapshot add the rest as they are applied.
  The origin nodes' writers may not have written the last of those yet (a node that loads a
  snapshot a moment after it was made would miss them, #12): the snapshot carries the tail of
  each replay buffer applied in the last `CARRIED_S`, and the store fills in what is older.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import astuple
from typing import Any

from chat.hub import Hub, RoomState, record_of
from chat.store import HistoryEvent, HistoryQuery, RoomRecord, fields, from_fields
from chat.store.redis import MAX_RECENT, RECENT_S

# A snapshot carries each replay buffer's messages of the last CARRIED_S (at most MAX_RECENT in
# all, the newest): the window in which the store may not have them yet (its writers are
# asynchronous; each node keeps as long a window in memory to answer /history, RECENT_S).
CARRIED_S = RECENT_S


def snapshot_locked(hub: Hub) -> dict[str, Any] | None:
    """The history part of a snapshot (None without history); the hub lock is held."""
    if hub.store is None:
        return None
    rooms = {k: [s.creator, s.created_ts, s.saved] for k, s in hub._rooms.items()}
    dormant = [astuple(record_of(s)) for s in hub._dormant.values()]
    return {"rooms": rooms, "dormant": dormant, "recent": _carried_locked(hub)}


def _carried_locked(hub: Hub) -> dict[str, list[Any]]:
    """Each replay buffer's tail from its first message of the last CARRIED_S on (a suffix,
    so with the store's older messages it makes the whole buffer again), by target."""
    horizon = time.time() - CARRIED_S
    tails: list[tuple[str, list[HistoryEvent]]] = []
    for k, state in [*hub._rooms.items(), *hub._dormant.items()]:
        recent = list(state.recent or ())
        start = next((i for i, e in enumerate(recent) if e.ts >= horizon), len(recent))
        if start < len(recent):
            tails.append((k, recent[start:]))
    total = sum(len(events) for _, events in tails)
    if total > MAX_RECENT:  # keep the newest: drop everything below the cut's id
        cut = sorted(e.id for _, events in tails for e in events)[total - MAX_RECENT]
        tails = [(k, [e for e in events if e.id >= cut]) for k, events in tails]
    return {k: [list(fields(e)) for e in events] for k, events in tails if events}


def restore_locked(hub: Hub, part: dict[str, Any] | None) -> None:
    """Puts a snapshot's history part into the replica just rebuilt from it (the hub lock is
    held); every room gets an empty replay buffer (`fill_replays` fills them)."""
    if hub.store is None:
        return
    part = part or {"rooms": {}, "dormant": []}
    for k, state in hub._rooms.items():
        state.recent = deque(maxlen=hub.replay)
        state.creator, state.created_ts, state.saved = part["rooms"].get(k, ("", 0.0, False))
    hub._dormant.clear()
    for record in part["dormant"]:
        hub._recall_locked(RoomRecord(*record))
    # A snapshot of an older node carries no messages: the store alone fills the buffers.
    for k, rows in part.get("recent", {}).items():
        found: RoomState | None = hub._rooms.get(k) or hub._dormant.get(k)
        if found is not None and found.recent is not None:
            found.recent.extend(from_fields(row) for row in rows)


def fill_replays(hub: Hub) -> None:
    """Fills every room's replay buffer (rooms in use and dormant) with its newest messages
    older than the hub's next event id, read from the store, below what the snapshot carried
    (`restore_locked`): called right after the replica was loaded from a snapshot, by the only
    thread that changes it, without the hub lock."""
    store = hub.store
    if store is None or hub.replay <= 0:
        return
    with hub._lock:
        next_id = hub._next_id
        targets = [*hub._rooms, *hub._dormant]
    found: dict[str, list[HistoryEvent]] = {}
    for target in targets:
        found[target] = store.history(HistoryQuery(target, limit=hub.replay, before=next_id))
    with hub._lock:
        for target, events in found.items():
            state = hub._rooms.get(target) or hub._dormant.get(target)
            if state is None or state.recent is None:
                continue
            oldest = state.recent[0].id if state.recent else next_id
            kept = [e for e in events if e.id < oldest] + list(state.recent)
            state.recent.clear()
            state.recent.extend(kept)  # the newest are kept (a deque with maxlen)
