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
"""

from __future__ import annotations

from collections import deque
from dataclasses import astuple
from typing import Any

from chat.hub import Hub, record_of
from chat.store import HistoryEvent, HistoryQuery, RoomRecord


def snapshot_locked(hub: Hub) -> dict[str, Any] | None:
    """The history part of a snapshot (None without history); the hub lock is held."""
    if hub.store is None:
        return None
    rooms = {k: [s.creator, s.created_ts, s.saved] for k, s in hub._rooms.items()}
    dormant = [astuple(record_of(s)) for s in hub._dormant.values()]
    return {"rooms": rooms, "dormant": dormant}


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
    for fields in part["dormant"]:
        hub._recall_locked(RoomRecord(*fields))


def fill_replays(hub: Hub) -> None:
    """Fills every room's replay buffer (rooms in use and dormant) with its newest messages
    older than the hub's next event id, read from the store: called right after the replica
    was loaded from a snapshot, by the only thread that changes it, without the hub lock."""
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
