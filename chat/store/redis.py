"""RedisStore: the cluster's history, in the Redis/Valkey every node already shares (--cluster).

Every node applies every chat event with the same id (chat/cluster), so each node's hub sees
the same history; this store is where it is kept for a node that starts later, for questions
older than the replay buffers, and across restarts of every node.

* **Layout.** One sorted set per conversation, `threadroom:history:<target>` (the target is
  `room_key(name)` or `conversation_key(a, b)`, as in SQLite mode), scored by the event id;
  each member is the event as a compact JSON list `[id, ts, kind, room, sender, recipient,
  userhost, text]`. Every question of `HistoryQuery` is then one range read by score
  (`ZRANGEBYSCORE`/`ZREVRANGEBYSCORE ... LIMIT`), two for `around`. A time bound is turned
  into an id bound first, by a binary search over the set's ranks in a Lua script (ids and
  times grow together, as SQLite mode assumes too). The set of conversations,
  `threadroom:history-targets`, is what retention by age walks.
* **Who writes.** The origin node only: the node whose user sent the message (the cluster hub
  tells the store through `origin`). One write per message, whatever the number of nodes,
  and ZADD of the same member twice would change nothing anyway. When a node is gone (killed
  with `kill -9`, or cut off), its writer may have died with messages queued: every other
  node then writes again what that node's users sent in the last `RECENT_S` (`rescue`).
* **Not the stream.** The event stream is trimmed behind every snapshot (20,000 entries at
  most), so it cannot be history measured in days; and reading it back would mean decoding
  every request of every room to answer a question about one.
* **Never blocking the hub.** `offer_event` (under the hub lock) appends to a bounded queue;
  one writer thread sends everything queued in one pipeline per batch (a `ZADD` per
  conversation with all its new events). Redis away or refusing: the batch is lost, counted,
  and "history degraded" is logged once; the chat goes on.
* **No hole after a message.** Every event this node applied (any origin) is also kept in
  memory for `RECENT_S` (at most `MAX_RECENT` events) and merged into answers, so a user who
  has just seen a message finds it in `/history` even before its origin node's writer has
  sent it to Redis.

Room records (topic, key, secret flag, creator) are part of the cluster's replica and its
snapshots, not of this store: `rooms()` is empty and `offer_room` keeps nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from chat.store import (
    MAX_HISTORY_LIMIT,
    HistoryEvent,
    HistoryQuery,
    RoomRecord,
    StoreError,
    StoreStats,
    fields,
    from_fields,
    select,
    target_of,
)

log = logging.getLogger("chat.store")

KEY_PREFIX = "threadroom"
# Events that may wait for the writer (as in SQLite mode): a pipeline of a few thousand ZADDs
# takes milliseconds, so the queue only fills if Redis stalls; then history is dropped
# (counted, logged), never the chat. 20,000 events of ~300 bytes are ~6 MB.
DEFAULT_QUEUE_EVENTS = 20_000
MAX_BATCH = 5_000  # events in one pipeline
COMMAND_TIMEOUT_S = 2.0  # one pipeline or one read; a paused Redis is noticed after this
# Readers asking at the same moment share this many connections (a pool that blocks, at most
# READ_WAIT_S, when all are busy), as SQLite mode's READERS.
READERS = 4
READ_WAIT_S = 5.0
# Events applied here in the last RECENT_S seconds (at most MAX_RECENT) answer questions too:
# their origin node writes them within milliseconds unless Redis is away.
RECENT_S = 30.0
MAX_RECENT = 10_000
# Retention by age: one node at a time (a key with this TTL elects it), this often.
RETENTION_EVERY_S = 60.0

# The score (event id) of the first event, in id order, whose time is >= ARGV[1] (> ARGV[1]
# when ARGV[2] is "1"), or -1: a binary search over ranks, since ids and times grow together.
# KEYS[1]: a conversation's sorted set. Each member is [id, ts, ...]: cjson reads its ts.
_FIRST_AT = """
local n = redis.call('ZCARD', KEYS[1])
local t = tonumber(ARGV[1])
local strict = ARGV[2] == '1'
local lo, hi = 0, n
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  local ts = cjson.decode(redis.call('ZRANGE', KEYS[1], mid, mid)[1])[2]
  if ts < t or (strict and ts == t) then lo = mid + 1 else hi = mid end
end
if lo >= n then return -1 end
return redis.call('ZRANGE', KEYS[1], lo, lo, 'WITHSCORES')[2]
"""

# Retention by age: removes a conversation's events older than ARGV[1] (the same binary
# search), and forgets the conversation (KEYS[2], the set of targets; ARGV[2], this target)
# once it is empty. Returns how many it removed.
_TRIM_OLDER = """
local n = redis.call('ZCARD', KEYS[1])
local t = tonumber(ARGV[1])
local lo, hi = 0, n
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  local ts = cjson.decode(redis.call('ZRANGE', KEYS[1], mid, mid)[1])[2]
  if ts < t then lo = mid + 1 else hi = mid end
end
if lo > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, lo - 1) end
if lo >= n then redis.call('SREM', KEYS[2], ARGV[2]) end
return lo
"""


def encode(event: HistoryEvent) -> str:
    """The sorted set's member for `event`: its `fields()` [id, ts, kind, room, sender,
    recipient, userhost, text] as compact JSON (the id makes two equal lines two members)."""
    return json.dumps(fields(event), ensure_ascii=False, separators=(",", ":"))


def decode(member: str) -> HistoryEvent:
    """The event `encode` made."""
    return from_fields(json.loads(member))


def _where(url: str) -> str:
    from chat.cluster.hub import redact  # here: chat.cluster.hub imports this module

    return redact(url)


class RedisStore:
    """A HistoryStore (chat/store/__init__.py) in the cluster's Redis/Valkey.

    Thread safety: `_lock` (a leaf lock) guards `_queue` (what the writer has yet to take),
    `_queued`, `_recent` (target -> events applied here lately, oldest first) with
    `_recent_order` (when each was offered, and its target: the order they expire in), the
    counters and `_stopping`. `offer_event` runs under the hub lock: it asks `origin()` (a
    thread-local read of the cluster hub's follower), appends under `_lock` and never touches
    the network; `_wake` (a Condition on `_lock`) wakes the writer. The writer thread alone
    uses `_writer_client`; readers use `_reader_client` (a blocking pool of READERS
    connections). A reader copies its conversation's recent events first and reads Redis
    second (an event written in between is then in Redis; duplicates by id count once), and
    never holds `_lock` while it waits for Redis. Lock order: hub lock -> `_lock`.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = KEY_PREFIX,
        queue_events: int = DEFAULT_QUEUE_EVENTS,
        retention_days: float | None = None,
        max_per_target: int | None = None,
        clock: Callable[[], float] = time.time,
        recent_s: float = RECENT_S,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        self.url = url
        # Whether this node writes the event being offered (its origin is this node's user);
        # None: every offered event is written. The cluster hub sets it (chat/cluster).
        self.origin: Callable[[], bool] | None = None
        self._prefix = f"{key_prefix}:history:"
        self._targets_key = f"{key_prefix}:history-targets"
        self._retention_key = f"{key_prefix}:history-retention"
        self._queue_events = queue_events
        self._retention_s = retention_days * 86400 if retention_days else None
        self._max_per_target = max_per_target or None
        self._clock = clock
        self._recent_s = recent_s
        self._command_timeout_s = command_timeout_s  # tests lengthen it
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: list[tuple[str, HistoryEvent]] = []
        self._queued = 0
        self._recent: dict[str, deque[HistoryEvent]] = {}
        self._recent_order: deque[tuple[float, str]] = deque()
        self._stopping = False
        self._deadline: float | None = None
        self._written = self._dropped = self._failed = 0
        self._drop_told = self._failure_told = False
        self._writer_client: redis.Redis | None = None
        self._reader_client: redis.Redis | None = None
        self._first_at: Any = None
        self._trim_older: Any = None
        self._writer: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._listed: set[str] = set()  # conversations the writer has put in the targets set

    @property
    def description(self) -> str:
        return f"the cluster's Redis, {_where(self.url)}"

    def key(self, target: str) -> str:
        """The sorted set of conversation `target`."""
        return self._prefix + target

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Connects and starts the writer; a second call does nothing (the cluster hub starts
        the store before it loads the replica, the server asks again)."""
        if self._started:
            return
        try:
            # One attempt per command (redis-py retries three times by default): a failed
            # batch is counted and the next one tries again; a stop never waits for retries.
            self._writer_client = redis.Redis.from_url(
                self.url,
                socket_timeout=self._command_timeout_s,
                socket_connect_timeout=COMMAND_TIMEOUT_S,
                decode_responses=True,
                retry=Retry(NoBackoff(), 0),
            )
            pool = redis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=READERS,
                timeout=READ_WAIT_S,
                socket_timeout=self._command_timeout_s,
                socket_connect_timeout=COMMAND_TIMEOUT_S,
                decode_responses=True,
                retry=Retry(NoBackoff(), 0),
            )
            self._reader_client = redis.Redis(connection_pool=pool)
            self._writer_client.ping()
            self._first_at = self._reader_client.register_script(_FIRST_AT)
            self._trim_older = self._writer_client.register_script(_TRIM_OLDER)
        except (ValueError, redis.RedisError) as error:
            self._close_clients()
            raise StoreError(f"history in {self.description} cannot be used: {error}") from None
        self._started = True
        self._writer = threading.Thread(target=self._write_loop, name="history writer")
        self._writer.start()

    def last_id(self) -> int:
        """0: in a cluster, ids come from the replica (its snapshot and stream), not from here."""
        return 0

    def rooms(self) -> Sequence[RoomRecord]:
        """Nothing: room records live in the cluster's replica and its snapshots."""
        return ()

    def latest(self, targets: Sequence[str], limit: int) -> dict[str, list[HistoryEvent]]:
        found: dict[str, list[HistoryEvent]] = {}
        for target in targets:
            events = self.history(HistoryQuery(target, limit=limit))
            if events:
                found[target] = events
        return found

    # -- offers (under the hub lock: never block) ----------------------------------------------

    def offer_event(self, event: HistoryEvent) -> bool:
        writes = self.origin is None or self.origin()
        now = time.monotonic()
        target = target_of(event)
        with self._lock:
            self._remember_locked(target, event, now)
            if not writes:
                return True  # its origin node writes it
            if self._stopping or self._queued >= self._queue_events:
                self._dropped += 1
                return False
            self._queue.append((target, event))
            self._queued += 1
            if self._queued == 1:
                self._wake.notify()
            return True

    def _remember_locked(self, target: str, event: HistoryEvent, now: float) -> None:
        recent = self._recent.get(target)
        if recent is None:
            recent = self._recent[target] = deque()
        recent.append(event)
        order = self._recent_order
        order.append((now, target))
        horizon = now - self._recent_s
        while order and (len(order) > MAX_RECENT or order[0][0] < horizon):
            _, old = order.popleft()
            events = self._recent[old]
            events.popleft()  # each target's deque is in the same order as `order`
            if not events:
                del self._recent[old]

    def rescue(self, senders: set[str]) -> int:
        """Queues again every recent event (the last `recent_s` seconds) sent by one of
        `senders` (nicknames): those of a node that is gone, whose own writer may have died
        with them queued. Every surviving node does it; writing an event twice changes nothing
        (the same member of the same sorted set). Returns how many were queued."""
        with self._lock:
            if self._stopping:
                return 0
            rescued = [
                (target, event)
                for target, events in self._recent.items()
                for event in events
                if event.sender in senders
            ][: max(0, self._queue_events - self._queued)]
            self._queue.extend(rescued)
            self._queued += len(rescued)
            if rescued:
                self._wake.notify()
            return len(rescued)

    def offer_room(self, record: RoomRecord) -> bool:
        """Room records are the cluster replica's (its snapshots): nothing to keep here."""
        return True

    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(
                self._written, self._dropped, self._failed, bool(self._dropped or self._failed)
            )

    # -- reading (reader threads, no hub lock) -------------------------------------------------

    def history(self, query: HistoryQuery) -> list[HistoryEvent]:
        limit = max(0, min(query.limit, MAX_HISTORY_LIMIT))
        if limit == 0:
            return []
        with self._lock:  # recent events first, then Redis (see the class's docstring)
            recent = list(self._recent.get(query.target, ()))
        try:
            stored = self._query(query, limit)
        except redis.RedisError as error:
            log.warning("history: reading %s failed: %s", self.description, error)
            stored = []
        return select([*stored, *recent], query)

    def _query(self, query: HistoryQuery, limit: int) -> list[HistoryEvent]:
        """The events that may answer `query` (select() makes the final cut): range reads by
        score, a time bound turned into an id bound first."""
        client = self._reader_client
        if client is None:
            return []
        key = self.key(query.target)
        lower: float | None = query.after
        upper: float | None = query.before
        if query.after_ts is not None:  # newer than: after the last event at or before it
            first = int(self._first_at(keys=[key], args=[repr(query.after_ts), "1"]))
            bound = float("inf") if first < 0 else first - 1
            lower = bound if lower is None else max(lower, bound)
        if query.before_ts is not None:  # older than: before the first event at or after it
            first = int(self._first_at(keys=[key], args=[repr(query.before_ts), "0"]))
            if first >= 0:
                upper = first if upper is None else min(upper, first)
        members: Any
        if query.around is not None:
            members = client.zrevrangebyscore(key, f"({query.around}", "-inf", 0, limit)
            members += client.zrangebyscore(key, query.around, "+inf", 0, limit + 1)
        else:
            low = "-inf" if lower is None else f"({lower}"
            high = "+inf" if upper is None else f"({upper}"
            if lower == float("inf"):
                return []
            if query.keeps_newest():
                members = client.zrevrangebyscore(key, high, low, 0, limit)
            else:
                members = client.zrangebyscore(key, low, high, 0, limit)
        return [decode(member) for member in members]

    # -- the writer thread ---------------------------------------------------------------------

    def _write_loop(self) -> None:
        next_retention = 0.0
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if not self._queue:
                    break  # stopping, and everything is written
                if self._deadline is not None and time.monotonic() > self._deadline:
                    left = self._queued
                    self._dropped += left
                    self._queue.clear()
                    self._queued = 0
                    log.warning("history: stop deadline: %d queued event(s) not written", left)
                    break
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                drops_to_tell = self._dropped if not self._drop_told and self._dropped else 0
                if drops_to_tell:
                    self._drop_told = True
            if drops_to_tell:
                log.warning(
                    "history degraded: the writer fell behind and %d event(s) were not stored"
                    " (queue of %d full); chat goes on, further drops are only counted",
                    drops_to_tell,
                    self._queue_events,
                )
            error = self._write(batch)
            with self._lock:
                self._queued -= len(batch)
                if error is None:
                    self._written += len(batch)
                else:
                    self._failed += len(batch)
                tell_failure = error is not None and not self._failure_told
                if tell_failure:
                    self._failure_told = True
            if tell_failure:
                log.error(
                    "history degraded: writing to %s failed (%s); %d event(s) lost, chat goes"
                    " on, further failures are only counted",
                    self.description,
                    error,
                    len(batch),
                )
            if error is None and self._retention_s is not None:
                next_retention = self._apply_retention(next_retention)
            elif time.monotonic() >= next_retention:
                next_retention = time.monotonic() + RETENTION_EVERY_S
                self._listed.clear()
        self._close_clients()

    def _write(self, batch: list[tuple[str, HistoryEvent]]) -> str | None:
        """One pipeline for the batch: a ZADD per conversation (all its new events), the
        names of conversations new to this node, the trim by count. The error's text if it
        failed. The writer thread alone calls it (and alone touches `_listed`)."""
        client = self._writer_client
        assert client is not None
        by_target: dict[str, dict[str, int]] = {}
        for target, event in batch:
            by_target.setdefault(target, {})[encode(event)] = event.id
        try:
            pipe = client.pipeline(transaction=False)
            for target, members in by_target.items():
                pipe.zadd(self.key(target), members)
                if self._max_per_target is not None:
                    pipe.zremrangebyrank(self.key(target), 0, -(self._max_per_target + 1))
            new = [target for target in by_target if target not in self._listed]
            if new:  # once per conversation and node, not once per batch
                pipe.sadd(self._targets_key, *new)
            pipe.execute()
            self._listed.update(new)
        except redis.RedisError as error:
            self._listed.clear()  # Redis may come back without its data: list them again
            # A pipeline's error names the failed command with its arguments: never log
            # users' messages, only what went wrong.
            reason = str(error).rsplit("caused error: ", 1)[-1]
            return f"{type(error).__name__}: {reason}"
        return None

    def _apply_retention(self, next_check: float) -> float:
        """Deletes events older than --history-days, every RETENTION_EVERY_S, on one node at a
        time (whichever sets the election key first). Returns when to look again."""
        now = time.monotonic()
        if now < next_check or self._retention_s is None:
            return next_check
        # A conversation that retention emptied (on any node) leaves the targets set: name
        # every conversation again once a minute, so new messages there are aged out too.
        self._listed.clear()
        client = self._writer_client
        assert client is not None
        try:
            elected = client.set(
                self._retention_key, "1", nx=True, px=int(RETENTION_EVERY_S * 1000)
            )
            if elected:
                cutoff = repr(self._clock() - self._retention_s)
                for target in client.sscan_iter(self._targets_key, count=500):
                    self._trim_older(
                        keys=[self.key(target), self._targets_key],
                        args=[cutoff, target],
                        client=client,
                    )
        except redis.RedisError as error:
            log.warning("history: retention on %s failed: %s", self.description, error)
        return now + RETENTION_EVERY_S

    def _close_clients(self) -> None:
        for client in (self._writer_client, self._reader_client):
            if client is not None:
                with contextlib.suppress(redis.RedisError):
                    client.close()

    # -- stop ----------------------------------------------------------------------------------

    def stop(self, timeout_s: float) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stopping = True
            self._deadline = time.monotonic() + timeout_s
            queued = self._queued
            self._wake.notify()
        if self._writer is None:
            self._close_clients()
            return
        # It gives up at the deadline, after at most one pipeline; a pipeline to a Redis that
        # does not answer (paused, a partition) would wait out its socket timeout: closing
        # its connection (shutdown() on the socket) wakes it at once.
        self._writer.join(max(0.0, timeout_s))
        if self._writer.is_alive() and self._writer_client is not None:
            self._writer_client.connection_pool.disconnect()
        self._writer.join()
        stats = self.stats()
        log.info(
            "history: %d event(s) written to Redis, %d dropped, %d failed (%d were queued at stop)",
            stats.written,
            stats.dropped,
            stats.failed,
            queued,
        )
