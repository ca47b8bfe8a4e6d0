"""Connection: one client's transport: its socket, reader, output queue, deadlines and end.

A connection knows bytes, not meaning: it reads, splits lines and hands them to its dialect
(chat/dialects), and queues what the dialect or the hub gives it for the sender thread
(chat/sender.py). It never parses a line or calls the hub itself, so the same connection
carries text, JSON and IRC clients. TLS is here and nowhere else: a TLS connection keeps the
same socket and threads and runs its bytes through a `TlsSession` (chat/tls.py) on the way in
(the reader) and out (the sender).

Other threads reach a connection through non-blocking doors: `deliver()` then `flush()` (queue
output, have it sent), `drop()` / `shut_down()` (ask it to go), and the sender's
`send_queued()` / `close_socket()`.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from chat import events as ev
from chat.outbox import Outbox, Output
from chat.protocol import EndlessLine, LineDecoder
from chat.sender import Sender
from chat.waker import Waker, new_park
from chat.wire import EncodeCache

if TYPE_CHECKING:
    from chat.dialects import Dialect
    from chat.tls import TlsSession

log = logging.getLogger("chat.connection")

RECV_BYTES = 64 * 1024
# A reader first asks for at most this much: a bytes object that small comes from Python's own
# small-object allocator (objects up to 512 bytes), a larger one from malloc() in the reader's
# thread, and glibc keeps what a thread frees in that thread's own cache. Asking for RECV_BYTES
# at once made every idle reader hold such leftovers: 0.15 KiB per client (#14). A read that
# fills this is followed at once by one of RECV_BYTES.
RECV_FIRST_BYTES = 512 - sys.getsizeof(b"")
# After the last line, a closing connection reads and discards what the client still sends, for
# at most this long / this much, before it closes: close() with unread input answers with a
# reset, and a reset can destroy the last lines still on their way (the goodbye, a kick reason).
LINGER_S = 1.0
LINGER_BYTES = 1024 * 1024
# How long a leaving client's last lines may take to be sent (goodbye, the reason it was
# kicked) before the socket is cut; short, because a client that is not reading never drains.
FLUSH_TIMEOUT_S = 1.0
# A long reply (every room, every user) is sent in pieces; the reader waits this long for its
# client to take the next piece before it gives up on the client as too slow.
REPLY_WAIT_S = 10.0


class Connection:
    """One connected client.

    Thread safety: `deliver()` may be called from any thread (usually under the hub lock) and
    only offers to the output; `flush()` from any thread, outside the hub lock. `drop()`,
    `shut_down()` and `end()` may be called from any thread, any number of times; the first
    reason recorded wins, and a `shutdown()` never races with the sender's final `close()` of the
    socket: `_lock` (a leaf lock, held for one assignment or one non-blocking system call; the
    same lock as its Outbox's, see `Outbox.lock`) guards the reason, the closed flag and the
    "gone" state. The socket is non-blocking: the reader waits for input through the Waker
    (chat/waker.py); the sender thread alone sends (`send_queued()`) and closes it. The
    decoder and the dialect's state belong to the reader thread (the dialect's `encode()`
    excepted, see chat/dialects). `_reading` goes from True to False once, written by the
    reader, read by the sender; it is set to False before the output closes. `_gone` becomes
    True once the reader has left the hub (an Event is made only for someone who waits).
    Over TLS, `_tls` (chat/tls.py, its own leaf lock) is fed by the reader and sealed and
    drained by the sender, so no OpenSSL object is ever used by two threads at once;
    `_tls_claimed` belongs to the sender.

    Memory: one of these per client, so it has `__slots__` and makes nothing it may not need.
    """

    __slots__ = (
        "_decoder",
        "_dialect",
        "_gone",
        "_gone_event",
        "_lock",
        "_on_exit",
        "_output",
        "_park",
        "_peer",
        "_reading",
        "_reason",
        "_register_deadline",
        "_sender",
        "_sock",
        "_sock_closed",
        "_sock_cut",
        "_tls",
        "_tls_claimed",
        "_waker",
        "crashes",
    )

    def __init__(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        *,
        sender: Sender,
        output: Output,
        register_timeout_s: float | None,
        on_exit: Callable[[Connection], None],
        tls: TlsSession | None = None,
        waker: Waker | None = None,
    ) -> None:
        sock.setblocking(False)
        # The client's address as one string, "host:port" ("[::1]:port" for IPv6), as the log
        # lines show it: one object instead of a tuple of two more (0.08 KiB per client, #14).
        self._peer = peer_label(address)
        self._sock = sock
        self._sender = sender
        self._output = output
        self._on_exit = on_exit
        self._register_deadline = (
            None if register_timeout_s is None else time.monotonic() + register_timeout_s
        )
        self._dialect: Dialect | None = None
        self._decoder: LineDecoder | None = None  # made by attach(), for the dialect's lines
        self._reason: str | None = None
        # The outbox's leaf lock, shared (see Outbox.lock; one lock less per client, #14).
        self._lock = output.lock if isinstance(output, Outbox) else threading.Lock()
        self._sock_closed = False
        self._sock_cut = False  # shut down both ways (written under _lock)
        self._reading = True  # the reader is in its loop (may be waiting for input)
        self._gone = False
        self._gone_event: threading.Event | None = None
        # Unexpected exceptions this connection's reader survived (a bug, or the unsafe demo);
        # read by the server's audit after the reader has ended.
        self.crashes: tuple[str, ...] = ()  # (a tuple: most connections never add one)
        # TLS (chat/tls.py): None for plaintext. `_tls_claimed` belongs to the sender thread:
        # it holds the outbox's claim until the ciphertext of the claimed bytes is all sent, so
        # "drained" still means "every byte is on its way to the client".
        self._tls = tls
        self._tls_claimed = False
        # The server's Waker (chat/waker.py): the reader sleeps on `_park` until it has input,
        # and runs only while it holds one of the waker's run slots. None: it polls by itself.
        self._waker = waker
        self._park = new_park() if waker is not None else None

    def attach(self, dialect: Dialect) -> None:
        """Gives the connection its dialect; once, before `serve()`."""
        self._dialect = dialect
        self._decoder = LineDecoder(dialect.max_line_bytes)

    def __repr__(self) -> str:
        return f"<Connection {self.label()}>"

    # -- what the dialect sees (chat/dialects Link) --------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self._peer.rpartition(":")
        return host.removeprefix("[").removesuffix("]"), int(port)

    @property
    def peer(self) -> str:
        """ "host:port" of the client ("[host]:port" for IPv6)."""
        return self._peer

    @property
    def ending(self) -> bool:
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        """Why the connection ends (None while it goes on)."""
        return self._reason

    def send(self, data: bytes) -> None:
        if self._output.offer(data):
            self.flush()
        else:
            self.drop(ev.LeaveReason.SENDQ_EXCEEDED)

    def send_pieces(self, pieces: Iterable[bytes]) -> None:
        for piece in pieces:
            if self.ending:
                return
            if not self._output.offer(piece):
                self.flush()
                with self._outside():  # waits for this client only: let the others run
                    room = self._output.wait_room(len(piece), REPLY_WAIT_S)
                if not (room and self._output.offer(piece)):
                    self.drop(ev.LeaveReason.SENDQ_EXCEEDED)
                    return
        self.flush()

    def end(self, reason: str) -> bool:
        """Records why the connection ends; True if this call was the first to say so."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
            return True

    def label(self) -> str:
        nick = getattr(self._dialect, "nick", None)
        return f"{self._peer} {nick or '-'}"

    # -- doors for other threads (the hub's Member, and a dialect's Peer) ----------------------

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def deliver(self, event: ev.Event, cache: EncodeCache | None = None) -> bool:
        """Queues `event` in this client's format; never blocks; False if the queue is full."""
        assert self._dialect is not None
        return self._output.offer(self._dialect.encode(event, cache))

    def flush(self) -> None:
        """Has what is queued sent soon, by the sender thread; never blocks.

        Called by the thread that queued something, after it released the hub lock.
        """
        self._sender.ready(self)

    def drop(self, reason: str) -> None:
        """Disconnects at once, unsent output is lost (the client is too slow or the server is
        out of patience). Idempotent; the reader announces the leave."""
        if reason == ev.LeaveReason.SENDQ_EXCEEDED:
            reason = self._output.refusal_reason  # the naive classroom output has no queue
        self.end(reason)
        self._output.discard()
        self._cut()

    def say_goodbye(self) -> None:
        """The first half of `shut_down()`: queues the shutdown notice and has it sent, but
        leaves the connection open and its reader asleep, so that a server with thousands of
        clients sends every goodbye before it wakes thousands of readers at once (they would
        compete with the sender for the interpreter: ChatServer.stop)."""
        if self.end(ev.LeaveReason.SHUTDOWN):
            self.deliver(ev.Notice("server shutting down", time.time()))
        self.flush()

    @property
    def unsent(self) -> int:
        """Bytes queued for the client and not sent yet (an output without a queue, the
        classroom's DirectOutput, has none)."""
        return self._output.size

    def shut_down(self) -> None:
        """Says goodbye because the server stops: queue the notice; once it is sent, the
        connection is cut (here if it is out already, else by the sender after the last
        byte), which ends the reader."""
        if self.end(ev.LeaveReason.SHUTDOWN):  # (else said by say_goodbye(), or ending anyway)
            self.deliver(ev.Notice("server shutting down", time.time()))
        self._output.close()
        if self._tls is None and self._reading and self._output.drained:
            # The goodbye is out already (ChatServer.stop sends every goodbye first): cut here,
            # as the sender would after the last byte, without handing it 10,000 connections
            # (#14). Over TLS the sender says close_notify first.
            self._cut()
            return
        self.flush()

    def hung_up(self) -> bool:
        """Whether the client has closed its side (a FIN or a reset is waiting); never blocks.

        Used when a newcomer asks for a nickname this connection holds: a client that closed
        without QUIT and reconnected at once must not find its own ghost in the way.
        """
        if not self._reading:
            return True
        try:
            poller = select.poll()
            events = select.POLLIN | getattr(select, "POLLRDHUP", 0)
            poller.register(self._sock, events)
            ready = poller.poll(0)
        except (OSError, ValueError):  # closed under us: gone indeed
            return True
        if not ready:
            return False
        flags = ready[0][1]
        if flags & (select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)):
            return True
        try:  # readable: input or EOF; peeking tells which without taking anything
            return self._sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def wait_gone(self, timeout: float) -> bool:
        with self._lock:
            if self._gone:
                return True
            if self._gone_event is None:
                self._gone_event = threading.Event()
            event = self._gone_event
        with self._outside():  # (called by another reader: it waits for this one to leave)
            return event.wait(timeout)

    # -- doors for the sender thread -----------------------------------------------------------

    def send_queued(self) -> bool:
        """Sends what is queued, as much as the socket takes now; True if the socket is full
        and the rest waits for it to drain. Only the sender thread calls this."""
        if self._tls is not None:
            return self._send_queued_tls(self._tls)
        data = self._output.claim()
        if data is not None:
            try:
                sent = self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:  # the client is gone: nothing more will ever go out
                self._output.release()
                self.drop(ev.LeaveReason.CONNECTION_LOST)
                return False
            unsent = data[sent:]
            self._output.release(unsent)
            if unsent:
                return True
        # Drained while the reader still waits for input: the server is shutting down and the
        # goodbye is out. Cut both ways, which wakes the reader to finish. (Drained is checked
        # first: the reader clears `_reading` before it closes the output itself.)
        if self._output.drained and self._reading:
            self._cut()
        return False

    def _send_queued_tls(self, tls: TlsSession) -> bool:
        """`send_queued()` through TLS: encrypt what is claimed, send the ciphertext (and what
        the reader's TLS work left to send: handshake messages, a KeyUpdate answer)."""
        while True:
            if not self._tls_claimed and tls.established:
                data = self._output.claim()
                if data is not None:
                    tls.seal(data)
                    self._tls_claimed = True
            wire = tls.outgoing()
            if wire:
                try:
                    sent = self._sock.send(wire)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    tls.discard()
                    self._release_tls_claim()
                    self.drop(ev.LeaveReason.CONNECTION_LOST)
                    return False
                if tls.sent(sent):
                    return True
            if not self._tls_claimed:
                break
            self._release_tls_claim()  # and look again: more may have come meanwhile
        if self._output.drained and self._reading and tls.established:
            # As in send_queued(): the goodbye is out; TLS says so before the cut.
            tls.close_notify()
            with contextlib.suppress(OSError):
                self._sock.send(tls.outgoing())
            tls.discard()  # sent, or never will be: the socket is cut now
            self._cut()
        return False

    def _release_tls_claim(self) -> None:
        if self._tls_claimed:
            self._tls_claimed = False
            self._output.release()

    def close_socket(self) -> None:
        """The sender thread's last act for this connection, after the reader retired it."""
        with self._lock:
            self._sock_closed = True
            self._sock.close()

    # -- the reader ----------------------------------------------------------------------------

    def serve(self) -> None:
        """The reader: reads and hands lines to the dialect until the connection ends, then
        leaves the hub and closes. Runs in whatever thread the server's runner gives it."""
        dialect, decoder = self._dialect, self._decoder
        assert dialect is not None, "attach() a dialect first"
        assert decoder is not None
        # (no context manager: a generator object per sleeping reader is memory, issue #14)
        if self._waker is not None:
            self._waker.take_slot(self._sock.fileno())
        try:
            self._serve(dialect, decoder)
        finally:
            if self._waker is not None:
                self._waker.give_slot()

    def _serve(self, dialect: Dialect, decoder: LineDecoder) -> None:
        try:
            if not self.ending:
                dialect.greet()
            while not self.ending:
                data = self._receive(dialect)
                if data is None:
                    continue
                if not data:
                    self.end(ev.LeaveReason.CONNECTION_LOST)
                    break
                dialect.handle(decoder.feed(data))
                del data  # (not kept alive while the reader sleeps: memory per client, #14)
        except TimeoutError as error:
            if self.end(ev.LeaveReason.TIMED_OUT):
                dialect.farewell(ev.LeaveReason.TIMED_OUT, str(error))
        except EndlessLine as error:
            if self.end(ev.LeaveReason.LINE_TOO_LONG):
                dialect.farewell(ev.LeaveReason.LINE_TOO_LONG, error.message)
        except OSError:
            self.end(ev.LeaveReason.CONNECTION_LOST)
        except Exception as error:  # a bug must cost one connection, never the reader thread
            self._crashed(error)
        finally:
            self._finish(dialect)

    def _receive(self, dialect: Dialect) -> bytes | None:
        """The next bytes from the client; None to look again (a silence the dialect handled,
        or a wake-up). Raises TimeoutError past the registration deadline or the idle limit.

        Registration is a deadline counted from connect: neither bytes trickling in one at a
        time nor complete but useless lines move it (a "slowloris" cannot hold a slot).
        """
        if self._register_deadline is not None and dialect.registered:
            self._register_deadline = None  # done with (a float less per idle client, #14)
        registering = not dialect.registered and self._register_deadline is not None
        deadline = self._register_deadline
        if self._tls is not None and not self._tls.established:  # TLS first, in that time
            registering, deadline = True, self._tls.deadline
        if registering:
            assert deadline is not None
            wait: float | None = deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise TimeoutError("registration timed out")
        else:
            wait = dialect.silence_limit()
        data = self._try_recv()
        if data is not None:
            return data if self._tls is None or not data else self._open_tls(self._tls, data)
        if self._wait_readable(wait) or registering:
            return None  # input (or EOF) to read; or the deadline, checked at the top
        if dialect.on_silence():
            return None
        raise TimeoutError("timed out")

    def _try_recv(self) -> bytes | None:
        """What the socket has now (b"" at EOF), or None if nothing yet. A method of its own so
        that the BlockingIOError's traceback, and the frame object it makes, dies here instead
        of staying alive with the caller's frame while the reader sleeps (memory, issue #14)."""
        try:
            data = self._sock.recv(RECV_FIRST_BYTES)
        except BlockingIOError:
            return None
        if len(data) < RECV_FIRST_BYTES:
            return data
        try:
            return data + self._sock.recv(RECV_BYTES)
        except OSError:  # nothing more yet; or an error, which the next read reports again
            return data

    def _open_tls(self, tls: TlsSession, data: bytes) -> bytes | None:
        """Ciphertext in, plaintext out (None: nothing complete yet; b"": close_notify)."""
        plaintext, ended, output = tls.feed(data, self.label)
        if output:  # handshake messages, a KeyUpdate answer: the sender sends them
            self.flush()
        if ended and not plaintext:
            return b""
        return plaintext or None

    def _finish(self, dialect: Dialect) -> None:
        self._reading = False  # read by the sender: the reader no longer waits for input
        reason = self._reason or ev.LeaveReason.CONNECTION_LOST
        try:
            dialect.finish(reason)
        except Exception as error:
            self._crashed(error)
        with self._lock:
            self._gone = True
            event = self._gone_event
        if event is not None:
            event.set()
        self._output.close()
        tls = self._tls
        if tls is not None and not tls.established:  # no TLS, no words: nothing can be said
            self._output.discard()
            self._cut()
        elif self._drained_in_time():
            if tls is not None:  # close_notify after the last line, then the FIN
                tls.close_notify()
                self.flush()
                with self._outside():
                    tls.wait_sent(FLUSH_TIMEOUT_S)
            if not self._sock_cut:  # (else the sender cut it both ways: nothing to wait for)
                self._cut(both=False)  # a FIN after the last line: the client reads every line
                self._drain_input()
        else:  # the client is not reading: stop waiting for it
            self._output.discard()
            self._cut()
        self._sender.retire(self)  # the sender closes the socket, after any send in flight
        # At a shutdown the server logs one line for all (#14: 10,000 lines through the log
        # writer cost a fifth of the 2 s promised); each one is there at DEBUG level.
        (log.debug if reason == ev.LeaveReason.SHUTDOWN else log.info)(
            "%s disconnected (%s)", self.label(), reason
        )
        self._on_exit(self)

    def _drained_in_time(self) -> bool:
        """Waits (without a run slot) at most FLUSH_TIMEOUT_S for the sender to send what is
        still queued; whether all of it went."""
        if self._output.drained:
            return True
        self.flush()
        with self._outside():
            return self._output.wait_drained(FLUSH_TIMEOUT_S)

    def _drain_input(self) -> None:
        """Discards what the client still sends until it hangs up too (bounded: LINGER_*).

        Everything is sent and our side is shut down (a FIN after the last byte), so a
        well-behaved client sees the end and closes at once; this only waits for that.
        """
        deadline = time.monotonic() + LINGER_S
        drained = 0
        with contextlib.suppress(OSError):
            while drained < LINGER_BYTES:
                try:  # first look without waiting: usually the client has hung up already
                    data = self._sock.recv(RECV_BYTES)
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._wait_readable(left):
                        return
                    continue
                if not data:
                    return
                drained += len(data)

    # -- waiting: through the server's Waker, or alone ----------------------------------------

    def _wait_readable(self, timeout: float | None) -> bool:
        """The reader sleeps until its socket has input (or EOF), at most `timeout` s."""
        if self._waker is None or self._park is None:
            return _readable(self._sock, timeout)
        newcomer = self._dialect is not None and not self._dialect.registered  # (#14, burst)
        return self._waker.wait_readable(self._sock.fileno(), self._park, timeout, newcomer)

    def _outside(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext() if self._waker is None else self._waker.outside()

    def _cut(self, both: bool = True) -> None:
        """Shuts the socket down both ways, which wakes a reader waiting for input; with
        both=False only our sending side (the client gets a FIN after our last byte)."""
        with self._lock:
            if self._sock_closed or self._sock_cut:  # (cut both ways already: no system call)
                return
            self._sock_cut = both
            with contextlib.suppress(OSError):  # already disconnected
                self._sock.shutdown(socket.SHUT_RDWR if both else socket.SHUT_WR)

    def _crashed(self, error: Exception) -> None:
        log.error("%s: unexpected %r", self.label(), error, exc_info=error)
        self.crashes += (repr(error),)
        self.end(ev.LeaveReason.SERVER_ERROR)


def peer_label(address: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """ "host:port", with an IPv6 host in brackets (RFC 3986) so the port stays readable."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _readable(sock: socket.socket, timeout: float | None) -> bool:
    """Waits up to `timeout` seconds (None: for ever) for `sock` to have input (or EOF, or an
    error)."""
    if hasattr(select, "poll"):  # no limit on descriptor numbers, unlike select()
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(None if timeout is None else max(0.0, timeout) * 1000))
    return bool(select.select([sock], [], [], timeout)[0])
