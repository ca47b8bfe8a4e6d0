"""Session: one client connection, with its own reader thread and a bounded outbox.

The reader thread owns the protocol state (wire format, nickname, flood gate) and is the only
thread that changes it. Output goes through the outbox to the server's one sender thread
(chat/sender.py), which moves bytes from every outbox to its socket without ever blocking.
Other threads reach a session through two non-blocking doors: `deliver()` then `flush()` (queue
output, have it sent) and `drop()` / `shut_down()` (ask it to go).
"""

from __future__ import annotations

import contextlib
import logging
import select
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
from chat.room import (
    BadRoomKey,
    BadRoomName,
    ChatError,
    Hub,
    NickTaken,
    NoSuchNick,
    NoSuchRoom,
    NotInRoom,
    NotOperator,
    UserNotInRoom,
)
from chat.sender import Sender

log = logging.getLogger("chat.session")

RECV_BYTES = 64 * 1024
# After the last line, a closing session reads and discards what the client still sends, for at
# most this long / this much, before it closes: close() with unread input answers with a reset,
# and a reset can destroy the last lines still on their way (the goodbye, the reason for a kick).
LINGER_S = 1.0
LINGER_BYTES = 1024 * 1024
# How long a leaving client's last lines may take to be sent (goodbye, the reason it was
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
    password: str | None = None  # the server password (--password); None: no password
    # IRC liveness, as in ergo: PING a client silent for irc_ping_s, drop it when it has been
    # silent for irc_timeout_s in all.
    irc_ping_s: float = 90.0
    irc_timeout_s: float = 150.0
    server_name: str = "threadroom"


class Session:
    """One connected client.

    Thread safety: `deliver()` may be called from any thread (usually under the hub lock) and
    only offers to the outbox; `flush()` from any thread, outside the hub lock. `drop()` and
    `shut_down()` may be called from any thread, any number of times; the first reason recorded
    wins (`_reason_lock` guards it), and `_sock_lock` keeps a `shutdown()` from racing with the
    sender's final `close()` of the socket. The socket is non-blocking: the reader waits for
    input in poll(), the sender thread alone sends (`send_queued()`) and closes it. Everything
    else (`nick`, `current_room`, `_wire`, the decoder and flood gate) belongs to the reader
    thread alone; `_wire` is set before the session registers and never changes after, so
    `deliver()` can read it. `deliver()` also reads `current_room` (one attribute read, atomic)
    to prefix lines from the user's other rooms; the reader sets it *before* joining a room, so
    the new room's first lines are never mis-prefixed. `_reading` goes from True to False once,
    written by the reader, read by the sender; it is set to False before the outbox closes.
    """

    def __init__(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        hub: Hub,
        sender: Sender,
        config: SessionConfig,
        on_exit: Callable[[Session], None],
    ) -> None:
        sock.setblocking(False)
        self.address = address
        self.nick: str | None = None
        # Where a text or JSON user's plain messages go; lines from its other rooms are prefixed.
        self.current_room: str | None = None
        self._sock = sock
        self._hub = hub
        self._sender = sender
        self._password_ok = config.password is None
        self._config = config
        self._on_exit = on_exit
        self._outbox = Outbox(config.sendq_bytes)
        self._wire: ModuleType = wire_text  # until the first line says otherwise
        self._decoder = self._make_decoder()
        self._flood = FloodGate(config.flood_rate, config.flood_burst, time.monotonic())
        self._reason: str | None = None
        self._quit_message = ""
        self._reason_lock = threading.Lock()
        self._sock_lock = threading.Lock()
        self._sock_closed = False
        self._reading = True  # the reader thread is in its loop (may be blocked in recv())
        # Unexpected exceptions this session's reader survived (a bug, or the unsafe demo);
        # read by the server's audit after the reader has ended.
        self.crashes: list[str] = []
        self.reader = threading.Thread(
            target=self._read_loop, name=f"reader {address[0]}:{address[1]}"
        )

    def __repr__(self) -> str:
        return f"<Session {self.address[0]}:{self.address[1]} {self.nick or '-'}>"

    # -- doors for other threads ---------------------------------------------------------------

    @staticmethod
    def refusal(line: bytes) -> bytes:
        """The admission refusal `line` ("! server full ...\\n") in this front-end's form."""
        return line

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def start(self) -> None:
        self.reader.start()

    def deliver(self, event: ev.Event) -> bool:
        """Queues `event` in this client's format; never blocks; False if the queue is full."""
        return self._outbox.offer(self._wire.encode(event, self.nick or "", self.current_room))

    def flush(self) -> None:
        """Has what is queued sent soon, by the sender thread; never blocks.

        Called by the thread that queued something, after it released the hub lock.
        """
        self._sender.ready(self)

    def drop(self, reason: str) -> None:
        """Disconnects at once, unsent output is lost (the client is too slow or the server is
        out of patience). Idempotent; the reader thread announces the leave."""
        self._set_reason(reason)
        self._outbox.discard()
        self._cut()

    def shut_down(self) -> None:
        """Says goodbye because the server stops: queue the notice; once it is sent, the
        sender cuts the connection, which ends the reader."""
        if self._set_reason(ev.LeaveReason.SHUTDOWN):
            self.deliver(ev.Notice("server shutting down", time.time()))
        self._outbox.close()
        self.flush()

    # -- doors for the sender thread -----------------------------------------------------------

    def send_queued(self) -> bool:
        """Sends what is queued, as much as the socket takes now; True if the socket is full
        and the rest waits for it to drain. Only the sender thread calls this."""
        data = self._outbox.claim()
        if data is not None:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:  # the client is gone: nothing more will ever go out
                self._outbox.release()
                self.drop(ev.LeaveReason.CONNECTION_LOST)
                return False
            unsent = data[sent:]
            self._outbox.release(unsent)
            if unsent:
                return True
        # Drained while the reader still waits for input: the server is shutting down and the
        # goodbye is out. Cut both ways, which wakes the reader to finish. (Drained is checked
        # first: the reader clears `_reading` before it closes the outbox itself.)
        if self._outbox.drained and self._reading:
            self._cut()
        return False

    def close_socket(self) -> None:
        """The sender thread's last act for this session, after the reader retired it."""
        with self._sock_lock:
            self._sock_closed = True
            self._sock.close()

    # -- the reader thread ---------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            self._greet()
            while self._reason is None:
                data = self._receive()
                if data is None:
                    continue  # a timeout the front-end handled (IRC: sent a PING)
                if not data:
                    self._set_reason(ev.LeaveReason.CONNECTION_LOST)
                    break
                self._handle_all(self._decoder.feed(data))
        except TimeoutError:
            self._set_reason(ev.LeaveReason.TIMED_OUT)
            self._reply_error(ProtocolError("timeout", "timed out"))
        except ProtocolError as error:
            self._set_reason(ev.LeaveReason.LINE_TOO_LONG)
            self._reply_error(error)
        except OSError:
            self._set_reason(ev.LeaveReason.CONNECTION_LOST)
        except Exception as error:  # a bug must cost one connection, never the reader thread
            self._crashed(error)
        finally:
            self._finish()

    def _receive(self) -> bytes | None:
        """The next bytes from the client; None if `_on_timeout()` handled a silence; raises
        TimeoutError past the registration or idle timeout.

        The socket is non-blocking (for the sender); the reader waits in poll() for input.
        """
        try:
            return self._sock.recv(RECV_BYTES)
        except BlockingIOError:
            pass
        if _readable(self._sock, self._receive_timeout()) or self._on_timeout():
            return None  # something to read now (or the front-end handled a silence)
        raise TimeoutError

    def _finish(self) -> None:
        self._reading = False  # read by the sender: the reader no longer waits for input
        reason = self._reason or ev.LeaveReason.CONNECTION_LOST
        try:
            self._hub.leave(self, reason, self._quit_message)
        except Exception as error:
            self._crashed(error)
        self._outbox.close()
        self.flush()
        if self._outbox.wait_drained(FLUSH_TIMEOUT_S):
            self._cut(both=False)  # a FIN after the last line: the client reads every line
            self._drain_input()
        else:  # the client is not reading: stop waiting for it
            self._outbox.discard()
            self._cut()
        self._sender.retire(self)  # the sender closes the socket, after any send in flight
        log.info("%s disconnected (%s)", self._label(), reason)
        self._on_exit(self)

    def _drain_input(self) -> None:
        """Discards what the client still sends until it hangs up too (bounded: LINGER_*).

        Everything is sent and our side is shut down (a FIN after the last byte), so a
        well-behaved client sees the end and closes at once; this only waits for that.
        """
        deadline = time.monotonic() + LINGER_S
        drained = 0
        with contextlib.suppress(OSError):
            while drained < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                if not _readable(self._sock, left):
                    return
                data = self._sock.recv(RECV_BYTES)
                if not data:
                    return
                drained += len(data)

    def _handle_all(self, lines: list[Line]) -> None:
        """Handles the lines of one `recv()`; consecutive messages to the current room go to
        the hub as one batch."""
        texts: list[str] = []
        for line in lines:
            request = self._parse(line)
            if isinstance(request, ev.Say) and request.room is None:
                if request.text.strip():
                    texts.append(request.text)
                continue
            if texts:  # keep the order: the messages before this request come first
                self._say(texts)
                texts = []
            if request is not None:
                try:
                    self._dispatch(request)
                except ProtocolError as error:
                    self._reply_error(error)
            if self._reason is not None:
                break
        if texts:
            self._say(texts)

    def _say(self, texts: list[str]) -> None:
        try:
            self._hub.say(self, *texts, room=self._room_or_current(None))
        except ChatError as error:
            self._reply_error(_protocol_error(error))
        except ProtocolError as error:
            self._reply_error(error)

    def _parse(self, line: Line) -> ev.Request | None:
        """The request on `line`, or None when it was refused (and the client told why)."""
        if line.too_long:
            self._reply_error(LineTooLong())
            return None
        text = decode_text(line.data)
        if self.nick is None and self._wire is wire_text and wire_json.looks_like_json(text):
            self._wire = wire_json
        if not self._password_ok and self._wire is wire_text:
            self._check_password(text.strip())
            return None
        if not self._flood_allows():
            return None
        try:
            request: ev.Request = self._wire.parse(text, registered=self.nick is not None)
            return request
        except ProtocolError as error:
            self._reply_error(error)
            return None

    def _dispatch(self, request: ev.Request) -> None:
        try:
            self._dispatch_request(request)
        except ChatError as error:
            raise _protocol_error(error) from None

    def _dispatch_request(self, request: ev.Request) -> None:
        hub = self._hub
        match request:
            case ev.Hello(nick=nick, password=password):
                self._register(nick, password)
            case ev.Say(text=text, room=room):
                if text.strip():
                    hub.say(self, text, room=self._room_or_current(room))
            case ev.Act(text=text, room=room):
                hub.act(self, text, self._room_or_current(room))
            case ev.Whisper(to=to, text=text):
                hub.whisper(self, to, text)
            case ev.ChangeNick(nick=new):
                self._rename(new)
            case ev.Who():
                self._reply(ev.UserList(hub.name, hub.nicks(), time.time()))
            case ev.Help():
                self._reply(ev.HelpText(time.time()))
            case ev.Ping(token=token):
                self._reply(ev.Pong(token, time.time()))
            case ev.Quit(reason=message):
                self._quit_message = message
                self._set_reason(ev.LeaveReason.QUIT)
                # Leave now, so that the goodbye is the last line this client receives.
                hub.leave(self, ev.LeaveReason.QUIT, message)
                self._reply(ev.Goodbye(message, time.time()))
            case ev.JoinRoom(room=room, key=key):
                self._switch_to(room, key)
            case ev.PartRoom(room=room, message=message):
                name = self._room_or_current(room)
                hub.part(self, name, message)
                if self.current_room is not None and name.lower() == self.current_room.lower():
                    rooms = hub.rooms_of(self)
                    self.current_room = rooms[-1] if rooms else None
                    if self.current_room is not None:
                        hub.enter(self, self.current_room)  # shows where the user is now
            case ev.ListRooms():
                self._reply(hub.list_rooms(self))
            case ev.SetTopic(topic=None, room=room):
                self._reply(hub.topic(self._room_or_current(room)))
            case ev.SetTopic(topic=str() as topic, room=room):
                hub.set_topic(self, self._room_or_current(room), topic)
            case ev.KickUser(nick=nick, reason=reason, room=room):
                hub.kick(self, self._room_or_current(room), nick, reason)
            case ev.SetRoomMode(key=key, secret=secret, room=room):
                changes: list[tuple[str, str]] = []
                if key is not None:
                    changes.append(("+k", key) if key else ("-k", ""))
                if secret is not None:
                    changes.append(("+s" if secret else "-s", ""))
                hub.set_modes(self, self._room_or_current(room), changes)
            case ev.Nothing():
                pass

    def _flood_allows(self) -> bool:
        """Asks the flood gate about one more line; warns or kicks as it says."""
        verdict = self._flood.check(time.monotonic())
        if verdict is Verdict.WARN:
            rate = self._config.flood_rate
            self._reply_error(ProtocolError("flood", f"slow down: at most {rate:g} lines/s"))
        elif verdict is Verdict.KICK:
            self._reply_error(ProtocolError("flood", "kicked for flooding"))
            self._set_reason(ev.LeaveReason.FLOODING)
        return verdict is Verdict.ACCEPT

    def _room_or_current(self, room: str | None) -> str:
        if room is not None:
            return room
        if self.current_room is None:
            raise ProtocolError("not_in_room", "you are in no room: /join #room first")
        return self.current_room

    def _switch_to(self, room: str, key: str) -> None:
        """Joins `room` if needed and makes it the current room."""
        previous = self.current_room
        self.current_room = room  # before joining: the room's first lines come unprefixed
        try:
            self._hub.enter(self, room, key)
        except ChatError:
            self.current_room = previous
            raise

    def _check_password(self, attempt: str) -> None:
        """Text mode: the first line is the server password."""
        if attempt != self._config.password:
            self._reply_error(ProtocolError("bad_password", "wrong password"))
            self._set_reason(ev.LeaveReason.BAD_PASSWORD)
            return
        self._password_ok = True
        self._reply(ev.Greeting(online=len(self._hub), password=False))

    def _register(self, nick: str, password: str | None = None) -> None:
        if not self._password_ok:
            if password != self._config.password:
                self._set_reason(ev.LeaveReason.BAD_PASSWORD)
                raise ProtocolError("bad_password", "wrong or missing password")
            self._password_ok = True
        problem = nick_error(nick)
        if problem is not None:
            raise ProtocolError("nick_invalid", problem)
        try:
            self.current_room = self._hub.name
            self._hub.join(self, nick, f"{nick}@{self._wire.NAME}")
        except NickTaken:
            self.current_room = None
            raise ProtocolError("nick_taken", f"nickname {nick} is taken") from None
        self.nick = nick
        log.info("%s joined as %s", self._label(), nick)

    def _rename(self, new: str) -> None:
        problem = nick_error(new)
        if problem is not None:
            raise ProtocolError("nick_invalid", problem)
        try:
            self._hub.rename(self, new)
        except NickTaken:
            raise ProtocolError("nick_taken", f"nickname {new} is taken") from None
        log.info("%s renamed to %s", self._label(), new)
        self.nick = new

    # -- hooks for other front-ends (chat/irc.py) -----------------------------------------------

    def _make_decoder(self) -> LineDecoder:
        return LineDecoder()

    def _greet(self) -> None:
        self._reply(ev.Greeting(online=len(self._hub), password=not self._password_ok))

    def _receive_timeout(self) -> float | None:
        """How long the client may stay silent now (None: forever)."""
        config = self._config
        return config.register_timeout_s if self.nick is None else config.idle_timeout_s

    def _on_timeout(self) -> bool:
        """The socket was silent for its timeout: True to keep reading, False to end."""
        return False

    def _reply_error(self, error: ProtocolError) -> None:
        prompt_again = self.nick is None and error.code in ("nick_invalid", "nick_taken")
        self._reply(ev.Error(error.code, error.message, time.time(), prompt_again))

    def _reply(self, event: ev.Event) -> None:
        """An event for this client alone, from its own reader thread (no lock is held)."""
        self.deliver(event)
        self.flush()

    # -- helpers -------------------------------------------------------------------------------

    def _set_reason(self, reason: str) -> bool:
        """Records why the session ends; True if this call was the first to say so."""
        with self._reason_lock:
            if self._reason is not None:
                return False
            self._reason = reason
            return True

    def _cut(self, both: bool = True) -> None:
        """Shuts the socket down both ways, which wakes a thread blocked in recv() or sendall();
        with both=False only our sending side (the client gets a FIN after our last byte)."""
        with self._sock_lock:
            if self._sock_closed:
                return
            with contextlib.suppress(OSError):  # already disconnected
                self._sock.shutdown(socket.SHUT_RDWR if both else socket.SHUT_WR)

    def _crashed(self, error: Exception) -> None:
        log.error("%s: unexpected %r", self._label(), error, exc_info=error)
        self.crashes.append(repr(error))
        self._set_reason(ev.LeaveReason.SERVER_ERROR)

    def _label(self) -> str:
        return f"{self.address[0]}:{self.address[1]} {self.nick or '-'}"


def _readable(sock: socket.socket, timeout: float | None) -> bool:
    """Waits up to `timeout` seconds (None: for ever) for `sock` to have input (or EOF, or an
    error)."""
    if hasattr(select, "poll"):  # no limit on descriptor numbers, unlike select()
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(None if timeout is None else timeout * 1000))
    return bool(select.select([sock], [], [], timeout)[0])


def _protocol_error(error: ChatError) -> ProtocolError:
    """The text/JSON error for a refusal of the hub (codes in docs/protocol.md)."""
    name = error.name
    match error:
        case NickTaken():
            return ProtocolError("nick_taken", f"nickname {name} is taken")
        case NoSuchNick():
            return ProtocolError("no_such_nick", f"no such nick: {name}")
        case NoSuchRoom():
            return ProtocolError("no_such_room", f"no such room: {name}")
        case BadRoomName():
            return ProtocolError("bad_room_name", f"invalid room name {name!r}: use #name")
        case NotInRoom():
            return ProtocolError("not_in_room", f"you are not in {name}")
        case UserNotInRoom():
            return ProtocolError("user_not_in_room", f"{name} is not in that room")
        case BadRoomKey():
            return ProtocolError("bad_key", f"{name} needs the right key: /join {name} KEY")
        case NotOperator():
            return ProtocolError("not_operator", f"you are not an operator of {name}")
    return ProtocolError("bad_request", str(error))
