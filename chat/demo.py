"""Classroom demo modes: the server's own Room and Session with one safety removed, on purpose.

Off by default; `chat-server` prints a warning banner when one is on. See docs/classroom.md.

* `UnsafeRoom` (`--unsafe-registry`) is the real `Room`, method bodies unchanged, with its lock
  swapped for a lock that does nothing and its two dicts swapped for `SlowMotionDict`s, which
  pause for the race window right after a lookup (between the check and the act of
  check-then-act) and once while being iterated (in the middle of a broadcast). The pauses do not
  create the races, they only make the windows that are always there wide enough to hit within
  seconds instead of once a month.
* `SendUnderLockSession` (`--lock-while-sending`) is the naive tutorial design: `deliver()`
  writes to the socket itself, one send per line, so the room's broadcast loop sends to every
  peer while holding the room lock, and one client that does not read stalls the whole room.
* `SerialServer` (`--one-at-a-time`) serves one client at a time: the accept loop waits for a
  client to leave before it accepts the next.
"""

from __future__ import annotations

import logging
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from chat import events as ev
from chat.audit import Audit
from chat.protocol import nick_key
from chat.room import DEFAULT_ROOM, Member, Room, RoomState
from chat.server import ChatServer
from chat.session import Session

log = logging.getLogger("chat.demo")

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
# How often a blocked naive send looks up to see whether its session is being dropped.
_SEND_POLL_S = 0.25


class NoLock:
    """Looks like a lock, excludes nothing: the registry without its lock."""

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc: object) -> None:
        return None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        return None


class SlowMotionDict(dict[Any, Any]):
    """A dict that pauses after each lookup and once during each iteration: the race window."""

    def __init__(self, pause: Callable[[], None], pause_iteration: Callable[[], None]) -> None:
        super().__init__()
        self._pause = pause
        self._pause_iteration = pause_iteration

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        self._pause()  # checked, not yet acted on
        return found

    def get(self, key: Any, default: Any = None) -> Any:
        value = super().get(key, default)
        self._pause()
        return value

    def __iter__(self) -> Iterator[Any]:
        for i, key in enumerate(super().__iter__()):
            yield key
            if i == 0:
                self._pause_iteration()  # half-way through a broadcast; a join now changes the size


class UnsafeRoom(Room):
    """`Room` without its lock, with a widened race window; counts the damage it can see.

    Thread safety: none, on purpose. Duplicate nicknames are detected after each join and
    recorded in `audit`; crashed operations are recorded by the server; ghosts and lost members
    by the audit at shutdown.
    """

    def __init__(self, audit: Audit, race_window_s: float, name: str = DEFAULT_ROOM) -> None:
        super().__init__(name)

        def pause() -> None:
            time.sleep(race_window_s)

        def pause_iteration() -> None:
            # Shorter: a broadcast that crashes every time would hide the other races.
            time.sleep(race_window_s * ITERATION_PAUSE_FRACTION)

        self.audit = audit
        self._reported: set[tuple[str, int]] = set()
        self._lock = NoLock()  # type: ignore[assignment]
        self._by_key = SlowMotionDict(pause, pause_iteration)
        self._nick_of = SlowMotionDict(pause, pause_iteration)
        # The default room's member list too: it is what a broadcast iterates (the demos and
        # chat-load all happen there; rooms made later by /join keep plain dicts).
        # Only its iteration is slowed: it holds no check-then-act of its own.
        for state in self._rooms.values():
            state.members = SlowMotionDict(lambda: None, pause_iteration)

    def join(self, member: Member, nick: str, userhost: str = "") -> ev.Welcome:
        try:
            return super().join(member, nick, userhost)
        finally:  # even if the broadcast crashed: the nickname may be taken twice by now
            # list() copies in one step of C code, so the copy itself cannot be torn.
            key = nick_key(nick)
            holders = [n for n in list(self._nick_of.values()) if nick_key(n) == key]
            if len(holders) > 1 and (key, len(holders)) not in self._reported:
                self._reported.add((key, len(holders)))  # each twin sees it: report it once
                self.audit.record("duplicate nickname", f"{len(holders)} clients hold {nick!r}")

    def _nicks_in_locked(self, state: RoomState) -> list[str]:
        # The newcomer's list of who is there: not one of the races this demo is about, so it
        # iterates without the pause (dict.keys() bypasses SlowMotionDict.__iter__).
        return [self._nick_of[m] for m in dict.keys(state.members)]

    def leave(self, member: Member, reason: str, message: str = "") -> bool:
        try:
            return super().leave(member, reason, message)
        finally:  # a leave may take someone else's registration with it
            for problem in self.check_invariants():
                self.audit.record("registry", problem)


class SendUnderLockSession(Session):
    """A session whose `deliver()` sends on the socket itself, under whatever lock its caller
    holds (the room lock, for a broadcast): the naive design, with its head-of-line blocking.

    Thread safety: `_send_lock` keeps two threads (a broadcaster and this session's reader
    replying to a ping) from interleaving bytes on the socket; lock order: room lock, then
    `_send_lock`. A send blocks for up to `send_timeout_s`, then the room drops the client as too
    slow, like the real design does when a send queue is full, only after everyone has waited.
    """

    send_timeout_s: float | None = DEFAULT_SEND_TIMEOUT_S

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, NAIVE_SNDBUF_BYTES)
        self._send_lock = threading.Lock()
        self._broken = False

    def deliver(self, event: ev.Event) -> bool:
        if self._broken or self._reason == ev.LeaveReason.SENDQ_EXCEEDED:
            return True  # leaving anyway: nothing more to send
        # The tutorial sends each message on its own: the batch the hub made of several lines
        # read at once is taken apart again.
        events = event.events if isinstance(event, ev.Batch) else (event,)
        with self._send_lock:
            try:
                for one in events:
                    if not self._send_blocking(
                        self._wire.encode(one, self.nick or "", self.current_room)
                    ):
                        return False
                return True
            except OSError:
                self._broken = True
                return True

    def shut_down(self) -> None:
        # No goodbye: a goodbye would wait behind a stuck send. Cutting the socket also wakes a
        # broadcaster blocked on this client.
        self.drop(ev.LeaveReason.SHUTDOWN)

    def _send_blocking(self, data: bytes) -> bool:
        """Sends all of `data`, waiting as long as it takes (up to the timeout); False if the
        client did not take it in time."""
        view = memoryview(data)
        timeout = self.send_timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        while view:
            try:
                view = view[self._sock.send(view) :]  # the socket is non-blocking
                continue
            except BlockingIOError:
                pass
            if self._reason is not None and self._reason != ev.LeaveReason.QUIT:
                raise ConnectionAbortedError("session is being dropped")
            left = _SEND_POLL_S if deadline is None else deadline - time.monotonic()
            if left <= 0:
                log.warning("%r: send blocked for %.1f s, dropping it", self, timeout)
                return False
            select.select([], [self._sock], [], min(left, _SEND_POLL_S))
        return True


class SerialServer(ChatServer):
    """Serves one client at a time: the accept loop waits until the client leaves.

    Everyone else waits in the listen backlog, connected but unanswered: the "one thread serves
    one client" design of the first lesson.
    """

    def _admit(
        self, sock: socket.socket, address: tuple[str, int], kind: type[Session] = Session
    ) -> bytes | None:
        refusal = super()._admit(sock, address, kind)
        if refusal is None:
            with self._lock:
                mine = [s for s in self._sessions if s.address == address]
            for session in mine:
                while session.reader.is_alive() and not self._stopping.is_set():
                    session.reader.join(0.1)  # wake up now and then to see if we must stop
        return refusal


@dataclass(frozen=True)
class DemoOptions:
    unsafe_registry: bool = False
    race_window_s: float = DEFAULT_RACE_WINDOW_S
    lock_while_sending: bool = False
    send_timeout_s: float | None = DEFAULT_SEND_TIMEOUT_S
    one_at_a_time: bool = False

    @property
    def any(self) -> bool:
        return self.unsafe_registry or self.lock_while_sending or self.one_at_a_time


def make_server(host: str, port: int, options: DemoOptions, **kwargs: Any) -> ChatServer:
    """A ChatServer with the demo modes of `options` switched on."""
    audit = Audit()
    server_class = SerialServer if options.one_at_a_time else ChatServer
    if options.unsafe_registry:
        kwargs["hub"] = UnsafeRoom(
            audit, options.race_window_s, kwargs.pop("room_name", None) or DEFAULT_ROOM
        )
    if options.lock_while_sending:
        kwargs["session_class"] = type(
            "SendUnderLockSession",
            (SendUnderLockSession,),
            {"send_timeout_s": options.send_timeout_s},
        )
    return server_class(host, port, audit=audit, **kwargs)


def banner(options: DemoOptions) -> list[str]:
    """The warning lines a server in a demo mode logs at start."""
    lines = []
    if options.unsafe_registry:
        lines.append(
            f"--unsafe-registry: the room's registry runs WITHOUT ITS LOCK, race window "
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
    if not lines:
        return []
    rule = "!" * 78
    return [rule, "DEMO MODE, for teaching only: never run this for real users", *lines, rule]


def shorten_switch_interval() -> float:
    """Makes the interpreter switch threads far more often; returns the old interval."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(DEMO_SWITCH_INTERVAL_S)
    return old
