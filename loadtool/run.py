"""The bots and the one selector loop that drives them: `run_load` and its `LoadConfig`.

The whole run is one thread around one `selectors` loop with non-blocking sockets, so it can
drive hundreds of bots from one process and the numbers measure the server, not the tool.
"""

from __future__ import annotations

import contextlib
import errno
import math
import selectors
import socket
import ssl
import struct
import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from loadtool.codecs import (
    BARRIER,
    CODECS,
    FLOOD_KICK,
    FLOOD_WARN,
    JOIN,
    LEAVE,
    LOAD,
    NICK_TAKEN,
    REFUSED,
    REPLY,
    WELCOME,
)
from loadtool.report import LoadReport, latency_of

# Default pacing per bot when --rate is absent: below the server's default flood control (10 lines/s
# sustained, bursts of 20), with margin for the hello, barrier and quit lines.
BOT_RATE = 8.0
BOT_BURST = 10
# A small receive buffer makes a slow client's TCP window fill after a few KiB, so the server
# feels it within seconds instead of after megabytes of kernel buffering.
SLOW_RCVBUF_BYTES = 4096
# Flat out, a bot keeps at most this much unsent in its own buffer: the tool must not hide
# server latency in its own queues.
MAX_PENDING_BYTES = 16 * 1024
FLAT_OUT_BATCH = 16
# Linux stamps each packet a socket receives when asked (SO_TIMESTAMPNS; Python's socket module
# has no name for it): the stamp of the last packet a recvmsg() read comes as ancillary data, a
# struct timespec on the wall clock.
_SO_TIMESTAMPNS: int | None = 35 if sys.platform == "linux" else None
_TIMESPEC = struct.Struct("@ll")
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
# The room-order check keeps, per receiver, the order of its deliveries (4 bytes each): at most
# this many in all (100 bots x 100 messages: 1 million, 4 MB).
ORDER_CHECK_MAX = 20_000_000
# Connections opened at once; the server's listen backlog is 128.
MAX_CONNECTING = 64
# Reads go into one preallocated buffer: recv(256 KiB) would allocate (and the allocator map)
# 256 KiB on every call, 16 µs against 2.5 µs for a small read on this machine.
RECV_BYTES = 256 * 1024
# Deliveries are counted as they arrive (in C, at memory speed) and verified later, a slice at a
# time (see `_Run.read`). A slice of 1,000 lines takes about 2 ms here, so verifying never holds
# up the loop, its reads and its paced sends for long; verifying 256 MiB at once took 17 s, long
# enough for the bots' catch-up to trip the server's flood control.
VERIFY_SLICE_LINES = 1000
# The default bound on bytes waiting to be verified: memory, and the work left after the clock
# stops. Past it, reading waits for verifying: the run goes on, bounded in memory, at the speed
# of this one thread.
MAX_UNVERIFIED_BYTES = 256 * 1024 * 1024
# Below this share of the bound, deliveries wait until the clock stops: verifying during a run
# takes CPU from the server on the same cores (a paced run at 190,000 deliveries/s had its p50
# latency double), and a short run (a flat-out 100 x 100 is about 45 MiB of text) never needs
# to. Past it, the loop verifies a slice whenever no socket is ready.
IDLE_VERIFY_SHARE = 8  # 256 MiB / 8 = 32 MiB
# After a stall (this machine, or this loop, was busy) a paced bot owes several messages; it
# sends at most this many at once (or what its rate asks in CATCH_UP_S, if more) and lets its
# schedule slip for the rest. BOT_BURST is half the server's default flood burst (20 lines),
# which leaves room for the barrier and quit lines: a bot paced under the flood rate (10
# lines/s) then never trips flood control however long the stall.
CATCH_UP_S = 0.1
QUIT_TIMEOUT_S = 2.0
PROGRESS_EVERY_S = 0.25


@dataclass(frozen=True)
class LoadConfig:
    """What to run; see `chat-load --help` for each field's meaning."""

    host: str = "127.0.0.1"
    port: int = 8888
    clients: int = 10
    messages: int = 20
    # None: each bot paced at BOT_RATE (under default flood control); 0: flat out; R > 0: R
    # messages/s in total, spread evenly over the bots.
    rate: float | None = None
    slow_clients: int = 0
    duration: float = 30.0
    join_timeout: float = 10.0
    protocol: str = "json"
    nick_clash: bool = False
    # Deliveries that arrived but are not verified yet may hold this many bytes; past it, reading
    # waits for verifying (so memory stays bounded and the server feels the back-pressure).
    max_unverified_bytes: int = MAX_UNVERIFIED_BYTES
    # TLS (docs/tls.md): verify the server against tls_ca (a PEM file), or the system's
    # authorities without it. Each bot runs its TLS over memory buffers in this one thread.
    tls: bool = False
    tls_ca: str | None = None
    # Several servers of one cluster (chat/cluster): bot i connects to servers[i % len]; with
    # two or more, the run also checks that every bot saw the room in one order.
    servers: tuple[tuple[str, int], ...] = ()


class Schedule:
    """When one paced bot's messages are due: a steady interval, never a burst after a stall.

    Pure: the caller passes the clock's reading. A bot that fell behind catches up with at most
    `catch_up` messages at once; the rest of its schedule slips (it finishes later instead of
    bursting past the server's flood control).
    """

    def __init__(self, interval: float, catch_up: int, first_due: float) -> None:
        self.interval = interval
        self.catch_up = max(1, catch_up)
        self.next_due = first_due
        self.slips = 0  # times the schedule was moved later because the bot fell too far behind

    def take(self, now: float, most: int) -> int:
        """Counts the messages due at `now` as sent (at most `most`) and returns how many."""
        earliest = now - (self.catch_up - 1) * self.interval
        if self.next_due < earliest:
            self.next_due = earliest
            self.slips += 1
        count = 0
        while self.next_due <= now and count < most:
            count += 1
            self.next_due += self.interval
        return count


# -- the bots --------------------------------------------------------------------------------------


class _Bot:
    """One simulated client: its socket, buffers and what it has seen. Touched by one thread."""

    def __init__(self, index: int, name: str, slow: bool, first_nick: str) -> None:
        self.index = index
        self.name = name  # embedded in its messages; stable even if the nick is not
        self.slow = slow
        self.first_nick = first_nick
        self.host = ""  # the server it connects to (--servers: one of several)
        self.nick: str | None = None
        self.sock: socket.socket | None = None
        self.connecting = False
        self.outbuf = bytearray()
        self.inbuf = b""
        self.hellos = 0
        self.joined = False
        self.failed: str | None = None  # why it never joined
        self.gone: str | None = None  # why it was disconnected before it quit
        self.sent = 0
        self.bucket_at = 0.0  # the default pacing's token bucket was last filled then
        self.schedule: Schedule | None = None  # with an aggregate --rate
        self.tokens = float(BOT_BURST)
        self.barriers = 0  # barrier replies still expected
        self.sent_done = False  # its "sent" barrier came back: all its messages are handled
        self.drain_asked = False
        self.drained = False  # its "drain" barrier came back: all deliveries are here
        self.quit_sent = False
        self.closed = False
        self.flood_limited = False
        self.kicked = False
        self.reset = False
        # TLS: the bot's TLS state over two memory buffers; hello waits for the handshake.
        self.tls: ssl.SSLObject | None = None
        self.tls_in = self.tls_out = ssl.MemoryBIO()
        self.handshaking = False
        self.plain_pending = bytearray()

    @property
    def alive(self) -> bool:
        return self.sock is not None and not self.closed


class _Run:
    """One load run: the selector loop and the bookkeeping; see `run_load`."""

    def __init__(self, config: LoadConfig, progress: Callable[[str], None] | None) -> None:
        if (
            config.clients < 1
            or config.messages < 0
            or config.slow_clients < 0
            or config.max_unverified_bytes < 0
        ):
            raise ValueError("need at least one client and no negative counts")
        self.config = config
        self.codec = CODECS[config.protocol]
        self.progress = progress
        self.selector = selectors.DefaultSelector()
        self.recv_buffer = bytearray(RECV_BYTES)
        self.recv_view = memoryview(self.recv_buffer)
        self.bots: list[_Bot] = []
        for i in range(config.clients):
            name = f"bot{i}"
            first = f"twin{i // 2}" if config.nick_clash else name
            self.bots.append(_Bot(i, name, False, first))
        self.slow = [
            _Bot(config.clients + k, f"slow{k}", True, f"slow{k}")
            for k in range(config.slow_clients)
        ]
        self.index_of = {bot.name.encode(): bot.index for bot in self.bots}
        n, m = config.clients, max(1, config.messages)
        self.m = m
        # seen[r][s * m + seq]: receiver r got sender s's message seq; last[r][s]: highest seq.
        self.seen = [bytearray(n * m) for _ in range(n)]
        self.last = [array("q", [-1] * n) for _ in range(n)]
        self.unique = [array("q", [0] * n) for _ in range(n)]
        self.duplicated = 0
        self.out_of_order = 0
        # With several servers: each receiver's deliveries in arrival order (slots), to check
        # that everyone saw one order of the room (report: room_order_disagreements).
        self.order: list[array[int]] | None = None
        if len(config.servers) > 1 and n * n * m <= ORDER_CHECK_MAX:
            self.order = [array("i") for _ in range(n)]
        self.received = 0  # verified deliveries
        self.arrived = 0  # delivery lines counted on arrival, verified or not
        # (bot, receive time, complete lines) in arrival order: the deliveries in them wait for
        # verify_slice(). The one at the head may be partly verified: its delivery lines are
        # `head_lines`, verified up to `head_at`.
        self.unverified: deque[tuple[_Bot, int, bytes]] = deque()
        self.unverified_bytes = 0
        self.unverified_peak_bytes = 0  # the most held at once
        self.idle_verify_bytes = config.max_unverified_bytes // IDLE_VERIFY_SHARE
        self.verify_step_max = 0  # the most deliveries verified in one step
        self.head_lines: list[bytes] | None = None
        self.head_at = 0
        # latency in µs -> deliveries: memory bounded by the spread of latencies, not by their
        # number (12 million in an array, sorted as Python ints: 600 MiB RSS in a 10-minute run)
        self.latency_us: dict[int, int] = {}
        self.seen_nicks: set[str] = set()
        self.leave_reasons: dict[str, str] = {}
        self.phase = "join"
        self.first_send_ns = 0
        self.last_delivery_ns = 0
        # A barrier reply came or a bot left since the phase's end was last checked: the loop
        # checks "every bot done?" only then, not on every wake-up (100s of bots, 10,000s of
        # wake-ups a second).
        self.progressed = True
        self.tls_context: ssl.SSLContext | None = None
        if config.tls:
            self.tls_context = ssl.create_default_context(cafile=config.tls_ca)

    # -- socket plumbing -----------------------------------------------------------------------

    def connect(self, bot: _Bot) -> None:
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if bot.slow:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF_BYTES)
        sock.setblocking(False)
        if _SO_TIMESTAMPNS is not None and _ANCILLARY_BYTES:
            with contextlib.suppress(OSError):  # then read() falls back to its own clock
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        bot.sock = sock
        bot.connecting = True
        servers = self.config.servers
        address = servers[bot.index % len(servers)] if servers else None
        bot.host = address[0] if address else self.config.host  # its TLS checks this name
        code = sock.connect_ex(address or (self.config.host, self.config.port))
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
            self.fail(bot, f"cannot connect: {errno.errorcode.get(code, code)}")
            return
        self.selector.register(sock, selectors.EVENT_WRITE, bot)

    def connected(self, bot: _Bot) -> None:
        assert bot.sock is not None
        code = bot.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        bot.connecting = False
        if code:
            self.fail(bot, f"cannot connect: {errno.errorcode.get(code, code)}")
            return
        bot.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.selector.modify(bot.sock, selectors.EVENT_READ, bot)
        # A slow bot stops reading from here on (flush() never asks to read for it): the
        # server's queue for it fills up.
        if self.tls_context is not None:
            bot.tls_in, bot.tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            bot.tls = self.tls_context.wrap_bio(bot.tls_in, bot.tls_out, server_hostname=bot.host)
            bot.handshaking = True
            self.handshake(bot)
        self.hello(bot, bot.first_nick)

    def handshake(self, bot: _Bot) -> None:
        """Moves the bot's TLS handshake on; once done, what waited is sent."""
        assert bot.tls is not None
        try:
            bot.tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLError as error:
            self.fail(bot, f"TLS: {error.reason or error}")
            return
        bot.outbuf += bot.tls_out.read()
        if done:
            bot.handshaking = False
            if bot.plain_pending:
                bot.tls.write(bytes(bot.plain_pending))
                bot.plain_pending.clear()
                bot.outbuf += bot.tls_out.read()
        self.flush(bot)

    def open_tls(self, bot: _Bot, data: bytes) -> bytes | None:
        """Ciphertext in, plaintext out; None: nothing complete yet, or the bot is gone."""
        assert bot.tls is not None
        bot.tls_in.write(data)
        if bot.handshaking:
            self.handshake(bot)
            if bot.handshaking or not bot.alive:
                return None
        chunks = []
        ended = False
        try:
            while chunk := bot.tls.read(RECV_BYTES):
                chunks.append(chunk)
            ended = True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            ended = True
        except ssl.SSLError as error:
            bot.gone = bot.gone or f"TLS: {error.reason or error}"
            self.lost_connection(bot)
            return None
        if bot.tls_out.pending:  # e.g. a KeyUpdate answer
            bot.outbuf += bot.tls_out.read()
            self.flush(bot)
        plaintext = b"".join(chunks)
        if ended and not plaintext:
            self.lost_connection(bot)
            return None
        return plaintext or None

    def hello(self, bot: _Bot, nick: str) -> None:
        bot.hellos += 1
        self.write(bot, self.codec.hello(nick))

    def write(self, bot: _Bot, data: bytes) -> None:
        if not bot.alive:
            return
        if bot.tls is not None:
            if bot.handshaking:
                bot.plain_pending += data
                return
            bot.tls.write(data)
            data = bot.tls_out.read()
        bot.outbuf += data
        self.flush(bot)

    def flush(self, bot: _Bot) -> None:
        assert bot.sock is not None
        try:
            sent = bot.sock.send(bot.outbuf) if bot.outbuf else 0
        except BlockingIOError:
            sent = 0
        except OSError as error:
            bot.reset = isinstance(error, (ConnectionResetError, BrokenPipeError))
            self.lost_connection(bot)
            return
        del bot.outbuf[:sent]
        want = selectors.EVENT_WRITE if bot.outbuf else 0
        if not bot.slow or bot.handshaking:
            want |= selectors.EVENT_READ
        key = self.selector.get_map().get(bot.sock)
        if key is None:
            if want:
                self.selector.register(bot.sock, want, bot)
        elif not want:
            self.selector.unregister(bot.sock)
        elif key.events != want:
            self.selector.modify(bot.sock, want, bot)

    def close(self, bot: _Bot) -> None:
        if bot.sock is None or bot.closed:
            return
        bot.closed = True
        self.progressed = True
        bot.connecting = False
        if bot.sock in self.selector.get_map():
            self.selector.unregister(bot.sock)
        bot.sock.close()

    def fail(self, bot: _Bot, why: str) -> None:
        bot.failed = why
        self.close(bot)

    def lost_connection(self, bot: _Bot) -> None:
        if not bot.joined and bot.failed is None:
            bot.failed = "connection closed before welcome"
        elif not bot.quit_sent and bot.gone is None:
            bot.gone = "kicked for flooding" if bot.kicked else ""  # "" : ask the others
        self.close(bot)

    # -- receiving -----------------------------------------------------------------------------

    def read(self, bot: _Bot) -> None:
        assert bot.sock is not None
        try:
            if _ANCILLARY_BYTES:
                size, ancillary, _, _ = bot.sock.recvmsg_into([self.recv_buffer], _ANCILLARY_BYTES)
                now = _arrival_ns(ancillary) or time.time_ns()
            else:
                size, now = bot.sock.recv_into(self.recv_buffer), time.time_ns()
            data = self.recv_view[:size].tobytes()
        except BlockingIOError:
            return
        except OSError as error:
            # A server that closes a socket with unread input sends a reset, and the lines it
            # sent last (a kick, a goodbye) may be lost with it: say "reset", not "lost".
            bot.reset = isinstance(error, ConnectionResetError)
            data = b""
        if not data:
            self.lost_connection(bot)
            return
        if bot.tls is not None:
            plaintext = self.open_tls(bot, data)
            if plaintext is None:
                return
            data = plaintext
        data = bot.inbuf + data
        end = data.rfind(b"\n") + 1
        bot.inbuf = data[end:]
        data = data[:end]
        # The bulk of what arrives is deliveries: here they are only counted (in C, at memory
        # speed) and kept; verify_slice() verifies them later, a slice at a time (see
        # IDLE_VERIFY_SHARE for when). Parsing each one now would make this one thread the
        # bottleneck of a flat-out run. Every other line is handled at once.
        mark = self.codec.load_mark
        loads = data.count(mark)
        if loads:
            self.arrived += loads
            self.last_delivery_ns = now
            self.unverified.append((bot, now, data))
            self.unverified_bytes += len(data)
            self.unverified_peak_bytes = max(self.unverified_peak_bytes, self.unverified_bytes)
            # Over the bound, verifying comes before reading more: a few slices, about what
            # this read added.
            while self.unverified and self.unverified_bytes > self.config.max_unverified_bytes:
                self.verify_slice()
            if loads == data.count(b"\n"):
                return
        classify = self.codec.classify
        for line in data.split(b"\n")[:-1]:
            if mark in line:
                continue  # a delivery: digest() has it
            kind, value = classify(line)
            if kind == BARRIER:
                self.barrier_reply(bot)
            elif kind == WELCOME:
                nick, users = value
                bot.joined = True
                bot.nick = nick
                self.seen_nicks.update(users)
            elif kind == JOIN:
                self.seen_nicks.add(value)
            elif kind == LEAVE:
                nick, reason = value
                if reason != "quit":
                    self.leave_reasons[nick] = reason
            elif kind == NICK_TAKEN:
                if not bot.joined and bot.hellos == 1 and bot.first_nick != bot.name:
                    self.hello(bot, bot.name)  # lost the clash fairly: take its own name
                elif not bot.joined:
                    self.fail(bot, "nickname taken")
                    return
            elif kind == REFUSED:
                self.fail(bot, value)
                return
            elif kind == REPLY:
                self.write(bot, value)
            elif kind in (FLOOD_WARN, FLOOD_KICK):
                bot.flood_limited = True
                bot.kicked = bot.kicked or kind == FLOOD_KICK

    def verify_slice(self) -> None:
        """Verifies up to VERIFY_SLICE_LINES of the deliveries waiting, in the order they came."""
        classify = self.codec.classify
        done = 0
        while done < VERIFY_SLICE_LINES and self.unverified:
            bot, now, data = self.unverified[0]
            if self.head_lines is None:
                mark = self.codec.load_mark
                self.head_lines = [line for line in data.split(b"\n") if mark in line]
                self.head_at = 0
            lines = self.head_lines
            end = min(len(lines), self.head_at + VERIFY_SLICE_LINES - done)
            for line in lines[self.head_at : end]:
                kind, value = classify(line)
                if kind == LOAD:
                    self.delivery(bot, value, now)
            done += end - self.head_at
            self.head_at = end
            if end == len(lines):
                self.unverified.popleft()
                self.unverified_bytes -= len(data)
                self.head_lines = None
        self.verify_step_max = max(self.verify_step_max, done)

    def verify_all(self) -> None:
        """Verifies every delivery still waiting (after the clock stops), slice by slice."""
        while self.unverified:
            self.verify_slice()

    def delivery(self, bot: _Bot, groups: tuple[bytes, bytes, bytes], now: int) -> None:
        name, seq_text, sent_text = groups
        sender = self.index_of.get(name)
        seq = int(seq_text)
        if sender is None or seq >= self.m:
            return  # not one of ours
        self.received += 1
        micros = (now - int(sent_text)) // 1000
        self.latency_us[micros] = self.latency_us.get(micros, 0) + 1
        r = bot.index
        slot = sender * self.m + seq
        seen = self.seen[r]
        if seen[slot]:
            self.duplicated += 1
            return
        seen[slot] = 1
        self.unique[r][sender] += 1
        if self.order is not None:
            self.order[r].append(slot)
        last = self.last[r]
        if seq < last[sender]:
            self.out_of_order += 1
        else:
            last[sender] = seq

    def barrier_reply(self, bot: _Bot) -> None:
        if bot.barriers <= 0:
            return  # a /who of someone's own, not ours
        bot.barriers -= 1
        self.progressed = True
        if not bot.sent_done:
            bot.sent_done = True
        elif bot.drain_asked:
            bot.drained = True

    def ask_barrier(self, bot: _Bot) -> None:
        bot.barriers += 1
        self.write(bot, self.codec.barrier())

    # -- sending -------------------------------------------------------------------------------

    def send_due(self, now: float) -> float:
        """Sends what each bot may send now; returns the time of the next send due."""
        config = self.config
        next_due = now + 0.05
        for bot in self.bots:
            if not bot.alive or not bot.joined or bot.sent >= config.messages:
                continue
            if config.rate == 0:  # flat out: as fast as the socket takes it
                count = FLAT_OUT_BATCH if len(bot.outbuf) < MAX_PENDING_BYTES else 0
            elif config.rate is None:  # a token bucket under the server's flood control
                bot.tokens = min(BOT_BURST, bot.tokens + (now - bot.bucket_at) * BOT_RATE)
                bot.bucket_at = now
                count = int(bot.tokens)
                bot.tokens -= count
                next_due = min(next_due, now + (1 - bot.tokens) / BOT_RATE)
            else:  # an aggregate rate, bots evenly spread
                assert bot.schedule is not None
                count = bot.schedule.take(now, FLAT_OUT_BATCH)
                next_due = min(next_due, bot.schedule.next_due)
            count = min(count, config.messages - bot.sent)
            if count <= 0:
                continue
            chunk = bytearray()
            for _ in range(count):
                text = f"load {bot.name} #{bot.sent} t={time.time_ns()}"
                chunk += self.codec.message(text)
                bot.sent += 1
            if not self.first_send_ns:
                self.first_send_ns = time.time_ns()
            self.write(bot, bytes(chunk))
            if bot.sent >= config.messages:
                self.ask_barrier(bot)
        return next_due

    # -- phases --------------------------------------------------------------------------------

    def run(self) -> LoadReport:
        config = self.config
        start = time.monotonic()
        deadline = start + config.duration
        join_deadline = start + config.join_timeout
        waiting = deque(self.bots + self.slow)
        quit_deadline = 0.0
        next_send = 0.0
        last_progress = 0.0
        timed_out: str | None = None
        while self.phase != "done":
            now = time.monotonic()
            if now >= deadline:
                timed_out = self.phase
                break
            wake = now + 0.05
            check_end, self.progressed = self.progressed, False
            if self.phase == "join":
                connecting = sum(1 for b in self.bots + self.slow if b.connecting)
                while waiting and connecting < MAX_CONNECTING:
                    self.connect(waiting.popleft())
                    connecting += 1
                pending = [b for b in self.bots if not b.joined and b.failed is None]
                slow_pending = [
                    b for b in self.slow if b.failed is None and b.first_nick not in self.seen_nicks
                ]
                if now >= join_deadline:
                    for bot in pending + slow_pending + list(waiting):
                        self.fail(bot, f"no welcome within {config.join_timeout:g} s")
                    waiting.clear()
                    pending = []
                    slow_pending = []
                if not waiting and not pending and not slow_pending:
                    self.phase = "send"
                    for bot in self.bots:
                        bot.bucket_at = now
                        if config.rate:
                            per_bot = config.rate / len(self.bots)
                            bot.schedule = Schedule(
                                interval=1 / per_bot,
                                catch_up=max(BOT_BURST, math.ceil(per_bot * CATCH_UP_S)),
                                first_due=now + bot.index / config.rate,
                            )
                        if bot.alive and bot.joined and config.messages == 0:
                            self.ask_barrier(bot)
            if self.phase == "send":
                # Paced, nothing is due before next_send; flat out, a bot may send again as
                # soon as its socket took the last batch.
                if config.rate == 0 or now >= next_send:
                    next_send = self.send_due(now)
                wake = next_send
                active = [b for b in self.bots if b.alive and b.joined] if check_end else []
                if check_end and all(b.sent_done for b in active):
                    self.phase = "drain"
                    for bot in active:
                        bot.drain_asked = True
                        self.ask_barrier(bot)
            if (
                self.phase == "drain"
                and check_end
                and all(b.drained for b in self.bots if b.alive and b.joined)
            ):
                self.phase = "quit"
                quit_deadline = now + QUIT_TIMEOUT_S
                for bot in self.bots:
                    if bot.alive:
                        bot.quit_sent = True
                        self.write(bot, self.codec.quit())
            if self.phase == "quit" and (
                not any(b.alive for b in self.bots) or now >= quit_deadline
            ):
                self.phase = "done"
                break
            if self.progress is not None and now - last_progress >= PROGRESS_EVERY_S:
                last_progress = now
                self.progress(self.progress_line(now - start))
            # Enough deliveries wait to be verified: look for sockets ready, and if none is,
            # verify a slice (the loop is idle) instead of waiting.
            backlog = self.unverified_bytes > self.idle_verify_bytes
            timeout = 0.0 if backlog else max(0.0, min(wake, deadline) - time.monotonic())
            events = self.selector.select(timeout)
            if not events and backlog:
                self.verify_slice()
            for key, mask in events:
                bot = key.data
                if bot.closed:
                    continue
                if bot.connecting:
                    self.connected(bot)
                    continue
                if mask & selectors.EVENT_WRITE:
                    self.flush(bot)
                if mask & selectors.EVENT_READ and not bot.closed:
                    self.read(bot)
        elapsed = time.monotonic() - start
        for bot in self.bots + self.slow:
            self.close(bot)
        self.selector.close()
        return self.report(elapsed, timed_out)

    def progress_line(self, elapsed: float) -> str:
        total = max(1, self.config.clients * (self.config.clients - 1) * self.config.messages)
        done = min(1.0, self.arrived / total)
        bar = "#" * int(done * 30)
        return f"\r[{bar:<30}] {self.arrived}/{total} deliveries  {self.phase:<5} {elapsed:5.1f} s"

    # -- the verdict ---------------------------------------------------------------------------

    def report(self, elapsed: float, timed_out: str | None) -> LoadReport:
        self.verify_all()
        config = self.config
        report = LoadReport(
            clients=config.clients,
            slow_clients=config.slow_clients,
            messages_per_client=config.messages,
            protocol=config.protocol,
            elapsed_s=round(elapsed, 3),
            timed_out=timed_out,
        )
        report.joined = sum(1 for b in self.bots if b.joined)
        report.join_failures = dict(Counter(b.failed for b in self.bots if b.failed))
        report.messages_sent = sum(b.sent for b in self.bots)
        report.flood_limited = sum(1 for b in self.bots if b.flood_limited)
        # Who kept up: receivers that got their "drain" reply (or all joined ones, if time ran
        # out, so that a stuck server shows up as loss). Senders whose every line was handled
        # and none dropped by flood control.
        if timed_out is None:
            receivers = [b for b in self.bots if b.drained]
        else:
            receivers = [b for b in self.bots if b.joined and b.gone is None]
        senders = [b for b in self.bots if b.joined and not b.flood_limited]
        if timed_out is None:
            senders = [b for b in senders if b.sent_done]
        expected = received = 0
        for r in receivers:
            unique = self.unique[r.index]
            for s in senders:
                if s is not r:
                    expected += s.sent
                    received += min(s.sent, unique[s.index])
        report.deliveries_expected = expected
        report.deliveries_received = received
        report.lost = expected - received
        report.duplicated = self.duplicated
        report.out_of_order = self.out_of_order
        report.deliveries_arrived = self.received
        span_ns = self.last_delivery_ns - self.first_send_ns
        if self.received and span_ns > 0:
            report.delivery_span_s = round(span_ns / 1e9, 6)
            report.delivery_rate = round(self.received / (span_ns / 1e9), 1)
        report.unverified_peak_bytes = self.unverified_peak_bytes
        report.verify_step_max = self.verify_step_max
        report.schedule_slips = sum(b.schedule.slips for b in self.bots if b.schedule is not None)
        report.latency = latency_of(self.latency_us)
        gone: Counter[str] = Counter()
        for bot in self.bots:
            if bot.gone is not None:
                reason = (
                    bot.gone
                    or self.leave_reasons.get(bot.nick or "")
                    or ("connection reset by the server" if bot.reset else "connection lost")
                )
                gone[reason] += 1
                bot.flood_limited = bot.flood_limited or reason == "kicked for flooding"
        report.disconnected = dict(gone)
        report.flood_limited = sum(1 for b in self.bots if b.flood_limited)
        report.slow_clients_disconnected = dict(
            Counter(
                self.leave_reasons[b.first_nick]
                for b in self.slow
                if b.first_nick in self.leave_reasons
            )
        )
        if self.order is not None:
            report.room_order_checked = True
            report.room_order_disagreements = _order_disagreements(self.order, len(self.seen[0]))
        if config.nick_clash:
            report.nick_clash_pairs = config.clients // 2
            by_nick = Counter(b.nick.lower() for b in self.bots if b.joined and b.nick)
            report.nick_clash_both_won = sum(1 for count in by_nick.values() if count > 1)
        return report


def _order_disagreements(order: list[array[int]], slots: int) -> int:
    """How many deliveries came in an order that disagrees with the room's: each receiver's
    sequence is compared with bot 0's (and bot 1's, which has bot 0's own messages): the
    positions there of what it received must only go up. 0: one order for everyone."""
    disagreements = 0
    for reference in order[:2]:
        position = array("i", [-1]) * slots
        for index, slot in enumerate(reference):
            position[slot] = index
        for sequence in order:
            last = -1
            for slot in sequence:
                at = position[slot]
                if at < 0:
                    continue
                if at < last:
                    disagreements += 1
                else:
                    last = at
    return disagreements


def _arrival_ns(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The kernel's receive timestamp in a recvmsg()'s ancillary data, in ns; 0 if none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return int(seconds * 1_000_000_000 + nanoseconds)
    return 0


def run_load(config: LoadConfig, progress: Callable[[str], None] | None = None) -> LoadReport:
    """Runs one load test against a running server; bounded by `config.duration`.

    Args:
        config: what to run.
        progress: called a few times a second with a one-line status (for a terminal).
    """
    return _Run(config, progress).run()
