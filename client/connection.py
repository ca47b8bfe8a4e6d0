"""The client's link to the server: socket, handshake, reader and writer threads, reconnect. No UI.

`Connection.connect()` opens the socket and registers a nickname (blocking, before the UI
starts, so a taken nickname can be asked for again in plain words). `start(listener)` then runs
two daemon threads: the *session* thread reads events and, when the link is lost, reconnects
with growing, jittered delays and registers again (with an alternate nickname if the old
connection still holds ours); the *writer* thread drains the outbox.

Delivery: every line the user sends goes through the outbox. After the writer empties the
outbox it sends a `ping` whose token is the sequence number of the last line; the server's
`pong` is the protocol's delivery barrier, so it confirms every line up to it. Lines written but
not confirmed when the link dies are put back at the front of the outbox and sent again after
reconnecting (at-least-once: a line the server handled just before the link broke may be seen
twice; none is silently lost). Lines offered while disconnected wait in the outbox, up to
MAX_QUEUED_LINES.

Thread safety: `_lock` (with the condition `_cv`) guards the outbox, the unconfirmed lines, the
sequence numbers, `_sock`, `_writing`, the flags, the `/users` fallback counters and `_status`.
No socket I/O and no listener call happens while holding it. The status is published as a new
immutable `Status` by one assignment, so `status` may be read from any thread without the lock.
The listener is called from the session thread, the writer thread and the thread calling
`offer()`, never with the lock held; it must not block (the UI's listener only queues the event
and wakes its event loop).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from client.backlog import Backlog
from client.state import Status
from client.tls import TlsSettings, TrustError
from client.wire import (
    NICK_MAX_CHARS,
    PROTOCOL_VERSION,
    LineBuffer,
    LineTooLong,
    decode,
    encode,
    error_text,
    fold,
)

ProtocolMessage = dict[str, Any]

CONNECT_TIMEOUT_S = 10.0  # a server that does not accept the TCP connection within this is down
# A server that accepted but has not welcomed us within this is not answering (or is not a chat
# server: a port that accepts and stays silent). Said in those words, not as "cannot connect".
GREETING_TIMEOUT_S = 10.0
BACKOFF_INITIAL_S = 1.0  # first reconnect delay; doubles per failed attempt ...
BACKOFF_MAX_S = 30.0  # ... up to this, so a restarted server sees us back within half a minute
# With no traffic for this long the client pings; no answer for another period means the link is
# dead (a laptop that slept, a NAT that forgot us) even though TCP has not noticed yet.
KEEPALIVE_S = 60.0
# Lines typed while disconnected are kept up to this many; beyond that `offer()` refuses, so a
# long outage cannot make the client replay a wall of text.
MAX_QUEUED_LINES = 100
# The reconnect delay starts again from BACKOFF_INITIAL_S only after a link lasted this long, so a
# server that accepts and then drops us at once is not hammered in a tight loop.
STABLE_LINK_S = 10.0
QUIT_TIMEOUT_S = 2.0  # how long /quit waits for the server to acknowledge by closing
RECV_BYTES = 65536
# The server drops lines beyond 10/s sustained with bursts of 20 and kicks a client that keeps on
# (protocol.md, flood control). The client paces itself at half of that, so a pasted block or a
# piped file arrives whole instead of getting us kicked. Every line counts, pings included.
SEND_RATE_LINES_S = 5.0
SEND_BURST_LINES = 10.0

# Message types that carry what the user typed: they are queued while offline and re-sent after
# a reconnect when unconfirmed. `nick`, `who` and `users` answer the moment; replaying them
# later would surprise.
_USER_LINE_TYPES = frozenset({"message", "action", "private"})


class Pacer:
    """A token bucket that keeps our sending under the server's flood limit.

    Not thread-safe: only the writer thread uses it.
    """

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._clock = clock
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now

    def delay_s(self) -> float:
        """Seconds to wait before the next line may go (0 if it may go now)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self._rate

    def take(self, lines: int) -> None:
        """Spend `lines` tokens (the balance may go below zero: the next line waits longer)."""
        self._refill()
        self._tokens -= lines


class ConnectError(Exception):
    """Could not connect or register; the message is meant for the user."""


class NoGreeting(ConnectionError):
    """The TCP connection was accepted but no welcome came in time; the message says which."""


@dataclass(frozen=True)
class Received:
    """An event from the server, with the status right after it.

    `room_before` is the current room before it: a kick or part that changed my current room
    says so (the prompt must not change silently).
    """

    event: ProtocolMessage
    status: Status
    room_before: str = ""


@dataclass(frozen=True)
class Notice:
    """Something the client itself has to say (connection lost, alternate nickname, ...)."""

    text: str
    error: bool = False


@dataclass(frozen=True)
class StatusChanged:
    """The status changed without a server event (reconnecting, queue length)."""

    status: Status


Event = Received | Notice | StatusChanged
Listener = Callable[[Event], None]
# Given the server's reason why a nickname was refused, return another nickname or None to give up.
AskNick = Callable[[str], "str | None"]


def backoff_delay(attempt: int, rng: random.Random, initial_s: float, max_s: float) -> float:
    """The delay before reconnect attempt number `attempt` (0-based): doubling, capped, jittered.

    The jitter (a random factor in [0.5, 1]) spreads the clients of a restarted server so they
    do not all come back in the same instant.
    """
    return float(min(max_s, initial_s * 2 ** min(attempt, 30)) * rng.uniform(0.5, 1.0))


def alternate_nicks(nick: str) -> Iterator[str]:
    """Nicknames to try when `nick` is still held (by our own ghost): alice_, alice__, alice1 ..."""
    for suffix in ("_", "__", *(str(n) for n in range(1, 10))):
        yield nick[: NICK_MAX_CHARS - len(suffix)] + suffix


class Stream(Protocol):
    """What the connection needs of its link: a socket, or a TLS stream (client/tls.py)."""

    def recv(self, size: int, /) -> bytes: ...
    def sendall(self, data: bytes, /) -> None: ...
    def settimeout(self, timeout: float | None, /) -> None: ...
    def setsockopt(self, level: int, option: int, value: int, /) -> None: ...
    def shutdown(self, how: int, /) -> None: ...
    def close(self) -> None: ...


class _Link:
    """One open, registered TCP connection and the bytes read past the welcome."""

    def __init__(self, sock: Stream, buffer: LineBuffer, pending: list[bytes]) -> None:
        self.sock = sock
        self.buffer = buffer
        self.pending = pending


class Connection:
    """A JSON Lines connection to a chat server that survives losing the link.

    Args:
        host: server host (127.0.0.1, ::1, a name).
        port: server port.
        nick: the nickname to register.
        backoff_initial_s: first reconnect delay (tests make it small).
        backoff_max_s: longest reconnect delay.
        keepalive_s: idle time before a keepalive ping.
        connect_timeout_s: how long the server may take to accept the TCP connection.
        greeting_timeout_s: how long, once accepted, it may take to welcome us.
        send_rate_lines_s: sustained lines per second we allow ourselves.
        send_burst_lines: lines we may send at once.
        password: the server's password (`--password`), sent in every `hello`.
        rng: random source of the jitter.
        tls: speak TLS, trusting certificates as these settings say (client/tls.py); None:
            plaintext.
    """

    def __init__(
        self,
        host: str,
        port: int,
        nick: str,
        *,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        keepalive_s: float = KEEPALIVE_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        greeting_timeout_s: float = GREETING_TIMEOUT_S,
        send_rate_lines_s: float = SEND_RATE_LINES_S,
        send_burst_lines: float = SEND_BURST_LINES,
        password: str | None = None,
        rng: random.Random | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._preferred_nick = nick
        self._password = password
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._keepalive_s = keepalive_s
        self._connect_timeout_s = connect_timeout_s
        self._greeting_timeout_s = greeting_timeout_s
        self._progress: Callable[[str], None] | None = None  # only while connect() runs
        self._rng = rng or random.Random()
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._status = Status(address=address)
        self._listener: Listener = lambda event: None

        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._outbox: deque[tuple[int, ProtocolMessage]] = deque()
        self._unconfirmed: deque[tuple[int, ProtocolMessage]] = deque()
        self._seq = 0
        self._confirmed_seq = 0
        self._sock: Stream | None = None  # the registered socket the writer may use
        self._writing: Stream | None = None  # the socket the writer is in sendall() on
        self._closing = False  # quit or close asked for: no more reconnecting
        self._stopped = False  # close(): every thread should end now
        self._first_link: _Link | None = None
        self._first_welcome: ProtocolMessage = {}
        self._pacer = Pacer(send_rate_lines_s, send_burst_lines)
        # A server from before the `users` request answers it with a `bad_request` error; its
        # `who` then lists everyone online. `_users_asked`: `users` requests not yet answered;
        # `_users_by_who`: `who` requests sent instead, whose reply means everyone.
        self._users_asked = 0
        self._users_by_who = 0
        self._threads: list[threading.Thread] = []
        self._tls = tls
        # History (#11): message ids shown; the reader thread alone changes it.
        self._backlog = Backlog()

    # --- reading the state ------------------------------------------------------------------

    @property
    def status(self) -> Status:
        """The current snapshot (safe from any thread)."""
        return self._status

    def _publish_locked(self, **changes: Any) -> Status:
        self._status = dataclasses.replace(self._status, **changes)
        return self._status

    def _queued_locked(self) -> int:
        return sum(1 for _, m in self._outbox if m.get("type") in _USER_LINE_TYPES)

    # --- connecting -------------------------------------------------------------------------

    def connect(
        self, ask_nick: AskNick | None = None, progress: Callable[[str], None] | None = None
    ) -> Status:
        """Connect and register (blocking); call once, before `start()`.

        Args:
            ask_nick: asked for another nickname when the server refuses one; None gives up.
            progress: told at once when the TCP connection is accepted (the greeting may take
                a while, or never come), so a person is not left looking at a blank screen.

        Raises:
            ConnectError: the server is unreachable, refused us, or no nickname was accepted.
        """
        nick = self._preferred_nick
        self._progress = progress
        try:
            return self._connect(nick, ask_nick)
        finally:
            self._progress = None

    def _connect(self, nick: str, ask_nick: AskNick | None) -> Status:
        while True:
            try:
                link, reply = self._open_and_hello(nick)
            except (NoGreeting, TrustError) as exc:
                raise ConnectError(str(exc)) from exc
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                raise ConnectError(f"cannot connect to {self._status.address}: {reason}") from exc
            if reply.get("type") == "welcome":
                break
            code = reply.get("code")
            reason = error_text(code, reply.get("message"))
            link.sock.close()
            if code not in ("nick_taken", "nick_invalid") or ask_nick is None:
                raise ConnectError(f"the server refused {nick!r}: {reason}")
            new_nick = ask_nick(reason)
            if not new_nick:
                raise ConnectError("no nickname chosen")
            nick = new_nick.strip()
        self._preferred_nick = nick
        self._first_link = link
        with self._lock:
            status = self._status = self._status.apply(reply)
        self._first_welcome = reply
        return status

    def _open_and_hello(self, nick: str) -> tuple[_Link, ProtocolMessage]:
        """Open a socket, send `hello`, and wait for `welcome` or `error`.

        A refused nickname closes nothing here: the caller decides. (Asking the user takes
        time and the server's registration timeout may pass; a fresh socket per try is simpler
        than keeping one alive.)

        Raises:
            NoGreeting: the server accepted the connection but did not welcome us in time.
            OSError: connecting or reading failed, or the server closed without a reply.
        """
        sock: Stream
        if self._tls is not None:  # asks about an unknown certificate only in connect()
            ask = self._tls.ask if self._first_link is None else None
            sock = self._tls.connect(self.host, self.port, self._connect_timeout_s, ask)
        else:
            sock = socket.create_connection((self.host, self.port), self._connect_timeout_s)
        address = self._status.address
        if self._progress is not None:
            self._progress(f"connected to {address}, waiting for the server's greeting…")
        deadline = time.monotonic() + self._greeting_timeout_s
        received = False
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            hello: ProtocolMessage = {"type": "hello", "version": PROTOCOL_VERSION, "nick": nick}
            if self._password is not None:
                hello["password"] = self._password
            sock.sendall(encode(hello))
            buffer = LineBuffer()
            last_text = ""
            while True:
                left = deadline - time.monotonic()
                try:
                    if left <= 0:
                        raise TimeoutError
                    sock.settimeout(left)
                    data = sock.recv(RECV_BYTES)
                except TimeoutError:
                    what = "did not answer our hello" if received else "sent no greeting"
                    raise NoGreeting(
                        f"{address} accepted the connection but {what} within"
                        f" {self._greeting_timeout_s:g} s (is it a chat server?)"
                    ) from None
                received = received or bool(data)
                if not data:
                    # Before it knows our mode the server speaks text: "! server full ...".
                    raise ConnectionError(last_text.lstrip("! ") or "the server closed the link")
                lines = buffer.feed(data)
                for index, line in enumerate(lines):
                    event = decode(line)
                    if event is None:
                        last_text = line.decode("utf-8", "replace").strip() or last_text
                    elif event["type"] in ("welcome", "error"):
                        return _Link(sock, buffer, lines[index + 1 :]), event
        except (OSError, LineTooLong) as exc:
            sock.close()
            if isinstance(exc, LineTooLong):
                raise ConnectionError(str(exc)) from exc
            raise

    def _register_again(self) -> tuple[_Link, ProtocolMessage]:
        """Reconnect with our nickname, or an alternate if our old connection still holds it.

        Raises:
            OSError: the server is still unreachable.
            ConnectError: it refused every nickname we tried.
        """
        wanted = self._status.nick or self._preferred_nick
        for nick in (wanted, *alternate_nicks(self._preferred_nick)):
            link, reply = self._open_and_hello(nick)
            if reply.get("type") == "welcome":
                if nick != wanted:
                    self._notify(
                        Notice(
                            f"{wanted} is still held by the old connection; you are {nick} for"
                            f" now and will take {self._preferred_nick} back when it is free"
                        )
                    )
                return link, reply
            link.sock.close()
            if reply.get("code") not in ("nick_taken", "nick_invalid"):
                raise ConnectError(error_text(reply.get("code"), reply.get("message")))
        raise ConnectError("every alternate nickname is taken")

    # --- threads ----------------------------------------------------------------------------

    def start(self, listener: Listener) -> None:
        """Start the session and writer threads; events go to `listener` from now on."""
        if self._first_link is None:
            raise RuntimeError("connect() first")
        self._listener = listener
        session = threading.Thread(target=self._run_session, name="chat-client-session")
        writer = threading.Thread(target=self._run_writer, name="chat-client-writer")
        # Daemon threads: a client must exit even if a socket call hangs (STYLE.md allows it);
        # close() still joins them with a timeout.
        session.daemon = writer.daemon = True
        self._threads = [session, writer]
        session.start()
        writer.start()

    def _notify(self, event: Event) -> None:
        self._listener(event)

    def _run_session(self) -> None:
        link = self._first_link
        assert link is not None
        self._notify(Received(self._first_welcome, self._status))
        attempt = 0
        while True:
            started = time.monotonic()
            reason = self._serve(link)
            if time.monotonic() - started >= STABLE_LINK_S:
                attempt = 0
            # One red line says the link is lost and one says it is back; in between, the
            # attempts only update the status (the status bar counts them and says why the last
            # one failed), so a long outage does not fill the screen with a line per attempt.
            lost: str | None = f"connection lost: {reason}"
            failed = ""
            tries = 0
            while True:
                delay = backoff_delay(attempt, self._rng, *self._backoff)
                attempt += 1
                tries += 1
                with self._cv:
                    if self._closing:
                        return
                    # State, countdown and attempt in one snapshot: nobody sees one without the
                    # others.
                    status = self._publish_locked(
                        state="reconnecting",
                        retry_at=time.monotonic() + delay,
                        attempt=tries,
                        last_error=failed,
                    )
                if lost is not None:
                    self._notify(Notice(lost, error=True))
                    lost = None
                self._notify(StatusChanged(status))
                with self._cv:
                    if self._cv.wait_for(lambda: self._closing, timeout=delay):
                        self._publish_locked(state="disconnected", retry_at=None)
                        return
                try:
                    link, welcome = self._register_again()
                except TrustError as exc:
                    # A certificate that changed (or is not valid) will not get better by
                    # trying again: say so loudly, once, and stop (as ssh does).
                    with self._cv:
                        self._closing = True
                        status = self._publish_locked(state="disconnected", retry_at=None)
                    self._notify(Notice(str(exc), error=True))
                    self._notify(StatusChanged(status))
                    return
                except (OSError, ConnectError) as exc:
                    failed = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                    continue
                with self._cv:
                    resend = self._queued_locked()
                    before = self._status
                    status = self._status = before.apply(welcome)
                    # The server forgot our other rooms with the old connection: join them again
                    # before anything queued for them is sent.
                    for room in reversed(before.rooms):
                        if fold(room) != fold(status.room):
                            self._seq += 1
                            self._outbox.appendleft((self._seq, {"type": "join", "room": room}))
                    self._cv.notify_all()
                after = f" after {tries} attempts" if tries > 1 else ""
                self._notify(
                    Notice(
                        f"reconnected to {status.address}{after} as {status.nick},"
                        f" {len(status.users)} in {status.room}"
                    )
                )
                if resend:
                    self._notify(Notice(f"sending {resend} queued line(s)"))
                self._notify(StatusChanged(status))
                break

    def _serve(self, link: _Link) -> str:
        """Read events until the link breaks; return why it broke."""
        sock = link.sock
        with self._cv:
            if self._closing:  # quit while we were reconnecting: do not come back
                sock.close()
                return "closed"
            self._sock = sock
            self._cv.notify_all()  # the writer may send what waited
        reason = "closed"
        try:
            for line in link.pending:
                self._handle_line(line)
            sock.settimeout(self._keepalive_s)
            idle_periods = 0
            while True:
                try:
                    data = sock.recv(RECV_BYTES)
                except TimeoutError:
                    idle_periods += 1
                    if idle_periods >= 2:
                        return "no answer from the server"
                    self._enqueue(lambda seq: {"type": "ping", "token": "keepalive"})
                    continue
                if not data:
                    return "the server closed the connection"
                idle_periods = 0
                for line in link.buffer.feed(data):
                    self._handle_line(line)
        except LineTooLong as exc:
            reason = str(exc)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
        finally:
            self._drop(sock)
        return reason

    def _drop(self, sock: Stream) -> None:
        """Forget a broken socket: requeue unconfirmed lines, wait out the writer, close it."""
        with self._cv:
            if self._sock is sock:
                self._sock = None
            again = [item for item in self._unconfirmed if _worth_resending(item[1])]
            self._unconfirmed.clear()
            self._outbox.extendleft(reversed(again))
            self._publish_locked(queued=self._queued_locked())
        _shutdown(sock)  # wakes a writer blocked in sendall()
        with self._cv:
            # Closing a socket another thread is writing to could let the fd number be reused
            # under it; the shutdown above makes that write fail at once.
            self._cv.wait_for(lambda: self._writing is not sock, timeout=QUIT_TIMEOUT_S)
        sock.close()

    def _handle_line(self, line: bytes) -> None:
        event = decode(line)
        if event is None:
            return
        kind = event["type"]
        if kind == "pong":
            token = event.get("token")
            if isinstance(token, int) and not isinstance(token, bool):
                with self._cv:
                    self._confirmed_seq = max(self._confirmed_seq, token)
                    while self._unconfirmed and self._unconfirmed[0][0] <= token:
                        self._unconfirmed.popleft()
                    self._cv.notify_all()
            return
        if kind in ("error", "users") and not self._users_compat(event):
            return
        # -- history (#11): each message shown once, across reconnects --
        if kind == "history":
            whole = self._backlog.merge(event)
            if whole is None:
                return  # more pieces of this answer to come
            room = whole.get("room")
            request = self._backlog.catch_up(room) if isinstance(room, str) else None
            if whole.get("replay") is True and request is not None:
                # Back in a room we saw before (a reconnect): ask for exactly what was said
                # since the newest message we showed, instead of the server's last 50.
                self._enqueue(lambda seq: request)
                return
            event = self._backlog.fresh(whole)
        elif not self._backlog.first_time(event):
            return  # shown already (a catch-up answer and a live message crossed)
        with self._lock:
            before = self._status
            status = before.apply(event)
            self._status = status
        if kind == "rename" and before.nick and event.get("old") == before.nick:
            self._preferred_nick = status.nick  # the user chose it (or we took ours back)
        self._notify(Received(event, status, before.room))
        if fold(status.nick) != fold(self._preferred_nick) and _frees(event, self._preferred_nick):
            self._notify(Notice(f"{self._preferred_nick} is free again; taking it back"))
            nick = self._preferred_nick
            self._enqueue(lambda seq: {"type": "nick", "nick": nick})

    def _users_compat(self, event: ProtocolMessage) -> bool:
        """Let `/users` work against a server that does not know the request yet.

        Such a server refuses it (`bad_request`, "unknown type 'users'") and answers `who` with
        everyone online: ask that instead, and show its reply as the answer to `/users`.
        Changes `event` in place. Returns False when the event is handled and not to be shown.
        """
        with self._cv:
            if event["type"] == "users":
                if event.get("room") is None:
                    self._users_asked = max(0, self._users_asked - 1)
                elif self._users_by_who:
                    self._users_by_who -= 1
                    event["room"] = None
                return True
            if not (
                self._users_asked
                and event.get("code") == "bad_request"
                and "'users'" in str(event.get("message", ""))
            ):
                return True
            self._users_asked -= 1
            self._users_by_who += 1
            self._seq += 1
            self._outbox.append((self._seq, {"type": "who"}))
            self._cv.notify_all()
        return False

    def _run_writer(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(
                    lambda: (
                        self._stopped
                        or (self._sock is not None and bool(self._outbox))
                        or (self._closing and not self._outbox)
                    )
                )
                if self._stopped or (self._closing and not self._outbox):
                    return
                pause = self._pacer.delay_s()
                if pause > 0:
                    self._cv.wait_for(lambda: self._stopped, timeout=pause)
                    continue
                sock = self._sock
                assert sock is not None
                seq, message = self._outbox.popleft()
                data = encode(message)
                if message.get("type") != "ping" or isinstance(message.get("token"), int):
                    self._unconfirmed.append((seq, message))
                if not self._outbox and message.get("type") in _USER_LINE_TYPES:
                    data += encode({"type": "ping", "token": seq})  # confirms up to seq
                self._pacer.take(data.count(b"\n"))
                status = self._publish_locked(queued=self._queued_locked())
                self._writing = sock
            try:
                sock.sendall(data)
            except OSError:
                _shutdown(sock)  # the session thread notices and reconnects
            finally:
                with self._cv:
                    self._writing = None
                    self._cv.notify_all()
            if status.queued == 0 and message.get("type") in _USER_LINE_TYPES:
                self._notify(StatusChanged(status))

    # --- sending ----------------------------------------------------------------------------

    def _enqueue(self, make: Callable[[int], ProtocolMessage]) -> int:
        """Append `make(seq)` to the outbox; return its sequence number."""
        with self._cv:
            self._seq += 1
            self._outbox.append((self._seq, make(self._seq)))
            self._cv.notify_all()
            return self._seq

    def switch_room(self, room: str) -> Status:
        """Make a room I am in my current room (what I type goes there)."""
        with self._lock:
            status = self._status = self._status.switch_to(room)
        self._notify(StatusChanged(status))
        return status

    def offer(self, message: ProtocolMessage) -> bool:
        """Queue a message for the server; never blocks.

        Returns:
            False if it was refused: the client is quitting, or (for a typed line while
            disconnected) MAX_QUEUED_LINES lines are already waiting.
        """
        with self._cv:
            if self._closing:
                return False
            if self._sock is None and self._queued_locked() >= MAX_QUEUED_LINES:
                return False
            self._seq += 1
            self._outbox.append((self._seq, message))
            if message.get("type") == "users":
                self._users_asked += 1
            self._cv.notify_all()
            status = self._publish_locked(queued=self._queued_locked())
        if self._sock is None:
            self._notify(StatusChanged(status))
        return True

    def barrier(self, timeout: float) -> bool:
        """Block until the server has handled everything offered before (ping/pong).

        Returns:
            True when confirmed; False on timeout or close.
        """
        seq = self._enqueue(lambda seq: {"type": "ping", "token": seq})
        with self._cv:
            return self._cv.wait_for(
                lambda: self._confirmed_seq >= seq or self._stopped, timeout=timeout
            ) and (self._confirmed_seq >= seq)

    def ask_older(self, room: str) -> bool:
        """Asks for the page of `room`'s history before the oldest message shown (PageUp);
        False if it could not be queued. Any thread (it reads one number the reader keeps)."""
        return self.offer(self._backlog.older(room))

    def quit(self, reason: str = "", timeout: float = QUIT_TIMEOUT_S) -> int:
        """Tell the server we leave, wait (bounded) for it to close, then close.

        Returns:
            The number of typed lines that were still waiting and are now dropped.
        """
        message: ProtocolMessage = {"type": "quit"}
        if reason:
            message["reason"] = reason
        with self._cv:
            connected = self._sock is not None and not self._closing
            if connected:
                self._seq += 1
                self._outbox.append((self._seq, message))
            dropped = self._queued_locked() if not connected else 0
            self._closing = True
            self._cv.notify_all()
        if connected and self._threads:
            self._threads[0].join(timeout)  # the server closes the link after `quit`
        elif connected and self._first_link is not None:  # connected but never started
            with contextlib.suppress(OSError):
                self._first_link.sock.sendall(encode(message))
        self.close()
        return dropped

    def close(self) -> None:
        """Stop everything now (idempotent; safe from any thread)."""
        with self._cv:
            self._closing = self._stopped = True
            sock = self._sock
            self._cv.notify_all()
        if sock is not None:
            _shutdown(sock)
        if self._first_link is not None and not self._threads:
            self._first_link.sock.close()
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join(QUIT_TIMEOUT_S)
        with self._lock:
            self._publish_locked(state="disconnected", retry_at=None)


def _worth_resending(message: ProtocolMessage) -> bool:
    kind = message.get("type")
    return kind in _USER_LINE_TYPES or (kind == "ping" and isinstance(message.get("token"), int))


def _frees(event: ProtocolMessage, nick: str) -> bool:
    """True if the event frees the nickname `nick` (its holder left or renamed)."""
    folded = fold(nick)
    if event.get("type") == "leave":
        return fold(str(event.get("nick", ""))) == folded
    if event.get("type") == "rename":
        return fold(str(event.get("old", ""))) == folded
    return False


def _shutdown(sock: Stream) -> None:
    """Shut a socket down both ways, waking any thread blocked on it; ignore if already gone."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
