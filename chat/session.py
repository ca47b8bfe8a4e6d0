"""Session: one client connection, with a reader thread, a writer thread and a bounded outbox.

The reader thread owns the protocol state (wire format, nickname, flood gate) and is the only
thread that changes it; the writer thread only moves bytes from the outbox to the socket. Other
threads reach a session through two non-blocking doors: `deliver()` (queue an event) and
`drop()` / `shut_down()` (ask it to go).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from chat import events as ev
from chat import wire_json, wire_text
from chat.flood import FloodGate, Verdict
from chat.outbox import Outbox
from chat.protocol import Line, LineDecoder, LineTooLong, ProtocolError, decode_text, nick_error
from chat.room import NickTaken, NoSuchNick, Room

log = logging.getLogger("chat.session")

RECV_BYTES = 64 * 1024
# How long a leaving client's writer may take to flush its last lines (goodbye, the reason it was
# kicked) before the socket is cut; short, because a client that is not reading never drains.
FLUSH_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class SessionConfig:
    """The per-connection limits; see docs/protocol.md for what each means to a user."""

    sendq_bytes: int = 256 * 1024
    flood_rate: float = 10.0
    flood_burst: int = 20
    register_timeout_s: float | None = 60.0
    idle_timeout_s: float | None = None


class Session:
    """One connected client.

    Thread safety: `deliver()` may be called from any thread (usually under the room lock) and
    only offers to the outbox. `drop()` and `shut_down()` may be called from any thread, any
    number of times; the first reason recorded wins (`_reason_lock` guards it), and `_sock_lock`
    keeps a `shutdown()` from racing with the reader's final `close()` of the socket. Everything
    else (`nick`, `_wire`, the decoder and flood gate) belongs to the reader thread alone; `_wire`
    is set before the session joins the room and never changes after, so `deliver()` can read it.
    """

    def __init__(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        room: Room,
        config: SessionConfig,
        on_exit: Callable[[Session], None],
    ) -> None:
        self.address = address
        self.nick: str | None = None
        self._sock = sock
        self._room = room
        self._config = config
        self._on_exit = on_exit
        self._outbox = Outbox(config.sendq_bytes)
        self._wire: ModuleType = wire_text  # until the first line says otherwise
        self._decoder = LineDecoder()
        self._flood = FloodGate(config.flood_rate, config.flood_burst, time.monotonic())
        self._reason: str | None = None
        self._quit_message = ""
        self._reason_lock = threading.Lock()
        self._sock_lock = threading.Lock()
        self._sock_closed = False
        peer = f"{address[0]}:{address[1]}"
        self.reader = threading.Thread(target=self._read_loop, name=f"reader {peer}")
        self.writer = threading.Thread(target=self._write_loop, name=f"writer {peer}")

    def __repr__(self) -> str:
        return f"<Session {self.address[0]}:{self.address[1]} {self.nick or '-'}>"

    # -- doors for other threads ---------------------------------------------------------------

    def start(self) -> None:
        self.writer.start()
        self.reader.start()

    def deliver(self, event: ev.Event) -> bool:
        """Queues `event` in this client's format; never blocks; False if the queue is full."""
        return self._outbox.offer(self._wire.encode(event, self.nick or ""))

    def drop(self, reason: str) -> None:
        """Disconnects at once, unsent output is lost (the client is too slow or the server is
        out of patience). Idempotent; the reader thread announces the leave."""
        self._set_reason(reason)
        self._outbox.close()
        self._cut()

    def shut_down(self) -> None:
        """Says goodbye because the server stops: queue the notice, let the writer flush it."""
        if self._set_reason(ev.LeaveReason.SHUTDOWN):
            self.deliver(ev.Notice("server shutting down", time.time()))
        self._outbox.close()

    # -- the reader thread ---------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            self._sock.settimeout(self._config.register_timeout_s)
            self.deliver(ev.Greeting(online=len(self._room)))
            while self._reason is None:
                data = self._sock.recv(RECV_BYTES)
                if not data:
                    self._set_reason(ev.LeaveReason.CONNECTION_LOST)
                    break
                for line in self._decoder.feed(data):
                    self._handle(line)
                    if self._reason is not None:
                        break
        except TimeoutError:
            self._set_reason(ev.LeaveReason.TIMED_OUT)
            self.deliver(ev.Error("timeout", "timed out", time.time()))
        except ProtocolError as error:
            self._set_reason(ev.LeaveReason.LINE_TOO_LONG)
            self.deliver(ev.Error(error.code, error.message, time.time()))
        except OSError:
            self._set_reason(ev.LeaveReason.CONNECTION_LOST)
        finally:
            self._finish()

    def _finish(self) -> None:
        reason = self._reason or ev.LeaveReason.CONNECTION_LOST
        self._room.leave(self, reason, self._quit_message)
        self._outbox.close()
        self.writer.join(FLUSH_TIMEOUT_S)
        if self.writer.is_alive():  # the peer is not reading: stop waiting for it
            self._cut()
            self.writer.join()
        with self._sock_lock:
            self._sock_closed = True
            self._sock.close()
        log.info("%s disconnected (%s)", self._label(), reason)
        self._on_exit(self)

    def _handle(self, line: Line) -> None:
        if line.too_long:
            self._reply_error(LineTooLong())
            return
        text = decode_text(line.data)
        if self.nick is None and self._wire is wire_text and wire_json.looks_like_json(text):
            self._wire = wire_json
        verdict = self._flood.check(time.monotonic())
        if verdict is Verdict.WARN:
            rate = self._config.flood_rate
            self._reply_error(ProtocolError("flood", f"slow down: at most {rate:g} lines/s"))
            return
        if verdict is Verdict.DROP:
            return
        if verdict is Verdict.KICK:
            self._reply_error(ProtocolError("flood", "kicked for flooding"))
            self._set_reason(ev.LeaveReason.FLOODING)
            return
        try:
            request = self._wire.parse(text, registered=self.nick is not None)
            self._dispatch(request)
        except ProtocolError as error:
            self._reply_error(error)

    def _dispatch(self, request: ev.Request) -> None:
        room = self._room
        match request:
            case ev.Hello(nick=nick):
                self._register(nick)
            case ev.Say(text=text):
                if text.strip():
                    room.say(self, text)
            case ev.Act(text=text):
                room.act(self, text)
            case ev.Whisper(to=to, text=text):
                try:
                    room.whisper(self, to, text)
                except NoSuchNick:
                    raise ProtocolError("no_such_nick", f"no such nick: {to}") from None
            case ev.ChangeNick(nick=new):
                self._rename(new)
            case ev.Who():
                self.deliver(ev.UserList(room.name, room.nicks(), time.time()))
            case ev.Help():
                self.deliver(ev.HelpText(time.time()))
            case ev.Ping(token=token):
                self.deliver(ev.Pong(token, time.time()))
            case ev.Quit(reason=message):
                self._quit_message = message
                self._set_reason(ev.LeaveReason.QUIT)
                # Leave now, so that the goodbye is the last line this client receives.
                room.leave(self, ev.LeaveReason.QUIT, message)
                self.deliver(ev.Goodbye(message, time.time()))
            case ev.Nothing():
                pass

    def _register(self, nick: str) -> None:
        problem = nick_error(nick)
        if problem is not None:
            raise ProtocolError("nick_invalid", problem)
        try:
            self._room.join(self, nick)
        except NickTaken:
            raise ProtocolError("nick_taken", f"nickname {nick} is taken") from None
        self.nick = nick
        self._sock.settimeout(self._config.idle_timeout_s)
        log.info("%s joined as %s", self._label(), nick)

    def _rename(self, new: str) -> None:
        problem = nick_error(new)
        if problem is not None:
            raise ProtocolError("nick_invalid", problem)
        try:
            self._room.rename(self, new)
        except NickTaken:
            raise ProtocolError("nick_taken", f"nickname {new} is taken") from None
        log.info("%s renamed to %s", self._label(), new)
        self.nick = new

    def _reply_error(self, error: ProtocolError) -> None:
        prompt_again = self.nick is None and error.code in ("nick_invalid", "nick_taken")
        self.deliver(ev.Error(error.code, error.message, time.time(), prompt_again))

    # -- the writer thread ---------------------------------------------------------------------

    def _write_loop(self) -> None:
        try:
            while (data := self._outbox.take_all()) is not None:
                self._sock.sendall(data)
        except OSError:
            self._set_reason(ev.LeaveReason.CONNECTION_LOST)
        finally:
            # Everything is sent (or cannot be): wake the reader if it still waits for input.
            self._cut()

    # -- helpers -------------------------------------------------------------------------------

    def _set_reason(self, reason: str) -> bool:
        """Records why the session ends; True if this call was the first to say so."""
        with self._reason_lock:
            if self._reason is not None:
                return False
            self._reason = reason
            return True

    def _cut(self) -> None:
        """Shuts the socket down both ways, which wakes a thread blocked in recv() or sendall()."""
        with self._sock_lock:
            if self._sock_closed:
                return
            with contextlib.suppress(OSError):  # already disconnected
                self._sock.shutdown(socket.SHUT_RDWR)

    def _label(self) -> str:
        return f"{self.address[0]}:{self.address[1]} {self.nick or '-'}"
