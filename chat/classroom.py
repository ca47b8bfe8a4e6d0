"""Classroom demo modes: the server's own parts with one safety removed, on purpose.

Off by default; `chat-server` logs a warning banner when one is on. See docs/classroom.md. Each
mode is a different part handed to the same `ChatServer` constructor; the code on the default
path is never changed for a demo.

* `--unsafe-registry`: `UnsafeHub` is the real `Hub`, method bodies unchanged, built with a lock
  that does nothing (`NoLock`) and with `SlowMotionDict`s, which pause for the race window right
  after a lookup (between the check and the act of check-then-act) and once while being
  iterated (in the middle of a broadcast). A check that finds a nickname free waits longer, up
  to `MEETING_WINDOWS` windows, for a second client checking the same name (`Meeting`): on a
  busy machine two clients that connect together reach that check up to tens of ms apart. The
  pauses do not create the races, they only make the windows that are always there wide enough
  to hit every time instead of once a month.
* `--lock-while-sending`: `DirectOutput` is the naive tutorial design: delivering a line sends
  it on the socket at once, one send per line, so the hub's broadcast loop sends to every peer
  while holding the hub lock, and one client that does not read stalls the whole room.
* `--one-at-a-time`: `SerialRunner` serves each connection in the accept thread itself, so the
  next client is accepted only when the current one has left.
* `--pool N`: `PoolRunner` serves connections from a `ThreadPoolExecutor(max_workers=N)`. A pool
  is right for short tasks; a chat connection lasts for hours, so client N+1 is accepted and then
  waits, silent, in the pool's queue until someone leaves.
"""

from __future__ import annotations

import logging
import select
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chat import events as ev
from chat.audit import Audit
from chat.config import ServerConfig
from chat.hub import DEFAULT_MAX_ROOMS, DEFAULT_ROOM, DEFAULT_ROOMS_PER_USER, Hub, Member
from chat.outbox import Output
from chat.protocol import nick_key
from chat.runner import Runner, Serve
from chat.server import ChatServer, OutputFactory, queued_output
from chat.waker import RUN_SLOTS, Waker

log = logging.getLogger("chat.classroom")

# Wide enough that two clients connecting "at the same time" (within a few ms on loopback) both
# get through a check before either acts, on a busy two-core laptop.
DEFAULT_RACE_WINDOW_S = 0.02
# The interpreter switches threads at least this often (default 5 ms), so unsynchronised
# threads interleave in more places.
DEMO_SWITCH_INTERVAL_S = 1e-5
# Naive sending: how long a send may block before the client is dropped. 0 means forever, the
# pure tutorial design, used for the stuck-server exercise.
DEFAULT_SEND_TIMEOUT_S = 2.0
# The naive design on loopback: the kernel would buffer megabytes for a client that does not
# read before a send blocks; a small buffer behaves like a slow link and shows the stall in
# seconds.
NAIVE_SNDBUF_BYTES = 8 * 1024
# The pause in the middle of a broadcast, as a fraction of the race window.
ITERATION_PAUSE_FRACTION = 0.1
# A check that found a nickname free keeps its window open up to this many race windows (100 ms
# by default) until a second client checks the same name. Two clients that connect together
# reached that check up to 40 ms apart at load average 7 on two cores (3 ms typically): with the
# plain 20 ms window, a busy machine now and then showed no clash in a whole run. A name nobody
# else asks for costs its join this wait, once, in the demo only.
MEETING_WINDOWS = 5
# How often a blocked naive send looks up to see whether its connection is being dropped.
_SEND_POLL_S = 0.25


class NoLock:
    """Looks like a lock, excludes nothing: the registry without its lock."""

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        return None


class Meeting:
    """Where the checks of one nickname wait for each other: the check-then-act window held
    open until a second thread has made the same check (or `longest_s` has passed).

    Both threads then act on "the name was free", in the hub's own code: the meeting decides
    only how long the first one pauses, as trio's `Sequencer` forces an interleaving in a test.

    Thread safety: `_cond` guards `_waiting` and `_arrivals` (nickname key -> count), used by
    every reader thread that checks a name; a waiter blocks up to `longest_s`, holding no lock.
    """

    def __init__(self, longest_s: float) -> None:
        self._longest_s = longest_s
        self._cond = threading.Condition()
        self._waiting: Counter[str] = Counter()
        self._arrivals: Counter[str] = Counter()

    def meet(self, key: str) -> bool:
        """Waits for another check of `key`, or releases the one waiting; False: nobody came."""
        with self._cond:
            if self._waiting[key]:
                self._arrivals[key] += 1
                self._cond.notify_all()
                return True
            self._waiting[key] += 1
            seen = self._arrivals[key]
            try:
                return self._cond.wait_for(lambda: self._arrivals[key] != seen, self._longest_s)
            finally:
                self._waiting[key] -= 1
                if not self._waiting[key]:  # nobody left at this name: forget it
                    del self._waiting[key]
                    self._arrivals.pop(key, None)

    def waiting(self, key: str) -> bool:
        """Whether a check of `key` is waiting for a second one."""
        with self._cond:
            return self._waiting[key] > 0


class SlowMotionDict(dict[Any, Any]):
    """A dict that pauses after each lookup and once during each iteration: the race window.

    With a `meeting`, a lookup of a nickname (a string key) that finds it free waits there for
    a second lookup of the same name first.
    """

    def __init__(
        self,
        pause: Callable[[], None],
        pause_iteration: Callable[[], None],
        meeting: Meeting | None = None,
    ) -> None:
        super().__init__()
        self._pause = pause
        self._pause_iteration = pause_iteration
        self._meeting = meeting

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        self._checked(key, found)  # checked, not yet acted on
        return found

    def get(self, key: Any, default: Any = None) -> Any:
        found = super().__contains__(key)
        value = super().get(key, default)
        self._checked(key, found)
        return value

    def _checked(self, key: object, found: bool) -> None:
        if not found and self._meeting is not None and isinstance(key, str):
            self._meeting.meet(key)
        self._pause()

    def __iter__(self) -> Iterator[Any]:
        for i, key in enumerate(super().__iter__()):
            yield key
            if i == 0:
                self._pause_iteration()  # half-way through a broadcast; a join now changes the size


class UnsafeHub(Hub):
    """`Hub` without its lock, with a widened race window; counts the damage it can see.

    Thread safety: none, on purpose. Duplicate nicknames are detected after each join and
    recorded in `audit`; crashed operations are recorded by the server; ghosts and lost members
    by the audit after each leave and at shutdown. Only public methods are wrapped.
    """

    def __init__(
        self,
        audit: Audit,
        race_window_s: float,
        name: str = DEFAULT_ROOM,
        *,
        rooms_per_user: int = DEFAULT_ROOMS_PER_USER,
        max_rooms: int = DEFAULT_MAX_ROOMS,
    ) -> None:
        def pause() -> None:
            time.sleep(race_window_s)

        def pause_iteration() -> None:
            # Shorter: a broadcast that crashes every time would hide the other races.
            time.sleep(race_window_s * ITERATION_PAUSE_FRACTION)

        meeting = Meeting(race_window_s * MEETING_WINDOWS)

        def slow_dict(role: str) -> dict[Any, Any]:
            # The nickname dicts pause after lookups (check-then-act). The default room's
            # member dict (what a broadcast iterates: the demos all happen there) only pauses
            # while iterated: it holds no check-then-act of its own.
            if role == "registry":
                return SlowMotionDict(pause, pause_iteration, meeting)
            return SlowMotionDict(lambda: None, pause_iteration)

        super().__init__(
            name,
            rooms_per_user=rooms_per_user,
            max_rooms=max_rooms,
            lock_factory=NoLock,
            dict_factory=slow_dict,
        )
        self.audit = audit
        self.meeting = meeting
        self._reported: dict[str, int] = {}  # nickname key -> holders reported
        self._problems_seen: set[str] = set()

    def join(self, member: Member, nick: str, userhost: str = "") -> ev.Welcome:
        try:
            return super().join(member, nick, userhost)
        finally:  # even if the broadcast crashed: the nickname may be taken twice by now
            key = nick_key(nick)
            holders = sum(1 for n in self.nicks() if nick_key(n) == key)
            if holders > self._reported.get(key, 1):
                self._reported[key] = holders  # each twin sees it: report it once
                self.audit.record("duplicate nickname", f"{holders} clients hold {nick!r}")

    def leave(self, member: Member, reason: str, message: str = "") -> bool:
        try:
            return super().leave(member, reason, message)
        finally:  # a leave may take someone else's registration with it, or crash half-way
            self._sweep(member)
            online = Counter(nick_key(n) for n in self.nicks())
            for key in [k for k in self._reported if online[k] <= 1]:
                del self._reported[key]  # the clash is over: a clash of a later run is news
            for problem in self.check_invariants():
                if problem not in self._problems_seen:  # each one once, not at every leave
                    self._problems_seen.add(problem)
                    self.audit.record("registry", problem)

    def _sweep(self, member: Member) -> None:
        """Removes what is left of `member`, which has gone: the end of a crashed leave.

        A leave that crashes half-way (its twin deleted the nickname entry first: KeyError)
        has unregistered the client but left it in #lobby. Every later join lists who is in the
        room by nickname and would crash on it: one crash would break the server for good, and
        the demo could be run only once per server. What is swept is counted as a violation;
        this is the demo's janitor, not a repair a real server could rely on.
        """
        found = []
        for state in list(self._rooms.values()):
            state.ops.discard(member)
            if member in state.members:
                state.members.pop(member, None)
                found.append(f"in {state.name}")
        self._rooms_of.pop(member, None)
        self._userhost.pop(member, None)
        self._realname.pop(member, None)
        self._away.pop(member, None)
        self._nick_of.pop(member, None)
        for key, (nick, holder) in list(self._by_key.items()):
            if holder is member:
                self._by_key.pop(key, None)
                found.append(f"registered as {nick!r}")
        if found:
            self.audit.record(
                "registry", f"left behind: {member!r} was still {' and '.join(found)} after it left"
            )


class DirectOutput:
    """The naive design's output: `offer()` sends each line on the socket at once, blocking,
    under whatever lock its caller holds (the hub lock, for a broadcast).

    Thread safety: `_send_lock` keeps two threads (a broadcaster and the client's own reader
    replying to it) from interleaving bytes on the socket; lock order: hub lock, then
    `_send_lock`. A send blocks for up to `send_timeout_s`, then the client is dropped as too
    slow ("send timed out"), like the real design does when a send queue is full, only after
    everyone has waited.
    """

    refusal_reason = ev.LeaveReason.SEND_TIMED_OUT

    def __init__(self, sock: socket.socket, send_timeout_s: float | None) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, NAIVE_SNDBUF_BYTES)
        self._sock = sock
        self._timeout = send_timeout_s
        self._send_lock = threading.Lock()
        self._closed = False
        self._cut_off = False  # dropped, or the socket failed: nothing more is sent

    def offer(self, data: bytes) -> bool:
        if self._cut_off or self._closed:
            return True  # leaving anyway: nothing more to send
        with self._send_lock:
            try:
                # The tutorial sends each message on its own: a batch of lines read at once is
                # taken apart again.
                for line in data.splitlines(keepends=True):
                    if not self._send_blocking(line):
                        return False
            except OSError:
                self._cut_off = True
        return True

    def claim(self) -> bytes | None:
        return None  # nothing ever waits: there is no queue

    def release(self, unsent: bytes = b"") -> None:
        return None

    def close(self) -> None:
        self._closed = True

    def discard(self) -> None:
        self._closed = self._cut_off = True

    @property
    def drained(self) -> bool:
        return self._closed

    def wait_drained(self, timeout: float) -> bool:
        return self._closed

    def wait_room(self, nbytes: int, timeout: float) -> bool:
        return True

    @property
    def size(self) -> int:
        return 0  # nothing ever waits: there is no queue

    def _send_blocking(self, data: bytes) -> bool:
        """Sends all of `data`, waiting as long as it takes (up to the timeout); False if the
        client did not take it in time."""
        view = memoryview(data)
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while view:
            try:
                view = view[self._sock.send(view) :]  # the socket is non-blocking
                continue
            except BlockingIOError:
                pass
            if self._cut_off:
                raise ConnectionAbortedError("connection is being dropped")
            left = _SEND_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                log.warning("a send blocked for %.1f s: dropping that client", self._timeout)
                return False
            select.select([], [self._sock], [], min(left, _SEND_POLL_S))
        return True


class SerialRunner:
    """Serves each connection in the thread that accepted it: one client at a time.

    Everyone else waits in the listen backlog, connected but unanswered: the "one thread serves
    one client" design of the first lesson. `ChatServer.stop()` shuts the current connection
    down, which returns the accept thread to its loop.
    """

    def run(self, key: object, serve: Serve, name: str) -> None:
        serve()

    def reap(self, key: object) -> None:
        return None

    def close(self) -> None:
        return None


class PoolRunner:
    """Serves connections from a fixed pool of threads (`ThreadPoolExecutor`).

    Right for short tasks, wrong for chat: a connection holds its thread for as long as the
    client stays, so client N+1 is accepted and then waits, silent (not even greeted), in the
    pool's queue until one of the first N leaves. Its registration deadline runs meanwhile.

    Thread safety: the executor is thread-safe; `_lock` guards `_waiting` (connections queued,
    reader not started) and `_serving` (readers running), changed by the accept thread in
    `run()` and by pool threads. `close()` is called by `stop()` after every connection was told
    to end: the ones still queued then run at once, see that, and end.
    """

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pool")
        self._lock = threading.Lock()
        self._waiting = 0
        self._serving = 0

    @property
    def waiting(self) -> int:
        """Connections accepted and queued for a pool thread."""
        with self._lock:
            return self._waiting

    def run(self, key: object, serve: Serve, name: str) -> None:
        def taken() -> None:
            with self._lock:
                self._waiting -= 1
                self._serving += 1
            try:
                serve()
            finally:
                with self._lock:
                    self._serving -= 1

        with self._lock:
            queued = self._serving + self._waiting >= self._workers  # no thread left for it
            self._waiting += 1
            waiting = self._waiting
        self._pool.submit(taken)
        if queued:
            log.warning(
                "%s waits for a thread: all %d pool threads are taken (%d waiting)",
                name.removeprefix("reader "),
                self._workers,
                waiting,
            )

    def reap(self, key: object) -> None:
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass(frozen=True)
class DemoOptions:
    unsafe_registry: bool = False
    race_window_s: float = DEFAULT_RACE_WINDOW_S
    lock_while_sending: bool = False
    send_timeout_s: float | None = DEFAULT_SEND_TIMEOUT_S
    one_at_a_time: bool = False
    pool: int | None = None  # serve connections from a pool of this many threads

    @property
    def any(self) -> bool:
        return (
            self.unsafe_registry
            or self.lock_while_sending
            or self.one_at_a_time
            or self.pool is not None
        )


def build_server(config: ServerConfig, options: DemoOptions) -> ChatServer:
    """A ChatServer with the demo modes of `options` switched on (none: the real server)."""
    audit = Audit()
    hub = None
    if options.unsafe_registry:
        hub = UnsafeHub(
            audit,
            options.race_window_s,
            config.room,
            rooms_per_user=config.rooms_per_user,
            max_rooms=config.max_rooms,
        )
    output: OutputFactory = queued_output
    if options.lock_while_sending:
        timeout = options.send_timeout_s

        def direct(sock: socket.socket, _config: ServerConfig) -> Output:
            return DirectOutput(sock, timeout)

        output = direct
    runner: Runner | None = None
    if options.one_at_a_time:
        runner = SerialRunner()
    elif options.pool is not None:
        runner = PoolRunner(options.pool)
    # The unsafe registry's races happen while clients register: with the waker's few
    # newcomers' slots (#14) only two register at a time and the demo would rarely show one.
    waker = None
    if options.unsafe_registry:
        waker = Waker(sleepers=config.max_clients, newcomer_slots=RUN_SLOTS)
    return ChatServer(config, hub=hub, runner=runner, output=output, audit=audit, waker=waker)


def banner(options: DemoOptions) -> list[str]:
    """The warning lines a server in a demo mode logs at start."""
    lines = []
    if options.unsafe_registry:
        lines.append(
            f"--unsafe-registry: the hub's registry runs WITHOUT ITS LOCK, race window "
            f"{options.race_window_s * 1000:g} ms: nicknames, members and broadcasts WILL break"
        )
    if options.lock_while_sending:
        timeout = options.send_timeout_s
        lines.append(
            "--lock-while-sending: broadcasts send to every client WHILE HOLDING THE LOCK: one "
            "slow client stalls everyone"
            + (f" (for up to {timeout:g} s per send)" if timeout else " (forever)")
        )
    if options.one_at_a_time:
        lines.append("--one-at-a-time: ONE CLIENT AT A TIME, everyone else waits")
    if options.pool is not None:
        lines.append(
            f"--pool {options.pool}: connections served by {options.pool} pooled threads: "
            f"client {options.pool + 1} waits, silent, until someone leaves"
        )
    if not lines:
        return []
    rule = "!" * 78
    return [rule, "DEMO MODE, for teaching only: never run this for real users", *lines, rule]


def shorten_switch_interval() -> float:
    """Makes the interpreter switch threads far more often; returns the old interval."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(DEMO_SWITCH_INTERVAL_S)
    return old
