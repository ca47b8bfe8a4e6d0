"""`chat-load`: a load generator and delivery verifier; owns nothing of the server.

N bot clients join one room, each sends M numbered messages, and every bot checks what it
receives: each other bot's messages exactly once and in the order they were sent. The report
gives deliveries expected and received, lost, duplicated, out of order, the delivery rate and the
latency (receive time minus send time, both on this machine's clock, so no clock skew; on Linux
the receive time is the kernel's timestamp of the bytes' arrival at the bot's socket, so the
latency is the server's and the network's, not this one thread's delay in reading 100 sockets).
`--slow-clients K` adds K clients that join and then never read, to show head-of-line blocking.

The whole tool is one thread around one `selectors` loop with non-blocking sockets, so it can
drive hundreds of bots from one process and the numbers measure the server, not the tool.

Each message's text is `load <bot> #<seq> t=<time_ns>`. The run has barriers built on the
protocol's `ping` (JSON Lines) or `/users` (text): a reply to either comes after everything the bot
sent before it has been handled and queued for every recipient. So, once every bot has its
"sent" reply, a second round of replies ("drain") arrives after every delivery, and the count is
exact, without guessing with timeouts. Every phase is bounded by `--duration`.

Use it as a library too:

    report = run_load(LoadConfig(port=port, clients=20, messages=50))
    assert report.ok
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import re
import selectors
import socket
import struct
import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, TextIO

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
# Connections opened at once; the server's listen backlog is 128.
MAX_CONNECTING = 64
# Reads go into one preallocated buffer: recv(256 KiB) would allocate (and the allocator map)
# 256 KiB on every call, 16 µs against 2.5 µs for a small read on this machine.
RECV_BYTES = 256 * 1024
# Deliveries are counted as they arrive and verified after the clock stops (see `_Run.read`);
# past this many bytes waiting to be verified, they are verified at once, to bound memory.
MAX_UNDIGESTED_BYTES = 256 * 1024 * 1024
QUIT_TIMEOUT_S = 2.0
PROGRESS_EVERY_S = 0.25

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2

_JSON_LOAD_RE = re.compile(rb'"text": "load (\S+) #(\d+) t=(\d+)"')
_TEXT_LOAD_RE = re.compile(rb"<[^>]*> load (\S+) #(\d+) t=(\d+)$")
_TEXT_LEAVE_RE = re.compile(rb"\*\*\* (\S+) left \((.*)\)$")
_TEXT_JOIN_RE = re.compile(rb"\*\*\* (\S+) joined \(")
_TEXT_WELCOME_RE = re.compile(rb"\* Hello (\S+)\. ")
_IRC_LOAD_RE = re.compile(rb"#lobby :load (\S+) #(\d+) t=(\d+)$")


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


@dataclass
class Latency:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


@dataclass
class LoadReport:
    """What happened; `ok` is True only if every client that kept up got exactly what it should."""

    clients: int
    slow_clients: int
    messages_per_client: int
    protocol: str
    joined: int = 0
    join_failures: dict[str, int] = field(default_factory=dict)
    messages_sent: int = 0
    deliveries_expected: int = 0
    deliveries_received: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    delivery_rate: float = 0.0
    latency: Latency | None = None
    disconnected: dict[str, int] = field(default_factory=dict)
    slow_clients_disconnected: dict[str, int] = field(default_factory=dict)
    flood_limited: int = 0
    nick_clash_pairs: int = 0
    nick_clash_both_won: int = 0
    timed_out: str | None = None  # the phase the run was in when --duration ran out
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.out_of_order == 0
            and self.nick_clash_both_won == 0
            and not self.join_failures
            and not self.disconnected  # kicked, crashed: it did not keep up, say so
            and self.timed_out is None
            and self.joined > 0
        )

    def to_json(self) -> str:
        data = asdict(self)
        data["ok"] = self.ok
        return json.dumps(data, indent=2)

    def format_text(self) -> str:
        lines = [
            f"clients            {self.joined} of {self.clients} joined"
            + (f", {self.slow_clients} slow (never read)" if self.slow_clients else "")
            + f", protocol {self.protocol}",
            f"messages sent      {self.messages_sent}",
            f"deliveries         {self.deliveries_received} received of "
            f"{self.deliveries_expected} expected",
            f"lost               {self.lost}",
            f"duplicated         {self.duplicated}",
            f"out of order       {self.out_of_order}",
            f"delivery rate      {self.delivery_rate:,.0f} deliveries/s",
        ]
        if self.latency is not None:
            lat = self.latency
            lines.append(
                f"latency            p50 {lat.p50_ms:.1f} ms  p95 {lat.p95_ms:.1f} ms  "
                f"p99 {lat.p99_ms:.1f} ms  max {lat.max_ms:.1f} ms"
            )
        for reason, count in sorted(self.join_failures.items()):
            lines.append(f"never joined       {count} ({reason})")
        for reason, count in sorted(self.disconnected.items()):
            lines.append(f"disconnected       {count} ({reason})")
        for reason, count in sorted(self.slow_clients_disconnected.items()):
            lines.append(f"slow disconnected  {count} ({reason})")
        if self.flood_limited:
            lines.append(
                f"flood control      the server dropped lines of {self.flood_limited} bot(s); "
                "their messages are not counted as lost (pace with --rate, or run the server "
                "with --flood-rate 0 to go flat out)"
            )
        if self.nick_clash_pairs:
            lines.append(
                f"nickname clashes   {self.nick_clash_both_won} of {self.nick_clash_pairs} pairs "
                "BOTH got the same nickname"
            )
        if self.timed_out is not None:
            lines.append(f"timed out          --duration ran out during the {self.timed_out} phase")
        lines.append(f"elapsed            {self.elapsed_s:.2f} s")
        lines.append("result             " + ("OK" if self.ok else "PROBLEMS"))
        return "\n".join(lines)


# -- wire formats, as seen by a bot ----------------------------------------------------------------


class _Codec(Protocol):
    """How a bot speaks one wire format; see _JsonCodec and _TextCodec."""

    name: str
    # Found in every delivery line of a load message and in no other line the server sends.
    load_mark: bytes

    def hello(self, nick: str) -> bytes: ...
    def message(self, text: str) -> bytes: ...
    def barrier(self) -> bytes: ...
    def quit(self) -> bytes: ...
    def classify(self, line: bytes) -> tuple[int, Any]: ...


# What a received line means to a bot.
LOAD, WELCOME, NICK_TAKEN, BARRIER, JOIN, LEAVE, FLOOD_WARN, FLOOD_KICK, REFUSED, OTHER = range(10)
REPLY = 10  # the protocol wants an answer: send the bytes given (IRC: JOIN once registered)


def _refusal(line: bytes) -> str | None:
    """The server's admission refusal, sent in text before it knows the client's mode."""
    if line.startswith((b"! server full", b"! too many connections")):
        return "refused: " + line[2:].decode(errors="replace").split(",")[0]
    return None


class _JsonCodec:
    name = "json"
    load_mark = b'"text": "load '

    @staticmethod
    def hello(nick: str) -> bytes:
        return b'{"type": "hello", "version": 1, "nick": "%s"}\n' % nick.encode()

    @staticmethod
    def message(text: str) -> bytes:
        return b'{"type": "message", "text": "%s"}\n' % text.encode()

    @staticmethod
    def barrier() -> bytes:
        return b'{"type": "ping"}\n'

    @staticmethod
    def quit() -> bytes:
        return b'{"type": "quit", "reason": "load done"}\n'

    @staticmethod
    def classify(line: bytes) -> tuple[int, Any]:
        if line.startswith(b'{"type": "message"'):
            match = _JSON_LOAD_RE.search(line)
            if match is not None:
                return LOAD, match.groups()
        if not line.startswith(b"{"):
            refusal = _refusal(line)  # or the text greeting sent before the mode is known
            return (OTHER, None) if refusal is None else (REFUSED, refusal)
        try:
            obj = json.loads(line)
        except ValueError:
            return OTHER, None
        kind = obj.get("type")
        if kind == "pong":
            return BARRIER, None
        if kind == "welcome":
            return WELCOME, (obj.get("nick"), obj.get("users", []))
        if kind == "join":
            return JOIN, obj.get("nick")
        if kind == "leave":
            return LEAVE, (obj.get("nick"), obj.get("reason"))
        if kind == "error":
            code, message = obj.get("code"), obj.get("message", "")
            if code == "nick_taken":
                return NICK_TAKEN, None
            if code == "flood":
                return (FLOOD_KICK if "kicked" in message else FLOOD_WARN), None
        return OTHER, None


class _TextCodec:
    name = "text"
    load_mark = b"> load "

    @staticmethod
    def hello(nick: str) -> bytes:
        return nick.encode() + b"\n"

    @staticmethod
    def message(text: str) -> bytes:
        return text.encode() + b"\n"

    @staticmethod
    def barrier() -> bytes:
        return b"/users\n"  # everyone online: "*** Online (N): ..."

    @staticmethod
    def quit() -> bytes:
        return b"/quit load done\n"

    @staticmethod
    def classify(line: bytes) -> tuple[int, Any]:
        line = line.rstrip(b"\r")
        if line.startswith(b"<"):
            match = _TEXT_LOAD_RE.match(line)
            if match is not None:
                return LOAD, match.groups()
            return OTHER, None
        if line.startswith(b"*** Online ("):
            return BARRIER, None
        if line.startswith(b"*** "):
            if (match := _TEXT_LEAVE_RE.match(line)) is not None:
                reason = match.group(2).decode(errors="replace").split(": ")[0]
                return LEAVE, (match.group(1).decode(), reason)
            if (match := _TEXT_JOIN_RE.match(line)) is not None:
                return JOIN, match.group(1).decode()
            return OTHER, None
        if line.startswith(b"* Hello "):
            match = _TEXT_WELCOME_RE.match(line)
            users = line.partition(b"Online: ")[2].partition(b". Type")[0].decode().split(", ")
            return WELCOME, (match.group(1).decode() if match else None, users)
        if line.startswith(b"! "):
            if (refusal := _refusal(line)) is not None:
                return REFUSED, refusal
            if line.endswith(b"is taken"):
                return NICK_TAKEN, None
            if line == b"! kicked for flooding":
                return FLOOD_KICK, None
            if line.startswith(b"! slow down"):
                return FLOOD_WARN, None
        return OTHER, None


class _IrcCodec:
    """An IRC bot, for the server's --irc-port (and any IRC server with a #lobby channel)."""

    name = "irc"
    load_mark = b" :load "

    @staticmethod
    def hello(nick: str) -> bytes:
        # JOIN waits for 001: a server may finish registration later than it reads USER.
        return b"NICK %s\r\nUSER %s 0 * :chat-load bot\r\n" % (nick.encode(), nick.encode())

    @staticmethod
    def message(text: str) -> bytes:
        return b"PRIVMSG #lobby :%s\r\n" % text.encode()

    @staticmethod
    def barrier() -> bytes:
        return b"PING :chat-load\r\n"

    @staticmethod
    def quit() -> bytes:
        return b"QUIT :load done\r\n"

    @staticmethod
    def classify(line: bytes) -> tuple[int, Any]:
        line = line.rstrip(b"\r")
        if line.startswith(b":"):
            source, _, rest = line[1:].partition(b" ")
            command, _, params = rest.partition(b" ")
            nick = source.partition(b"!")[0].decode(errors="replace")
            if command == b"PRIVMSG":
                match = _IRC_LOAD_RE.match(params)
                return (LOAD, match.groups()) if match is not None else (OTHER, None)
            if command == b"PONG":
                return BARRIER, None
            if command == b"JOIN":
                return JOIN, nick
            if command in (b"QUIT", b"PART"):
                reason = params.partition(b" :")[2].decode(errors="replace") or "quit"
                return LEAVE, (nick, "quit" if reason.startswith("Quit") else reason.lower())
            if command == b"353":  # the names of #lobby: this bot is in
                target = params.split(b" ", 1)[0].decode(errors="replace")
                names = params.partition(b" :")[2].decode(errors="replace").split()
                return WELCOME, (target, [n.lstrip("@+") for n in names])
            if command == b"001":
                return REPLY, b"JOIN #lobby\r\n"
            if command == b"433":
                return NICK_TAKEN, None
            if command == b"NOTICE" and b"slow down" in params:
                return FLOOD_WARN, None
            return OTHER, None
        if line.startswith(b"ERROR"):
            if b"flood" in line:
                return FLOOD_KICK, None
            if b"server full" in line or b"too many connections" in line:
                return REFUSED, "refused: " + line.partition(b":")[2].decode(errors="replace")
        return OTHER, None


_CODECS: dict[str, _Codec] = {"json": _JsonCodec(), "text": _TextCodec(), "irc": _IrcCodec()}


# -- the bots --------------------------------------------------------------------------------------


class _Bot:
    """One simulated client: its socket, buffers and what it has seen. Touched by one thread."""

    def __init__(self, index: int, name: str, slow: bool, first_nick: str) -> None:
        self.index = index
        self.name = name  # embedded in its messages; stable even if the nick is not
        self.slow = slow
        self.first_nick = first_nick
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
        self.next_send = 0.0
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

    @property
    def alive(self) -> bool:
        return self.sock is not None and not self.closed


class _Run:
    """One load run: the selector loop and the bookkeeping; see `run_load`."""

    def __init__(self, config: LoadConfig, progress: Callable[[str], None] | None) -> None:
        if config.clients < 1 or config.messages < 0 or config.slow_clients < 0:
            raise ValueError("need at least one client and no negative counts")
        self.config = config
        self.codec = _CODECS[config.protocol]
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
        self.received = 0  # verified deliveries
        self.arrived = 0  # delivery lines counted on arrival, verified or not
        # (bot, receive time, complete lines) in arrival order: the deliveries in them are
        # verified by digest(), after the clock stops.
        self.undigested: list[tuple[_Bot, int, bytes]] = []
        self.undigested_bytes = 0
        self.latencies = array("q")
        self.seen_nicks: set[str] = set()
        self.leave_reasons: dict[str, str] = {}
        self.phase = "join"
        self.first_send_ns = 0
        self.last_delivery_ns = 0
        # A barrier reply came or a bot left since the phase's end was last checked: the loop
        # checks "every bot done?" only then, not on every wake-up (100s of bots, 10,000s of
        # wake-ups a second).
        self.progressed = True

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
        code = sock.connect_ex((self.config.host, self.config.port))
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
        self.hello(bot, bot.first_nick)

    def hello(self, bot: _Bot, nick: str) -> None:
        bot.hellos += 1
        self.write(bot, self.codec.hello(nick))

    def write(self, bot: _Bot, data: bytes) -> None:
        if not bot.alive:
            return
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
        if not bot.slow:
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
        data = bot.inbuf + data
        end = data.rfind(b"\n") + 1
        bot.inbuf = data[end:]
        data = data[:end]
        # The bulk of what arrives is deliveries: here they are only counted (in C, at memory
        # speed) and kept; digest() verifies them later. Parsing each one now would make this
        # one thread the bottleneck of a flat-out run. Every other line is handled at once.
        mark = self.codec.load_mark
        loads = data.count(mark)
        if loads:
            self.arrived += loads
            self.last_delivery_ns = now
            self.undigested.append((bot, now, data))
            self.undigested_bytes += len(data)
            if self.undigested_bytes > MAX_UNDIGESTED_BYTES:
                self.digest()
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

    def digest(self) -> None:
        """Verifies the deliveries read so far, in the order they arrived."""
        mark = self.codec.load_mark
        classify = self.codec.classify
        for bot, now, data in self.undigested:
            for line in data.split(b"\n"):
                if mark in line:
                    kind, value = classify(line)
                    if kind == LOAD:
                        self.delivery(bot, value, now)
        self.undigested.clear()
        self.undigested_bytes = 0

    def delivery(self, bot: _Bot, groups: tuple[bytes, bytes, bytes], now: int) -> None:
        name, seq_text, sent_text = groups
        sender = self.index_of.get(name)
        seq = int(seq_text)
        if sender is None or seq >= self.m:
            return  # not one of ours
        self.received += 1
        self.latencies.append(now - int(sent_text))
        r = bot.index
        slot = sender * self.m + seq
        seen = self.seen[r]
        if seen[slot]:
            self.duplicated += 1
            return
        seen[slot] = 1
        self.unique[r][sender] += 1
        last = self.last[r]
        if seq < last[sender]:
            self.out_of_order += 1
        else:
            last[sender] = seq

    def barrier_reply(self, bot: _Bot) -> None:
        if bot.barriers <= 0:
            return  # a /users of someone's own, not ours
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
                bot.tokens = min(BOT_BURST, bot.tokens + (now - bot.next_send) * BOT_RATE)
                bot.next_send = now
                count = int(bot.tokens)
                bot.tokens -= count
                next_due = min(next_due, now + (1 - bot.tokens) / BOT_RATE)
            else:  # an aggregate rate, bots evenly spread
                count = 0
                interval = len(self.bots) / config.rate
                while bot.next_send <= now and count < FLAT_OUT_BATCH:
                    count += 1
                    bot.next_send += interval
                next_due = min(next_due, bot.next_send)
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
                        bot.next_send = now + (bot.index / config.rate if config.rate else 0)
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
            timeout = max(0.0, min(wake, deadline) - time.monotonic())
            for key, mask in self.selector.select(timeout):
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
        self.digest()
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
        span_ns = self.last_delivery_ns - self.first_send_ns
        if self.received and span_ns > 0:
            report.delivery_rate = round(self.received / (span_ns / 1e9), 1)
        if self.latencies:
            ordered = sorted(self.latencies)

            def pick(q: float) -> float:
                rank = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))
                return round(ordered[rank] / 1e6, 3)

            report.latency = Latency(pick(0.50), pick(0.95), pick(0.99), pick(1.0))
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
        if config.nick_clash:
            report.nick_clash_pairs = config.clients // 2
            by_nick = Counter(b.nick.lower() for b in self.bots if b.joined and b.nick)
            report.nick_clash_both_won = sum(1 for count in by_nick.values() if count > 1)
        return report


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


# -- the command line ------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (flat out) or more, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = LoadConfig()
    parser = argparse.ArgumentParser(
        prog="chat-load",
        description="Load a chat server with bot clients and verify every delivery: nothing "
        "lost, duplicated or out of order. Exit code 0 only if so.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument(
        "--clients",
        type=_positive_int,
        default=defaults.clients,
        help="bot clients that send and verify",
    )
    parser.add_argument(
        "--messages", type=_count, default=defaults.messages, help="messages each bot sends"
    )
    parser.add_argument(
        "--rate",
        type=_rate,
        default=None,
        help="messages per second from all bots together; 0 is flat out (the "
        f"server then needs --flood-rate 0). Default: each bot at {BOT_RATE:g}/s "
        "(bursts of %d), under the server's default flood control" % BOT_BURST,
    )
    parser.add_argument(
        "--slow-clients",
        type=_count,
        default=0,
        help="extra clients that join and then never read (head-of-line blocking)",
    )
    parser.add_argument(
        "--duration",
        type=_seconds,
        default=defaults.duration,
        help="the whole run stops after this many seconds, finished or not",
    )
    parser.add_argument(
        "--join-timeout",
        type=_seconds,
        default=defaults.join_timeout,
        help="seconds the bots have to join before sending starts",
    )
    parser.add_argument("--protocol", choices=sorted(_CODECS), default=defaults.protocol)
    parser.add_argument(
        "--nick-clash",
        action="store_true",
        help="bots join in pairs asking for the same nickname; the loser takes "
        "its own name. Two winners of one name is a race in the server",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = stdout or sys.stdout
    config = LoadConfig(
        host=args.host,
        port=args.port,
        clients=args.clients,
        messages=args.messages,
        rate=args.rate,
        slow_clients=args.slow_clients,
        duration=args.duration,
        join_timeout=min(args.join_timeout, args.duration),
        protocol=args.protocol,
        nick_clash=args.nick_clash,
    )
    progress = None
    if not args.json and sys.stderr.isatty():

        def progress(line: str) -> None:
            sys.stderr.write(line)
            sys.stderr.flush()

    report = run_load(config, progress)
    if progress is not None:
        sys.stderr.write("\r" + " " * 79 + "\r")
    if report.joined == 0 and report.join_failures:
        reasons = ", ".join(report.join_failures)
        sys.stderr.write(f"chat-load: no bot could join {args.host}:{args.port} ({reasons})\n")
    out.write((report.to_json() if args.json else report.format_text()) + "\n")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


if __name__ == "__main__":
    sys.exit(main())
