"""ClusterHub: a Hub whose every change goes through one Redis Stream, applied by every node.

State-machine replication, with Redis as the sequencer. Every node (chat-server process) keeps
a full replica of the chat (the nickname namespace and every room) in an ordinary `Hub`. A
local user's request (join, say, rename, kick, ...) is not applied where it arrives: it is
appended to ONE stream (`XADD`, through a tiny Lua script that also numbers it), and every
node, the sender's own included, reads the stream in order (`XREAD BLOCK`) and applies each
entry to its replica with the very same `Hub` code. So:

* everyone sees one order: the stream's. A node delivers even its own users' messages only when
  the stream gives them back; every check ("nickname taken", "wrong key", "not an operator") is
  made on the same state in the same order on every node, so every node reaches the same answer;
  the origin node hands that answer back to the waiting user;
* the nickname claim is atomic cluster-wide: of two claims of one name, the one the stream holds
  first wins, on every node (`XADD` is one atomic step in Redis's single thread);
* nothing is lost on a blip: a node reading the stream resumes from the last id it applied;
  entries are numbered (`INCR` in the same script), so a gap that cannot be filled (the stream
  trimmed past a node that was away) is told to its users as a notice, never silence;
* a request whose `XADD` cannot reach Redis is retried with the same token until its deadline,
  and the script refuses an entry that arrives after that deadline, so a user told "not sent"
  was told the truth, and a retry that did get through twice is applied once (tokens are
  remembered);
* after Redis lost its data (restarted without persistence) every node re-enters its users
  through the new stream, and a node's own requests wait until its users and the other nodes'
  are back (the append script refuses them before: it checks the node's epoch), so a message
  sent meanwhile is applied where its sender and receivers are in their rooms. A request
  whose reply died with Redis is retried into the new stream and applied by every node, but
  delivered only by the nodes that had not applied it from the old one (tokens are kept across
  the loss); the new stream's events get the same ids on every node (an id floor).

Node liveness: each node refreshes a key with a TTL (`SET ... PX`); when a node's key has stayed
missing for a whole TTL more (kill -9), any node appends "node gone", and every node applies
it: that node's users leave ("their server went away") and their nicknames are free.

Snapshots: every SNAPSHOT_EVERY entries the replica is offered to Redis and the stream is
trimmed behind the snapshot before; a new node loads the latest and replays what follows.

Remote users are `RemoteMember`s in the replica: deliveries to them cost nothing (their own
node delivers to them). docs/cluster.md has the failure behaviour and the figures.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from chat import events as ev
from chat.cluster import history as cluster_history
from chat.hub import (
    DEFAULT_ROOM,
    ChatError,
    Hub,
    LinkError,
    Member,
    NickTaken,
    RoomState,
    Unavailable,
)
from chat.hub import muted as hub_muted
from chat.protocol import nick_key, room_key
from chat.store import StoreError
from chat.store.redis import RedisStore
from chat.wire import EncodeCache

log = logging.getLogger("chat.cluster")

KEY_PREFIX = "threadroom"
# A node refreshes its liveness key every heartbeat; the key lives TTL_BEATS heartbeats, and a
# node whose key stays missing for as long again is gone: at the default 1.5 s, a killed node
# is noticed within 3 + 3 + 1.5 = 7.5 s (the issue asks for 10). Waiting a whole TTL before
# believing a missing key matters after Redis was paused: every key expires at once when it
# resumes, and the live nodes need a moment to beat again.
DEFAULT_HEARTBEAT_S = 1.5
TTL_BEATS = 2.0
# The follower waits this long in XREAD for news before it looks at the stop flag again.
READ_BLOCK_MS = 250
READ_COUNT = 1000  # entries applied per XREAD at most
# Flow control of the follower: after applying entries for YIELD_EVERY_S without a pause (its
# XREAD pauses it between reads), it waits until the sender has sent what it queued (at most
# SENT_WAIT_S: a client whose socket is full is not waited for; a full outbox drops it).
# The first passes yielded the interpreter (`time.sleep(0)`) after every entry: a switch of
# threads per entry, 10-18 % more CPU per delivery flat out and a wait for the interpreter
# after each paced message. Yielding only every millisecond was cheaper but starved the sender
# (after each of its sends the follower took the interpreter back for another millisecond:
# one socket served per millisecond) and dropped clients with the default send queue; never
# yielding did too. Waiting for the sender does neither (docs/performance.md, "The cluster,
# third pass").
YIELD_EVERY_S = 0.001
SENT_WAIT_S = 0.05
# A user's request waits at most this long to be appended and applied; it covers a Redis
# paused for 5 s (SIGSTOP) with room to spare. After it, the user is told it was not sent.
REQUEST_TIMEOUT_S = 10.0
# Redis refuses an entry arriving after the request's deadline; the node gives up this much
# later, so that a clock difference below it between node and Redis cannot make "not sent" a
# lie.
CLOCK_MARGIN_S = 1.0
RETRY_S = 0.25  # between attempts to reach Redis again
COMMAND_TIMEOUT_S = 2.0  # one command to Redis; a paused Redis is noticed after this
CATCH_UP_TIMEOUT_S = 60.0  # a new node replays the stream before it listens
# The classroom demo's gap between its check (GET) and its claim (SET): a real GET, then SET
# over a network is a round trip or more apart. Without a gap the twins' two checks overlap
# only when their hellos arrive within the ~1 ms a claim takes to come back from the stream,
# and some runs showed no clash at all; with it, every run does (docs/classroom.md step 8).
RACY_CLAIM_GAP_S = 0.02
# Request tokens remembered to apply a retried request once (retries happen within seconds).
TOKENS_KEPT = 100_000
# close(): what the history writer still has queued is sent within this (#11).
HISTORY_STOP_S = 1.0
# After Redis lost its data a node appends its users' resync entries this many per pipeline
# (one round trip each batch, not one per user): its users' requests wait until all are in.
RESYNC_BATCH = 500
# ... and waits at most this long for the other nodes (that had users) to re-enter theirs
# before its own users' requests go: a message is then applied where every receiver is back.
# A node that died while Redis was away never does; after this the requests go anyway, and a
# node whose users were not back yet tells them (RESYNC_MISSED). It covers a follower's
# reconnection backoff after a long outage (redis-py retries with a jittered backoff).
RESYNC_WAIT_S = 5.0

GONE = "their server went away"
CUT_OFF = "this server lost its link to the cluster"
STATE_LOST = "the cluster's Redis restarted without its data: rebuilding who is where"
NICK_LOST = "your nickname was claimed by someone else while the cluster was rebuilt"
NICK_LOST_NOT_SENT = f"not sent: {NICK_LOST}"
RESYNC_FAILED = "the cluster could not be rebuilt in time: reconnect"
RESYNC_MISSED = "messages sent while the cluster was rebuilt may not all have reached you"
LINK_LOST = "cluster link lost, reconnecting"
LINK_BACK = "cluster link restored"
STOPPING = "the server is stopping"
NOT_SENT = "cluster link lost: not sent, try again in a moment"
LINK_SLOW = "cluster link slow: sent, but not confirmed yet"

# Append one request: numbered (for gap detection), refused after its deadline (so that a
# request the node gave up on can never appear later), and refused (0) unless Redis still holds
# the chat this node's replica belongs to (its epoch): after Redis lost its data, a node's
# requests wait until it has re-entered its users in the new stream, so every node applies them
# after their sender's resync entry (#12). After Redis lost its data, each entry also carries
# the floor of event ids (KEYS[4], `_RAISE_FLOOR`): every node numbers the new stream's events
# alike (`_apply_entry`). KEYS: stream, counter, epoch, id floor; ARGV: payload, deadline in ms
# since the epoch, the node's epoch. Returns the entry id, false if too late, 0 if the epoch
# is not the node's.
_APPEND = """
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[2]) then
  return false
end
if redis.call('GET', KEYS[3]) ~= ARGV[3] then
  return 0
end
local n = redis.call('INCR', KEYS[2])
local floor = redis.call('GET', KEYS[4])
if floor then
  return redis.call('XADD', KEYS[1], '*', 'n', n, 'c', ARGV[1], 'f', floor)
end
return redis.call('XADD', KEYS[1], '*', 'n', n, 'c', ARGV[1])
"""

# Event ids after Redis lost its data (#12). Ids are numbered by each node as it applies the
# stream; a node that was behind when Redis died, or one started afterwards, would number the
# new stream's events from another value than the others, for good. So at the loss every node
# starts the new stream's numbering from 1 (as a node started afterwards does), and before it
# appends anything in the new stream it raises the floor (this script: the max) to its own
# next id; the append script stamps the floor into every entry, and every node applying an
# entry takes next id = max(next id, floor): the same stream, the same start, the same ids on
# every node. Each node's users are back only through its own resync entries, appended after
# its floor: every event they see has an id above every id they saw before. KEYS: the floor;
# ARGV: this node's next id.
_RAISE_FLOOR = """
if tonumber(ARGV[1]) > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], ARGV[1])
end
"""

# Every SNAPSHOT_EVERY entries one node saves a snapshot of its replica in Redis (they are all
# the same there), and the stream is trimmed to the snapshot before it: a new node loads the
# latest snapshot and replays only what follows it, and the stream holds between one and two
# intervals of entries. KEYS: snapshot hash, stream; ARGV: number, entry id, state.
SNAPSHOT_EVERY = 10_000
# Which node builds a snapshot: the first to claim its number (SET NX). Building one stalls
# that node's follower (50,000 users: ~0.2 s under the hub lock, ~0.1 s more to encode it), and
# every node reaches the entry at about the same moment, so without the claim every node built
# it and all but one threw it away. A claim outlives any build; if its node dies before
# saving, the next interval's snapshot is taken by another (the stream is only trimmed behind
# a saved one, so nothing is lost meanwhile).
SNAPSHOT_CLAIM_MS = 60_000
_SAVE_SNAPSHOT = """
local have = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
if have >= tonumber(ARGV[1]) then return 0 end
local previous = redis.call('HGET', KEYS[1], 'id')
redis.call('HSET', KEYS[1], 'n', ARGV[1], 'id', ARGV[2], 'state', ARGV[3])
if previous then redis.call('XTRIM', KEYS[2], 'MINID', previous) end
return 1
"""

# What a request may do to the replica: the Hub's own operations, applied on every node.
_OPERATIONS: dict[str, Callable[..., Any]] = {
    "register": Hub.register,
    "join": Hub.join,
    "leave": Hub.leave,
    "rename": Hub.rename,
    "enter": Hub.enter,
    "part": Hub.part,
    "kick": Hub.kick,
    "set_topic": Hub.set_topic,
    "set_modes": Hub.set_modes,
    "say": Hub.say,
    "act": Hub.act,
    "whisper": Hub.whisper,
    "set_away": Hub.set_away,
}
_CLAIMS = ("register", "join")
# Messages that a node with no user in their room and no history only numbers (#12, third
# pass: _numbered_only).
_NUMBERED_ONLY = ("say", "act")
# Requests whose events are lines users read (chat-load counts them: exactly once). Applied
# again after Redis lost its data (their reply died with it), a node that delivered them from
# the old stream applies them muted. A change of state (part, rename, topic, ...) is told
# again: the resync re-entered its users as their node saw them, maybe before that change,
# and every node's users must hear the change after that re-entry, or they believe the old
# state (alice "joined #den" again in the resync, her part retried: she is out).
_MESSAGES = ("say", "act", "whisper")
# Entries are compact JSON; one encoder made once (json.dumps with any option but the defaults
# builds a new one per call, which costs more than encoding a short entry).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class NotSent(Unavailable):
    """Redis could not be reached before the request's deadline: it is not in the stream."""


class ClusterError(LinkError):
    """The cluster link cannot be opened (bad URL, wrong password, Redis not there)."""


def redact(url: str) -> str:
    """`url` without its password (for logs and errors): credentials are never logged."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return urlunsplit(parts._replace(netloc=user + host))
    except ValueError:
        return "<unreadable URL>"


class RemoteMember:
    """A user of another node in this node's replica: its own node delivers to it."""

    __slots__ = ("id",)

    def __init__(self, member_id: str) -> None:
        self.id = member_id

    def deliver(self, event: ev.Event, cache: EncodeCache | None = None) -> bool:
        return True

    def flush(self) -> None:
        pass

    def drop(self, reason: str) -> None:
        pass

    def __repr__(self) -> str:
        return f"RemoteMember({self.id})"


def _send_off(member: Member, reason: str) -> None:
    """Tells a local user why it is disconnected, then disconnects it after that line (a
    Connection: `end` records the reason, `shut_down` sends what is queued, then closes);
    `drop()` would discard the line."""
    member.deliver(ev.Notice(reason, time.time()))
    end = getattr(member, "end", None)
    shut_down = getattr(member, "shut_down", None)
    if end is None or shut_down is None:
        member.drop(reason)
        return
    end(reason)
    shut_down()


def _answer_all(waiting: Iterable[Future[Any]], problem: str) -> None:
    for future in waiting:
        with contextlib.suppress(InvalidStateError):  # the follower was first
            future.set_exception(Unavailable("", problem))


def _id_order(member_id: str) -> tuple[str, int]:
    node, _, number = member_id.partition("/")
    return node, int(number or 0)


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class ClusterHub(Hub):
    """A Hub that is one node of a cluster; same operations, same events, one order for all.

    Thread safety: the replica is the Hub's, behind THE hub lock, and only the follower thread
    changes it (it applies the stream). A reader thread asking for a change appends a request
    to Redis and waits on a `Future` that the follower resolves when it applies that request;
    no Redis call is ever made with the hub lock held. `_ids_lock` (a leaf: nothing is called
    under it; it may be taken inside the hub lock, never the reverse) guards `_id_of`/`_members`
    (local member <-> cluster-wide id; id -> member, local or remote), `_waiting` (token ->
    Future), `_link_up` and `_unsent`. `_applied_cond` (a leaf) wakes `barrier()` callers after
    each batch. `_epoch_cond` (a leaf) guards `held` and the follower's changes of `_epoch`;
    a reader whose append Redis refused for another epoch (it lost its data) waits on it,
    never holding another lock, until the follower has re-entered this node's users and the
    other nodes theirs (`_state_lost`, `_release_held`); readers read `_epoch` (one str) to
    append. The follower alone touches `_last_id`, `_done_id`, `_last_n`, `_tokens`,
    `_tokens_before`, `_ids_high` and the `_resync_*` fields (barrier() only reads
    `_done_id`, one str). Two threads of our own: the follower (XREAD, apply, snapshots) and
    the heartbeat (liveness key, node-gone checks, leaves to resend); both are joined in
    `close()`. Queries (who, rooms) read the local
    replica, which is at most one stream read behind; a ping waits until it is not
    (`barrier()`).
    `_wait_sent` is set once by `ChatServer.start()` (`attach_sender`); the follower calls it
    between entries holding no lock (it waits on the sender's own leaf lock, for at most
    SENT_WAIT_S).
    """

    def __init__(
        self,
        url: str,
        name: str = DEFAULT_ROOM,
        *,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        key_prefix: str = KEY_PREFIX,
        racy_claims: bool = False,
        **hub_options: Any,
    ) -> None:
        self._stamp = threading.local()  # the ts of the entry being applied (the follower's)
        super().__init__(name, clock=self._now, **hub_options)
        self.url = url
        self.node = uuid.uuid4().hex[:12]
        self.heartbeat_s = heartbeat_s
        # The classroom's demo (docs/classroom.md, "the lock does not cross processes"): a
        # nickname is checked here (GET), then claimed unconditionally (SET) on every node.
        self.racy_claims = racy_claims
        self.request_timeout_s = REQUEST_TIMEOUT_S  # tests shorten it
        self._stream = f"{key_prefix}:events"
        self._counter = f"{key_prefix}:seq"
        self._epoch_key = f"{key_prefix}:epoch"
        self._floor_key = f"{key_prefix}:id-floor"  # after Redis lost its data (#12)
        self._ids_high = 1  # the follower's: above every id this node handed out (_RAISE_FLOOR)
        self._snapshot_key = f"{key_prefix}:snapshot"
        self.snapshot_every = SNAPSHOT_EVERY  # tests make it small
        self._node_prefix = f"{key_prefix}:node:"
        self._ids_lock = threading.Lock()
        self._id_of: dict[Member, str] = {}
        self._members: dict[str, Member] = {}
        self._waiting: dict[str, Future[Any]] = {}
        self._unsent: list[str] = []  # leaves that could not be appended yet (payloads)
        self._link_up = True
        self._numbers = itertools.count(1)
        self._tokens: OrderedDict[str, None] = OrderedDict()  # applied request tokens
        # Tokens of requests applied before Redis lost its data (#12). A request whose append
        # Redis executed just before dying, reply lost, is retried into the new stream: a node
        # that applied it from the old stream applies it again (every replica must take the
        # same entries, or they part); if it is a message, it hands its events to nobody
        # (`hub.muted`): its users had them. A node that had not read it delivers it: every
        # user gets each line once (_MESSAGES).
        self._tokens_before: OrderedDict[str, None] = OrderedDict()
        self._last_id = "0-0"  # the newest entry read (set before it is applied)
        self._done_id = "0-0"  # the newest entry applied
        self._last_n = 0
        self._epoch = ""
        # -- Redis restarted without its data (#12): requests wait for this node's resync --
        # `_epoch_cond` (a leaf) guards changes of `_epoch` (only the follower makes them) and
        # `held`. A reader whose append Redis refused for another epoch waits on it until the
        # follower has appended its users' resync entries and taken the new epoch.
        self._epoch_cond = threading.Condition()
        self.held = 0  # requests waiting for this node's resync (tests)
        self._stale = threading.Event()  # an append met another epoch: the follower looks
        # The follower's alone: users of ours whose resync entry is not applied yet (a second
        # loss before then resyncs them again), and ids whose nickname the resync lost.
        self._resync_pending: dict[str, tuple[Member, list[Any]]] = {}
        self._resync_lost: set[str] = set()
        # The epoch this node has re-entered its users in, taken (requests released) once the
        # nodes in `_resync_awaited` said they are done too ("resynced"), or at a deadline.
        self._resync_epoch: str | None = None
        self._resync_awaited: set[str] = set()
        self._resync_until = 0.0  # time.monotonic()
        self.resync_wait_s = RESYNC_WAIT_S  # tests shorten it
        self._resync_missed: set[str] = set()  # ours that may have missed lines (below)
        self._caught_up = threading.Event()
        # Notified by the follower after each batch it applied (barrier() waits on it); its
        # lock is a leaf, held for a comparison.
        self._applied_cond = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._wait_sent: Callable[[float], bool] | None = None  # attach_sender()
        self.yield_every_s = YIELD_EVERY_S  # tests make it 0
        self._append: Any = None  # the registered numbering script (open())
        self._save_script: Any = None  # the snapshot script (open())
        self._redis: redis.Redis | None = None
        self._reader: redis.Redis | None = None
        self._beater: redis.Redis | None = None
        self._reader_id: int | None = None
        self.applied = 0  # entries applied (benchmarks, tests)
        self.numbered_only = 0  # messages only numbered here (_numbered_only; tests)
        self.snapshots_built = 0  # by this node (tests)
        # -- history (#11 in a cluster, chat/cluster/history.py) --
        # The node whose user sent a message writes it to the store; the others only record
        # it (replay buffers, the store's recent events). The follower says which (`_stamp`).
        if isinstance(self.store, RedisStore):
            self.store.origin = self._made_here

    # -- lifecycle (ChatServer.start() calls open(); stop() calls close() after the readers) ---

    def open(self) -> None:
        """Connects, replays the stream into the replica, starts the follower and heartbeat
        threads. Raises ClusterError with one clear sentence (bad URL, wrong password, Redis
        not there)."""
        where = redact(self.url)
        try:
            # redis-py reads a path of "/abc" as database 0 and "/1/2" as database 12: a typo
            # would silently join another chat. Only "/N" (or nothing: 0) is a database.
            path = urlsplit(self.url).path
            if self.url.startswith("redis") and path not in ("", "/") and not path[1:].isdigit():
                raise ValueError(f"the database is a number, like /0, not {path!r}")
            self._redis = self._client(COMMAND_TIMEOUT_S)
            self._reader = self._client(READ_BLOCK_MS / 1000 + COMMAND_TIMEOUT_S)
            self._beater = self._client(min(1.0, self.heartbeat_s / 2))
            self._redis.ping()
            self._append = self._redis.register_script(_APPEND)
            self._redis.set(self._epoch_key, uuid.uuid4().hex, nx=True)
            self._epoch = str(self._redis.get(self._epoch_key))
            self._save_script = self._redis.register_script(_SAVE_SNAPSHOT)
            snapshot: Any = self._redis.hgetall(self._snapshot_key)
            if snapshot:
                self._restore(json.loads(snapshot["state"]))
                self._last_id, self._last_n = snapshot["id"], int(snapshot["n"])
                self._done_id = self._last_id
            newest: Any = self._redis.xrevrange(self._stream, count=1)
            self._reader_id = self._reader.client_id()  # to wake its XREAD at close()
            self._beat()
        except ValueError as error:  # from_url: not a redis:// URL
            self._close_clients()
            raise ClusterError(f"bad cluster URL {where}: {error}") from None
        except redis.AuthenticationError as error:
            self._close_clients()
            raise ClusterError(
                f"Redis at {where} refused to log us in (wrong or missing password): {error}"
            ) from None
        except redis.RedisError as error:
            self._close_clients()
            raise ClusterError(f"cannot use Redis at {where}: {error}") from None
        self._open_history(loaded=bool(snapshot))
        if self.racy_claims:
            log.warning("cluster DEMO: nicknames are checked, then set: two users may get one")
        start_id = str(newest[0][0]) if newest else "0-0"
        self._threads = [
            threading.Thread(target=self._follow, name="cluster-follow"),
            threading.Thread(target=self._heartbeat, name="cluster-heartbeat"),
        ]
        if _stream_id(start_id) <= _stream_id(self._last_id):
            self._caught_up.set()
        self._target = _stream_id(start_id)
        for thread in self._threads:
            thread.start()
        if not self._caught_up.wait(CATCH_UP_TIMEOUT_S):
            self.close()
            raise ClusterError(f"could not replay the cluster's events from {where} in time")
        log.info(
            "cluster: node %s linked to %s (%d events replayed)", self.node, where, self.applied
        )

    def close(self) -> None:
        """Stops and joins the follower and heartbeat; forgets the other nodes' users (this
        node has left the cluster; its own users left through the stream, one by one)."""
        self._stopping.set()
        with self._applied_cond:
            self._applied_cond.notify_all()  # a barrier waiting for the follower returns
        with self._epoch_cond:
            self._epoch_cond.notify_all()  # a request held for a resync gives up
        if self._redis is not None and self._reader_id is not None and self._link_up:
            with contextlib.suppress(redis.RedisError):  # else XREAD returns within its block
                self._redis.client_unblock(self._reader_id)
        for thread in self._threads:
            thread.join()
        self._threads = []
        if self._redis is not None and self._link_up:
            with contextlib.suppress(redis.RedisError):  # else its key expires
                self._redis.delete(self._node_prefix + self.node)
        self._close_clients()
        if self.store is not None:  # history (#11): this hub started it in open()
            self.store.stop(HISTORY_STOP_S if self._link_up else 0.0)  # Redis away: no wait
        with self._ids_lock:
            everyone = sorted(self._members.items(), key=lambda item: _id_order(item[0]))
            self._members.clear()
            self._id_of.clear()
            waiting = list(self._waiting.values())
            self._waiting.clear()
        _answer_all(waiting, STOPPING)
        self.hush()
        for _member_id, member in everyone:
            Hub.leave(self, member, ev.LeaveReason.SHUTDOWN)

    def hush(self) -> None:
        """The server is stopping: as Hub.hush(), and every reader still waiting for an answer
        from the cluster is answered now (a Redis that is away must not hold up the stop:
        chat-server exits within 2 s of Ctrl-C); appends are no longer retried."""
        super().hush()
        with self._ids_lock:
            waiting = list(self._waiting.values())
        _answer_all(waiting, STOPPING)
        with self._epoch_cond:
            self._epoch_cond.notify_all()  # a request held for a resync gives up

    def _client(self, timeout: float) -> redis.Redis:
        return redis.Redis.from_url(
            self.url,
            socket_timeout=timeout,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
            decode_responses=True,
        )

    def _close_clients(self) -> None:
        for client in (self._redis, self._reader, self._beater):
            if client is not None:
                client.close()

    # -- what users ask: appended to the stream, applied by the follower, answered here -------

    def register(self, member: Member, nick: str, userhost: str = "", realname: str = "") -> None:
        self._request("register", member, nick, userhost, realname, **self._racy_check(nick))

    def join(self, member: Member, nick: str, userhost: str = "") -> ev.Welcome:
        welcome: ev.Welcome = self._request(
            "join", member, nick, userhost, **self._racy_check(nick)
        )
        return welcome

    def _racy_check(self, nick: str) -> dict[str, bool]:
        """The demo's GET: "is the name free?" asked of this node's replica, a moment before the
        claim reaches the stream; another node may be asking the same at the same instant."""
        if not self.racy_claims:
            return {}
        if self.holder(nick) is not None:
            raise NickTaken(nick)
        time.sleep(RACY_CLAIM_GAP_S)  # the demo's round trip between GET and SET
        return {"racy": True}

    def leave(self, member: Member, reason: str, message: str = "") -> bool:
        with self._ids_lock:
            member_id = self._id_of.get(member)
        if member_id is None:
            return False
        if self._hushed and not self._link_up:
            # Stopping while Redis is away: no waiting for it. This node's liveness key
            # expires, and the other nodes say "their server went away" for each user.
            return True
        payload, token = self._payload("leave", member_id, (reason, message), {})
        try:
            # While the server stops, a leave is appended but not waited for, and Redis is
            # not waited for either: if it is away, the node's liveness key expires and the
            # other nodes say "their server went away" for each user left behind.
            self._submit("leave", member, member_id, payload, token, wait=not self._hushed)
        except NotSent:
            if not self._hushed:
                # Redis is away: the heartbeat appends it (same token) once it is back. The
                # nickname stays taken until then (it is in every replica): never two holders.
                with self._ids_lock:
                    self._unsent.append(payload)
        except Unavailable:
            pass  # appended; it will be applied when the follower reads it
        return True

    def rename(self, member: Member, new: str) -> None:
        self._request("rename", member, new)

    def enter(self, member: Member, room: str, key: str = "", *, show_if_in: bool = True) -> bool:
        joined: bool = self._request("enter", member, room, key, show_if_in=show_if_in)
        return joined

    def part(self, member: Member, room: str, message: str = "") -> None:
        self._request("part", member, room, message)

    def kick(self, member: Member, room: str, nick: str, reason: str = "") -> None:
        self._request("kick", member, room, nick, reason)

    def set_topic(self, member: Member, room: str, topic: str) -> None:
        self._request("set_topic", member, room, topic)

    def set_away(self, member: Member, message: str) -> str | None:
        away: str | None = self._request("set_away", member, message)
        return away

    def set_modes(
        self, member: Member, room: str, changes: Iterable[tuple[str, str]]
    ) -> tuple[str, tuple[str, ...]]:
        modes, args = self._request("set_modes", member, room, [list(c) for c in changes])
        return modes, tuple(args)

    def say(
        self, member: Member, *texts: str, room: str | None = None, notice: bool = False
    ) -> None:
        self._request("say", member, *texts, room=room, notice=notice)

    def act(self, member: Member, text: str, room: str | None = None, *, echo: bool = True) -> None:
        self._request("act", member, text, room, echo=echo)

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
        self._request("whisper", member, to, text, echo=echo, notice=notice, action=action)

    # -- barriers: a ping (and text's /users) answers after what the cluster did before -------

    def barrier(self) -> None:
        """Waits (at most a request's deadline) until the follower has applied the stream up to
        its newest entry as of now: then every event any node published before the ping has
        been handed to this node's users. Without it a ping would only cover this node's own
        requests. Redis away: returns at once (the link-lost notice has said so)."""
        if self._redis is None:
            return
        try:
            newest: Any = self._redis.xrevrange(self._stream, count=1)
        except redis.RedisError:
            return
        if not newest:
            return
        target = _stream_id(str(newest[0][0]))
        with self._applied_cond:
            self._applied_cond.wait_for(
                lambda: _stream_id(self._done_id) >= target or self._stopping.is_set(),
                self.request_timeout_s,
            )

    def users(self) -> ev.UserList:
        self.barrier()  # text's `/users` is its delivery barrier
        return super().users()

    def _member_id(self, member: Member, *, claim: bool = False) -> str:
        with self._ids_lock:
            member_id = self._id_of.get(member)
            if member_id is None:
                if not claim:
                    raise Unavailable("", CUT_OFF)  # removed by "node gone" or a lost state
                member_id = f"{self.node}/{next(self._numbers)}"
                self._id_of[member] = member_id
                self._members[member_id] = member
            return member_id

    def _payload(
        self, op: str, member_id: str, args: Iterable[Any], kwargs: dict[str, Any]
    ) -> tuple[str, str]:
        """The stream entry for a request, and its token (unique: a retry is applied once)."""
        token = f"{self.node}:{next(self._numbers)}"
        command: dict[str, Any] = {"o": op, "r": token, "m": member_id, "t": time.time()}
        command["a"] = list(args)
        if kwargs:
            command["k"] = kwargs
        return _COMPACT.encode(command), token

    def _request(self, op: str, member: Member, *args: Any, **kwargs: Any) -> Any:
        member_id = self._member_id(member, claim=op in _CLAIMS)
        payload, token = self._payload(op, member_id, args, kwargs)
        return self._submit(op, member, member_id, payload, token)

    def _submit(
        self,
        op: str,
        member: Member,
        member_id: str,
        payload: str,
        token: str,
        *,
        wait: bool = True,
    ) -> Any:
        """Appends the request, waits until the follower has applied it here, and returns the
        Hub's answer (or raises its ChatError). Raises NotSent when Redis could not be reached
        before the deadline (the request is not in the stream, and never will be), Unavailable
        when it was appended but not applied in time (it will be)."""
        future: Future[Any] = Future()
        with self._ids_lock:
            self._waiting[token] = future
        deadline = time.time() + self.request_timeout_s
        try:
            self._append_until(payload, deadline)
            if not wait:
                return None
            try:
                return future.result(max(0.1, deadline + CLOCK_MARGIN_S - time.time()))
            except FutureTimeout:
                raise Unavailable("", LINK_SLOW) from None
        except ChatError:
            if op in _CLAIMS:
                self._forget_if_unclaimed(member, member_id)
            raise
        finally:
            with self._ids_lock:
                self._waiting.pop(token, None)

    def _append_until(self, payload: str, deadline: float, *, hold: bool = True) -> None:
        """XADD (through the numbering script), retried until `deadline`; the script refuses
        it after the deadline, so when this raises Unavailable the request is not in the
        stream, now or later. If Redis holds another chat than this node's replica (it lost
        its data), the request is held until this node's users are back in the new stream
        (`_state_lost`), then appended after them; `hold=False` (the heartbeat and the
        follower, which must not wait for the follower) raises NotSent instead."""
        assert self._redis is not None
        while True:
            epoch = self._epoch
            try:
                entry = self._append(
                    keys=[self._stream, self._counter, self._epoch_key, self._floor_key],
                    args=[payload, int(deadline * 1000), epoch],
                    client=self._redis,
                )
            except (redis.ConnectionError, redis.TimeoutError) as error:
                self._mark_down(error)
                late = time.time() > deadline + CLOCK_MARGIN_S
                if late or self._hushed or self._stopping.is_set():
                    raise NotSent("", NOT_SENT) from None
                self._stopping.wait(RETRY_S)
                continue
            except redis.RedisError as error:
                log.warning("cluster: Redis refused a request: %s", error)
                raise NotSent("", f"the cluster refused it: {error}") from None
            if entry is None:  # reached Redis after its deadline: refused there, not appended
                raise NotSent("", NOT_SENT)
            if entry == 0:  # another epoch: Redis lost the chat; not appended
                self._hold_for_resync(epoch, deadline, hold=hold)
                continue
            return

    def _hold_for_resync(self, epoch: str, deadline: float, *, hold: bool) -> None:
        """Redis refused an append made with `epoch`: it restarted without its data, and this
        node has not yet re-entered its users in the new stream. Appended now, the request
        would come before its sender's resync entry, and every node would apply it to a
        replica where the sender is in no room. It waits until the follower has appended
        them and taken the new epoch (then the caller appends it again: after them), or
        raises NotSent at the deadline or when the server stops."""
        self._stale.set()  # the follower checks the epoch at once, even if its XREAD did not fail
        if not hold:
            raise NotSent("", NOT_SENT)
        with self._epoch_cond:
            self.held += 1
            try:
                self._epoch_cond.wait_for(
                    lambda: self._epoch != epoch or self._hushed or self._stopping.is_set(),
                    max(0.0, deadline + CLOCK_MARGIN_S - time.time()),
                )
            finally:
                self.held -= 1
        if self._epoch == epoch or self._hushed or self._stopping.is_set():
            raise NotSent("", NOT_SENT)

    def _forget_if_unclaimed(self, member: Member, member_id: str) -> None:
        """A failed claim: the member has no nickname, so it has no cluster id either."""
        with self._lock:
            registered = member in self._nick_of
        if not registered:
            self._forget(member, member_id)

    def _now(self) -> float:
        stamp: float | None = getattr(self._stamp, "ts", None)
        return time.time() if stamp is None else stamp

    # -- the follower: reads the stream, in order, and applies it ------------------------------

    def _follow(self) -> None:
        assert self._reader is not None
        while not self._stopping.is_set():
            try:
                if not self._link_up or self._stale.is_set():
                    # Anyone may have seen it fail, or an append met another epoch: check what
                    # came back.
                    self._stale.clear()
                    epoch = self._reader.get(self._epoch_key)
                    resyncing = self._resync_epoch is not None and epoch == self._resync_epoch
                    if epoch != self._epoch and not resyncing:
                        self._state_lost()
                    self._mark_up()
                reply: Any = self._reader.xread(
                    {self._stream: self._last_id}, count=READ_COUNT, block=READ_BLOCK_MS
                )
            except redis.RedisError as error:
                self._mark_down(error)
                self._stopping.wait(RETRY_S)
                continue
            yielded = time.perf_counter()
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    try:
                        applied = self._apply_entry(entry_id, fields)
                    except Exception:  # a bug must not stop the follower: log it, go on
                        log.exception("cluster: entry %s could not be applied", entry_id)
                        applied = True
                    if not applied:
                        break  # reloaded from a snapshot: read on from there
                    self._done_id = entry_id  # barrier() waits for this, not for _last_id
                    # Let the sender catch up now and then: a thousand entries applied in one
                    # go fill outboxes faster than the one sender thread can empty them, and
                    # full outboxes drop their clients.
                    if time.perf_counter() - yielded >= self.yield_every_s:
                        self._let_output_out()
                        yielded = time.perf_counter()
            if self._resync_epoch is not None:
                self._release_held()  # at its deadline, even if nothing more is read
            if not self._caught_up.is_set() and _stream_id(self._last_id) >= self._target:
                self._caught_up.set()
            if reply:
                with self._applied_cond:
                    self._applied_cond.notify_all()

    def attach_sender(self, wait_sent: Callable[[float], bool]) -> None:
        self._wait_sent = wait_sent

    def _let_output_out(self) -> None:
        """The follower's pause (YIELD_EVERY_S): until the sender has sent what is queued, or
        only a turn of the interpreter before the server's sender runs (catching up at open())."""
        wait_sent = self._wait_sent
        if wait_sent is None:
            time.sleep(0)
        else:
            wait_sent(SENT_WAIT_S)

    def _apply_entry(self, entry_id: str, fields: dict[str, str]) -> bool:
        """Applies one entry; False if the replica was reloaded instead (a gap)."""
        number = int(fields.get("n", 0))
        if number <= self._last_n:
            # The counter went back: Redis lost its data and started again.
            try:
                self._state_lost()
            except redis.RedisError as error:
                self._mark_down(error)
        elif number > self._last_n + 1 and self._last_n:
            lost = number - self._last_n - 1
            log.error("cluster: %d event(s) could not be recovered (the stream was trimmed)", lost)
            self.announce(f"{lost} chat event(s) could not be recovered from the cluster")
            try:
                self._reload()
            except redis.RedisError as error:
                self._mark_down(error)
            return False
        self._last_n = number
        self._last_id = entry_id
        self.applied += 1
        if "f" in fields:  # Redis lost its data before: number as every node does (#12)
            with self._lock:
                self._next_id = max(self._next_id, int(fields["f"]))
        try:
            command = json.loads(fields["c"])
        except (KeyError, ValueError):
            log.error("cluster: unreadable entry %s", entry_id)
            return True
        self._apply_command(command)
        if self.snapshot_every and number % self.snapshot_every == 0:
            self._save_snapshot(entry_id, number)
        return True

    def _apply_command(self, command: dict[str, Any]) -> None:
        token = command.get("r", "")
        if token in self._tokens:
            return  # a retry of a request that got through before
        self._tokens[token] = None
        if len(self._tokens) > TOKENS_KEPT:
            self._tokens.popitem(last=False)
        op = command.get("o")
        if op == "gone":
            self._apply_gone(str(command["a"][0]), str(command["a"][1]))
            return
        if op == "resync":
            self._apply_resync(str(command.get("m")), command["a"])
            return
        if op == "resynced":
            self._resync_awaited.discard(str(command["a"][0]))
            self._release_held()
            return
        if self._resync_pending and not str(command.get("m", "")).startswith(self.node + "/"):
            # Another node's request before some of our users are back (it waited
            # resync_wait_s for us in vain): what it says may not reach them. They are told
            # when they are back (_apply_resync): a notice, never silence.
            self._resync_missed.update(self._resync_pending)
        self._apply_request(op, command, muted=op in _MESSAGES and token in self._tokens_before)

    def _apply_request(self, op: Any, command: dict[str, Any], *, muted: bool = False) -> None:
        """Applies a user's request to the replica and answers its waiting reader, if ours.
        `muted`: this node applied it before Redis lost its data; its events go to nobody."""
        member_id = str(command.get("m"))
        with self._ids_lock:
            member = self._members.get(member_id)
            future = self._waiting.get(command.get("r", ""))
            orphan = member is None and member_id.startswith(self.node + "/")
            if member is None and op in _CLAIMS:
                # Another node's user; or one of ours whose connection this node has already
                # let go (a claim still in flight when the replica was reloaded): every node
                # applies it alike, and this node then takes it out again with a leave.
                member = self._members[member_id] = RemoteMember(member_id)
                if orphan:
                    payload, _token = self._payload("leave", member_id, (CUT_OFF, ""), {})
                    self._unsent.append(payload)  # the heartbeat appends it
        operation = _OPERATIONS.get(op)
        outcome: Any = None
        error: BaseException | None = None
        if member is None or operation is None:
            lost = member_id in self._resync_lost  # its nickname went in a resync (#12)
            error = Unavailable("", NICK_LOST_NOT_SENT if lost else CUT_OFF)
        else:
            self._stamp.ts = float(command.get("t", 0)) or None
            self._stamp.local = not isinstance(member, RemoteMember)  # history: who writes
            arguments = command.get("a", ())
            options = command.get("k", {})
            if options.pop("racy", False):  # the demo's SET: whoever held the name loses it
                with self._lock:
                    self._by_key.pop(nick_key(str(arguments[0])), None)
            # Whatever this node's own flag: a node started without it may replay a stream the
            # demo wrote (docs/classroom.md runs the two one after the other on one Redis).
            twin = self._racy_leave(member) if op == "leave" else None
            if muted:
                hub_muted.mark(True)
            try:
                if not self._numbered_only(op, member, arguments, options):
                    outcome = operation(self, member, *arguments, **options)
            except ChatError as refused:
                error = refused
            except Exception as bug:  # a bug must not stop the follower: log it, answer it
                log.exception("cluster: applying %s failed", op)
                error = bug
            finally:
                if muted:
                    hub_muted.mark(False)
                self._stamp.ts = None
                self._stamp.local = None
                if twin is not None:
                    with self._lock:
                        self._by_key[nick_key(twin[0])] = twin
            if op == "leave":
                self._forget(member, member_id)
            elif op in _CLAIMS and error is not None:
                # A failed claim unlinks a member that has no nickname; not one that has (a
                # claim retried after Redis lost its data meets its own resynced name, #12).
                self._forget_if_unclaimed(member, member_id)
        if future is not None:
            with contextlib.suppress(InvalidStateError):  # hush() may have answered it
                if error is None:
                    future.set_result(outcome)
                else:
                    future.set_exception(error)

    def _numbered_only(
        self, op: Any, member: Member, arguments: list[Any], options: dict[str, Any]
    ) -> bool:
        """A message (say, act) from another node's user to a room where this node has no
        user and keeps no history: nobody here would see it and nothing here records it, so
        the follower only takes its event ids (every replica must number the events alike)
        instead of cleaning, building and fanning out events to placeholders. True if so;
        False (apply it in full) whenever anything else could happen: a local user in the
        room, history on, or a request the Hub would refuse (it says why, on the origin node).
        """
        if self.store is not None or op not in _NUMBERED_ONLY or type(member) is not RemoteMember:
            return False
        if op == "say":
            room, count = options.get("room"), len(arguments)
            if not count:
                return False
        else:  # act(text, room)
            room, count = (arguments[1] if len(arguments) > 1 else None), 1
        with self._lock:
            state = self._rooms.get(room_key(str(room or self.name)))
            if state is None or member not in state.members:
                return False  # refused by the Hub's own checks, as on every node
            # A scan that stops at the first user of this node: a room with one is applied
            # in full anyway, and its fan-out walks every member too.
            if not all(type(m) is RemoteMember for m in state.members):
                return False
            self._next_id += count
        self.numbered_only += count
        return True

    def _racy_leave(self, member: Member) -> tuple[str, Member] | None:
        """Only the demo makes two users hold one name (the racy SET gave it to the second while
        the first kept it), and the name's entry is the second's. The first one's leave must
        take out its own name, not the second's entry: it is pointed at the leaver for the
        leave, and the second's is returned to be put back after it. Without this the leave
        fails half way and leaves a member no one can name in the room, and every later join
        fails (docs/classroom.md 7.8): the demo must work run after run, on the same servers,
        and so must the servers started after it without the flag on the same Redis. For any
        other leave the name's entry is the leaver's own: nothing changes."""
        with self._lock:
            nick = self._nick_of.get(member)
            if nick is None:
                return None
            k = nick_key(nick)
            holder = self._by_key.get(k)
            self._by_key[k] = (nick, member)
            if holder is None or holder[1] is member or holder[1] not in self._nick_of:
                return None
            return holder

    def _forget(self, member: Member, member_id: str) -> None:
        with self._ids_lock:
            if self._members.get(member_id) is member:
                del self._members[member_id]
            if self._id_of.get(member) == member_id:
                del self._id_of[member]

    def _apply_gone(self, node: str, reason: str) -> None:
        """Node `node` is gone: its users leave, on every node, in the same (id) order."""
        with self._ids_lock:
            victims = sorted(
                (mid for mid in self._members if mid.startswith(node + "/")), key=_id_order
            )
            members = [(mid, self._members[mid]) for mid in victims]
        if members:
            log.warning("cluster: node %s is gone; %d user(s) leave", node, len(members))
        if node != self.node and isinstance(self.store, RedisStore):
            # Its writer may have died with their last messages queued: write them again.
            with self._lock:
                senders = {self._nick_of[m] for _, m in members if m in self._nick_of}
            self.store.rescue(senders)
        for member_id, member in members:
            Hub.leave(self, member, reason)
            self._forget(member, member_id)
            if node == self.node:  # we were declared gone (we were away too long)
                _send_off(member, CUT_OFF)

    # -- snapshots: a new node starts from one; the stream is trimmed behind them -------------

    def _save_snapshot(self, entry_id: str, number: int) -> None:
        """Saves the replica as it is after entry `number` in Redis, if this node is the first
        to claim that number (every node reaches the same state there), and trims the stream
        behind the snapshot before."""
        assert self._reader is not None
        try:
            if int(self._reader.hget(self._snapshot_key, "n") or 0) >= number:
                return  # another node was first
            claim = f"{self._snapshot_key}:by:{number}"
            if not self._reader.set(claim, self.node, nx=True, px=SNAPSHOT_CLAIM_MS):
                return  # another node builds this one
            self.snapshots_built += 1
            state = json.dumps(self._snapshot_state(), separators=(",", ":"))
            self._save_script(
                keys=[self._snapshot_key, self._stream],
                args=[number, entry_id, state],
                client=self._reader,
            )
        except redis.RedisError as error:
            log.warning("cluster: snapshot at %s not saved: %s", entry_id, error)
        except Exception:  # a bug: the next snapshot may do better; the chat goes on
            log.exception("cluster: snapshot at %s not saved", entry_id)

    def _snapshot_state(self) -> dict[str, Any]:
        with self._lock, self._ids_lock:  # lock order: hub lock, then the leaf
            id_of = {member: member_id for member_id, member in self._members.items()}
            members = [
                [
                    id_of[m],
                    nick,
                    self._userhost.get(m, ""),
                    list(self._rooms_of.get(m, ())),
                    self._realname.get(m, ""),
                    self._away.get(m),
                ]
                for m, nick in self._nick_of.items()
            ]
            rooms = [
                [
                    s.name,
                    s.permanent,
                    [id_of[m] for m in s.members],
                    [id_of[m] for m in s.ops],
                    s.topic,
                    s.topic_by,
                    s.topic_ts,
                    s.key,
                    s.secret,
                ]
                for s in self._rooms.values()
            ]
            state = {"members": members, "rooms": rooms, "next_id": self._next_id}
            history = cluster_history.snapshot_locked(self)  # history (#11)
            if history is not None:
                state["history"] = history
            return state

    def _restore(self, state: dict[str, Any]) -> None:
        """Replaces the replica by a snapshot (every member in it is another node's, or one
        of ours about to be declared gone: `_reload`)."""
        members: dict[str, Member] = {}
        with self._lock:
            self._by_key.clear()
            self._nick_of.clear()
            self._userhost.clear()
            self._realname.clear()
            self._away.clear()
            self._rooms_of.clear()
            # A snapshot of an older node has no real name and away message (IRC's WHOIS).
            for member_id, nick, userhost, keys, *identity in state["members"]:
                member = members[member_id] = RemoteMember(member_id)
                self._by_key[nick_key(nick)] = (nick, member)
                self._nick_of[member] = nick
                self._userhost[member] = userhost
                self._rooms_of[member] = dict.fromkeys(keys)
                if identity and identity[0]:
                    self._realname[member] = identity[0]
                if len(identity) > 1 and identity[1]:
                    self._away[member] = identity[1]
            self._rooms.clear()
            for name, permanent, ids, ops, topic, topic_by, topic_ts, key, secret in state["rooms"]:
                self._rooms[room_key(name)] = RoomState(
                    name,
                    permanent=permanent,
                    members=dict.fromkeys(members[i] for i in ids),
                    ops={members[i] for i in ops},
                    topic=topic,
                    topic_by=topic_by,
                    topic_ts=topic_ts,
                    key=key,
                    secret=secret,
                )
            self._next_id = int(state["next_id"])
            cluster_history.restore_locked(self, state.get("history"))  # history (#11)
        with self._ids_lock:
            self._members.update(members)

    def _reload(self) -> None:
        """Entries this node had not read were trimmed away: its replica cannot be trusted.
        Its users are disconnected with a reason, the replica is loaded from the latest
        snapshot, and "node gone" is appended for this node, so that its old users leave
        everywhere (they were still in the others' replicas); they reconnect."""
        assert self._reader is not None
        with self._ids_lock:
            mine = [(i, m) for i, m in self._members.items() if i.startswith(self.node + "/")]
            self._members.clear()
            self._id_of.clear()
        for _member_id, member in mine:
            _send_off(member, CUT_OFF)
        snapshot: Any = self._reader.hgetall(self._snapshot_key)
        if snapshot:
            self._restore(json.loads(snapshot["state"]))
            self._last_id, self._last_n = snapshot["id"], int(snapshot["n"])
            self._done_id = self._last_id
            cluster_history.fill_replays(self)  # history (#11)
        self._append_gone(self.node)

    def _state_lost(self) -> None:
        """Redis came back without the chat (restarted without persistence). The replica is
        emptied without a word to anyone, the node follows the new stream from its start, and
        it appends one "resync" entry per user of its own (nickname, rooms, operator status,
        topics and keys it knew): every node applies them in stream order, so membership is
        rebuilt the same everywhere. A nickname someone else claimed first in the new stream
        is lost: that user is disconnected with a reason (never two holders).

        Meanwhile this node's requests are held (#12): Redis refuses them until the node takes
        the new epoch, which it does only once every resync entry of its users is in the new
        stream. A message retried across the restart therefore comes after its sender's
        resync entry, and every node applies it with the sender back in its rooms; a reader
        has one request in flight at a time, so each user's order is kept."""
        log.error("cluster: Redis lost the chat's state; resynchronising this node's users")
        self.announce(STATE_LOST)
        with self._lock:
            fresh = {
                member_id: (member, self._resync_state_locked(member))
                for member_id, member in self._id_of_items()
                if member in self._nick_of
            }
            everyone = list(self._nick_of)
            hushed, self._hushed = self._hushed, True  # nobody is told: they all come back
        # Users whose resync entry went to a stream that was lost before it was applied (Redis
        # restarted again during the resync) are not in the replica: resynced as they were.
        mine = sorted({**self._resync_pending, **fresh}.items(), key=lambda i: _id_order(i[0]))
        self._resync_pending = dict(mine)
        self._resync_lost.clear()
        self._resync_missed.clear()
        with self._ids_lock:  # the nodes that had users: they re-enter them too
            others = {member_id.partition("/")[0] for member_id in self._members} - {self.node}
        for member in everyone:
            Hub.leave(self, member, STATE_LOST)
        with self._lock:
            self._hushed = hushed
            # The new stream's ids: from 1 and its floors, as on every node (_RAISE_FLOOR).
            self._ids_high = max(self._ids_high, self._next_id)
            self._next_id = 1
        with self._ids_lock:
            for member_id in [
                m for m, who in self._members.items() if isinstance(who, RemoteMember)
            ]:
                del self._members[member_id]
        self._tokens_before.update(self._tokens)  # what this node's users already got
        while len(self._tokens_before) > TOKENS_KEPT:
            self._tokens_before.popitem(last=False)
        self._tokens.clear()
        self._last_id = self._done_id = "0-0"
        self._last_n = 0
        assert self._reader is not None
        self._reader.set(self._epoch_key, uuid.uuid4().hex, nx=True)
        epoch = str(self._reader.get(self._epoch_key))
        self._reader.eval(_RAISE_FLOOR, 1, self._floor_key, self._ids_high)  # before our entries
        self._resync_epoch = None
        if self._append_resyncs(mine, epoch):
            self._resync_epoch = epoch
            self._resync_awaited = others
            self._resync_until = time.monotonic() + self.resync_wait_s
            self._release_held()

    def _release_held(self) -> None:
        """Takes the new epoch (Redis then accepts this node's requests: the held ones go)
        once every other node that had users has said it re-entered them ("resynced"
        applied here), or RESYNC_WAIT_S after this node's own resync entries went in."""
        if self._resync_epoch is None:
            return
        if self._resync_awaited and time.monotonic() < self._resync_until:
            return
        if self._resync_awaited:
            log.warning(
                "cluster: node(s) %s did not re-enter their users in %.1f s; going on",
                ", ".join(sorted(self._resync_awaited)),
                self.resync_wait_s,
            )
        with self._epoch_cond:  # the held requests go now, after every node's resyncs
            self._epoch, self._resync_epoch = self._resync_epoch, None
            self._resync_awaited = set()
            self._epoch_cond.notify_all()

    def _append_resyncs(self, mine: list[tuple[str, tuple[Member, list[Any]]]], epoch: str) -> bool:
        """Appends the resync entries of this node's users under `epoch`, RESYNC_BATCH to a
        pipeline (a round trip per batch), each batch retried until a request's deadline (the
        tokens make a batch that got through twice count once). A user whose entry could not
        be appended is disconnected with a reason. False if Redis changed its epoch once more
        (restarted again): the follower starts the resync over."""
        assert self._redis is not None
        deadline = time.time() + self.request_timeout_s
        done = _COMPACT.encode(
            {"o": "resynced", "r": f"{self.node}:resynced:{uuid.uuid4().hex}", "a": [self.node]}
        )
        for start in range(0, max(1, len(mine)), RESYNC_BATCH):
            batch = mine[start : start + RESYNC_BATCH]
            last = start + RESYNC_BATCH >= len(mine)
            payloads = [
                _COMPACT.encode(
                    {
                        "o": "resync",
                        "r": f"{self.node}:resync:{member_id}",
                        "m": member_id,
                        "t": time.time(),
                        "a": state,
                    }
                )
                for member_id, (_member, state) in batch
            ]
            if last:  # then this node's users are all in: the others may let theirs talk
                payloads.append(done)
            entries: list[Any] = [None] * len(payloads)
            while not self._stopping.is_set():
                pipe = self._redis.pipeline(transaction=False)
                for payload in payloads:
                    self._append(
                        keys=[self._stream, self._counter, self._epoch_key, self._floor_key],
                        args=[payload, int(deadline * 1000), epoch],
                        client=pipe,
                    )
                try:
                    entries = pipe.execute()
                except (redis.ConnectionError, redis.TimeoutError) as error:
                    self._mark_down(error)
                    if time.time() > deadline + CLOCK_MARGIN_S:
                        break
                    self._stopping.wait(RETRY_S)
                    continue
                except redis.RedisError as error:
                    log.warning("cluster: Redis refused a resync: %s", error)
                break
            if 0 in entries:
                self._stale.set()
                return False
            for (member_id, (member, _state)), entry in zip(batch, entries, strict=False):
                if entry is None:
                    self._resync_pending.pop(member_id, None)
                    self._forget(member, member_id)
                    _send_off(member, RESYNC_FAILED)
        return True

    def _id_of_items(self) -> list[tuple[str, Member]]:
        with self._ids_lock:
            return [(member_id, member) for member, member_id in self._id_of.items()]

    def _resync_state_locked(self, member: Member) -> list[Any]:
        """What a resync entry says of `member`: [nick, userhost, [[room, op, topic, topic_by,
        topic_ts, key, secret], ...], real name, away message] (rooms in the order it joined
        them; the real name "" and the away message None if it gave none)."""
        rooms = []
        for k in self._rooms_of.get(member, ()):
            state = self._rooms[k]
            rooms.append(
                [
                    state.name,
                    member in state.ops,
                    state.topic,
                    state.topic_by,
                    state.topic_ts,
                    state.key,
                    state.secret,
                ]
            )
        return [
            self._nick_of[member],
            self._userhost.get(member, ""),
            rooms,
            self._realname.get(member, ""),
            self._away.get(member),
        ]

    def _apply_resync(self, member_id: str, state: list[Any]) -> None:
        """A user re-enters after Redis lost the chat: its nickname (if still free), then its
        rooms as it knew them (a room someone else rebuilt first keeps that one's key)."""
        nick, userhost, rooms, *identity = state  # an older node's has no real name, away
        mine = member_id.startswith(self.node + "/")
        if mine:
            self._resync_pending.pop(member_id, None)
        with self._ids_lock:
            member = self._members.get(member_id)
            if member is None and not mine:
                member = self._members[member_id] = RemoteMember(member_id)
        if member is None:
            return
        try:
            Hub.register(self, member, nick, userhost, identity[0] if identity else "")
        except ChatError:
            self._forget(member, member_id)
            if mine:  # its requests held for the resync are refused with this, not "not in"
                self._resync_lost.add(member_id)
                _send_off(member, NICK_LOST)
            return
        if len(identity) > 1 and identity[1]:
            Hub.set_away(self, member, identity[1])
        for name, op, topic, topic_by, topic_ts, key, secret in rooms:
            try:
                Hub.enter(self, member, name, key, show_if_in=False)
            except ChatError:
                continue
            with self._lock:
                room = self._rooms[room_key(name)]
                (room.ops.add if op else room.ops.discard)(member)
                if topic and not room.topic:
                    room.topic, room.topic_by, room.topic_ts = topic, topic_by, topic_ts
                if key and not room.key:
                    room.key = key
                room.secret = room.secret or secret
        if mine and member_id in self._resync_missed:
            self._resync_missed.discard(member_id)
            if member.deliver(ev.Notice(RESYNC_MISSED, time.time())):
                member.flush()

    # -- history (#11 in a cluster: chat/cluster/history.py, chat/store/redis.py) --------------

    def _open_history(self, *, loaded: bool) -> None:
        """Starts the store (before the follower: it records what it applies) and, when the
        replica came from a snapshot, fills the replay buffers from it. Raises ClusterError."""
        if self.store is None:
            return
        try:
            self.store.start()
        except StoreError as error:
            self._close_clients()
            raise ClusterError(str(error)) from None
        if loaded:
            cluster_history.fill_replays(self)

    def restore_history(self) -> None:
        """Nothing: a node's rooms, ids and replay buffers come from the cluster (open())."""

    def _made_here(self) -> bool:
        """Whether the event being applied was made by this node's user (its node writes it to
        the store; the follower sets the flag around each request)."""
        return getattr(self._stamp, "local", None) is not False

    # -- link state, heartbeat, node-gone checks ----------------------------------------------

    def _mark_down(self, error: BaseException) -> None:
        with self._ids_lock:
            was_up, self._link_up = self._link_up, False
        if was_up and not self._stopping.is_set():
            log.warning("cluster: %s (%s)", LINK_LOST, type(error).__name__)
            self.announce(LINK_LOST)

    def _mark_up(self) -> None:
        with self._ids_lock:
            was_up, self._link_up = self._link_up, True
        if not was_up:
            log.warning("cluster: %s", LINK_BACK)
            self.announce(LINK_BACK)

    def _beat(self) -> None:
        assert self._beater is not None
        ttl_ms = int(self.heartbeat_s * TTL_BEATS * 1000)
        self._beater.set(self._node_prefix + self.node, "1", px=ttl_ms)

    def _heartbeat(self) -> None:
        """Refreshes our liveness key; appends "node gone" for a node whose key is missing on
        two checks a heartbeat apart; appends the leaves Redis could not take when they
        happened."""
        suspects: dict[str, float] = {}  # node -> when its key was first seen missing
        confirm_s = self.heartbeat_s * TTL_BEATS
        wait = self.heartbeat_s
        while not self._stopping.wait(wait):
            assert self._beater is not None
            try:
                self._beat()
                self._resend_leaves()
                with self._ids_lock:
                    nodes = sorted({mid.partition("/")[0] for mid in self._members} - {self.node})
                pipe = self._beater.pipeline(transaction=False)
                for node in nodes:
                    pipe.exists(self._node_prefix + node)
                missing = {
                    node for node, alive in zip(nodes, pipe.execute(), strict=True) if not alive
                }
            except redis.RedisError as error:
                self._mark_down(error)
                suspects = {}  # our own view is stale: start counting again
                wait = RETRY_S
                continue
            wait = self.heartbeat_s
            now = time.monotonic()
            suspects = {node: suspects.get(node, now) for node in missing}
            for node in sorted(n for n, since in suspects.items() if now - since >= confirm_s):
                log.warning("cluster: node %s stopped beating", node)
                self._append_gone(node)

    def _append_gone(self, node: str) -> None:
        payload = json.dumps(
            {"o": "gone", "r": f"{self.node}:gone:{uuid.uuid4().hex}", "a": [node, GONE]},
            separators=(",", ":"),
        )
        with contextlib.suppress(Unavailable):  # else at the next heartbeat
            self._append_until(payload, time.time() + REQUEST_TIMEOUT_S, hold=False)

    def _resend_leaves(self) -> None:
        with self._ids_lock:
            unsent, self._unsent = self._unsent, []
        for index, payload in enumerate(unsent):
            try:
                self._append_until(payload, time.time() + REQUEST_TIMEOUT_S, hold=False)
            except Unavailable:
                with self._ids_lock:
                    self._unsent[:0] = unsent[index:]
                return
