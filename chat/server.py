"""ChatServer: the listening socket, the accept loop, admission, and the server's lifecycle.

Usable in-process (tests, embedding) as well as from `chat-server`:

    with ChatServer("127.0.0.1", port=0) as server:
        host, port = server.address
"""

from __future__ import annotations

import ipaddress
import logging
import os
import selectors
import socket
import threading
import time
from collections import Counter
from types import TracebackType

from chat.audit import Audit
from chat.irc import IrcSession
from chat.room import DEFAULT_ROOM, Hub
from chat.sender import Sender
from chat.session import Session, SessionConfig

log = logging.getLogger("chat.server")

DEFAULT_PORT = 8888
# A thread per client: 500 clients are 500 threads, which a laptop handles easily; far beyond that
# the thread-per-client design is the wrong tool and admission says "server full" instead.
DEFAULT_MAX_CLIENTS = 500
# Enough for a family behind one NAT; a script opening hundreds of sockets is stopped.
DEFAULT_MAX_PER_ADDRESS = 20
# SIGTERM to exit must fit in 2 s: flush goodbyes for at most this long, then cut.
SHUTDOWN_FLUSH_S = 1.0
SERVER_FULL = b"! server full, try again later\n"
TOO_MANY = b"! too many connections from your address\n"


class ChatServer:
    """A chat server on one TCP port for text and JSON users, and optionally one for IRC.

    Thread safety: `_lock` guards `_sessions` (every live connection, registered or not), the
    per-address counts and `_finished`. It is never held together with the hub lock or while
    doing socket I/O, so there is no lock order to get wrong between them. One accept thread
    admits connections; each session runs its own reader thread; one sender thread sends to
    every client (chat/sender.py); `stop()` may be called from any
    thread, more than once. `audit` has its own leaf lock; any thread may record into it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        max_per_address: int = DEFAULT_MAX_PER_ADDRESS,
        limit_loopback: bool = False,
        room_name: str = DEFAULT_ROOM,
        sendq_bytes: int = SessionConfig.sendq_bytes,
        flood_rate: float = SessionConfig.flood_rate,
        flood_burst: int = SessionConfig.flood_burst,
        register_timeout_s: float | None = SessionConfig.register_timeout_s,
        idle_timeout_s: float | None = SessionConfig.idle_timeout_s,
        irc_port: int | None = None,
        server_name: str = SessionConfig.server_name,
        password: str | None = None,
        irc_ping_s: float = SessionConfig.irc_ping_s,
        irc_timeout_s: float = SessionConfig.irc_timeout_s,
        hub: Hub | None = None,
        session_class: type[Session] = Session,
        audit: Audit | None = None,
    ) -> None:
        # hub, session_class and audit are for tests and the classroom demos (chat/demo.py);
        # session_class serves the text/JSON port, IRC clients always get an IrcSession.
        self.hub = hub if hub is not None else Hub(room_name)
        self.audit = audit if audit is not None else Audit()
        self._session_class = session_class
        self._host = host
        self._port = port
        self._irc_port = irc_port
        self._max_clients = max_clients
        self._max_per_address = max_per_address
        self._limit_loopback = limit_loopback
        self._config = SessionConfig(
            sendq_bytes=sendq_bytes,
            flood_rate=flood_rate,
            flood_burst=flood_burst,
            # 0 means "no limit", as on the command line (a socket timeout of 0 would mean
            # non-blocking, which is not what anyone asking for 0 s wants)
            register_timeout_s=register_timeout_s or None,
            idle_timeout_s=idle_timeout_s or None,
            password=password or None,
            irc_ping_s=irc_ping_s,
            irc_timeout_s=irc_timeout_s,
            server_name=server_name,
        )
        self._lock = threading.Lock()
        self._sessions: set[Session] = set()
        self._per_address: Counter[str] = Counter()
        self._finished: list[Session] = []
        self._all_gone = threading.Condition(self._lock)
        self._listener: socket.socket | None = None
        self._irc_listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._sender = Sender()
        self._wake_r = self._wake_w = -1  # a pipe that wakes the accept loop for stop()
        self._stopping = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ChatServer:
        """Binds and starts accepting; raises OSError if the address is in use."""
        if self._listener is not None:
            raise RuntimeError("a ChatServer starts once")
        listener = _listen(self._host, self._port)
        if self._irc_port is not None:
            try:
                self._irc_listener = _listen(self._host, self._irc_port)
            except OSError:
                listener.close()
                raise
        self._listener = listener
        self._wake_r, self._wake_w = os.pipe()
        self._sender.start()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="accept")
        self._accept_thread.start()
        host, port = self.address
        log.info("listening on %s:%d", host, port)
        if self._irc_listener is not None:
            log.info("IRC listening on %s:%d", *self.irc_address)
        return self

    @property
    def room(self) -> Hub:
        """The hub (the name from when there was one room)."""
        return self.hub

    @property
    def irc_address(self) -> tuple[str, int]:
        """The bound (host, port) of the IRC listener; start() with irc_port first."""
        assert self._irc_listener is not None, "start() with irc_port first"
        host, port = self._irc_listener.getsockname()[:2]
        return host, port

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); with port=0 this is where the OS put us."""
        assert self._listener is not None, "start() first"
        host, port = self._listener.getsockname()[:2]
        return host, port

    def stop(self) -> None:
        """Tells every client goodbye, flushes for at most SHUTDOWN_FLUSH_S, joins every thread."""
        if self._accept_thread is None or self._stopping.is_set():
            return  # never started, or stopped already
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self._accept_thread.join()
        with self._lock:
            sessions = list(self._sessions)
        log.info("shutting down, %d client(s) connected", len(sessions))
        for session in sessions:
            session.shut_down()
        deadline = time.monotonic() + SHUTDOWN_FLUSH_S
        with self._lock:
            while self._sessions and (left := deadline - time.monotonic()) > 0:
                self._all_gone.wait(left)
            stuck = list(self._sessions)
        for session in stuck:  # not reading their goodbye: cut them off
            session.drop("server shutting down")
        for session in sessions:
            session.reader.join()
        self._reap()
        self._sender.stop()  # every session has retired: the sender closes their sockets
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._audit_registry()
        log.info("stopped")

    def _audit_registry(self) -> None:
        """Every session has left: the room must be empty and consistent. Logs the audit."""
        for problem in self.hub.check_invariants():
            self.audit.record("registry", problem)
        for nick in self.hub.nicks():
            self.audit.record("ghost", f"{nick!r} is still in the room after every client left")
        (log.warning if self.audit.total else log.info)("%s", self.audit.summary())

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def client_count(self) -> int:
        """Live connections, registered or not."""
        with self._lock:
            return len(self._sessions)

    # -- the accept thread ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ, self._session_class)
            if self._irc_listener is not None:
                selector.register(self._irc_listener, selectors.EVENT_READ, IrcSession)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.data is not None:
                        assert isinstance(key.fileobj, socket.socket)
                        self._accept_one(key.fileobj, key.data)
                self._reap()
        listener.close()
        if self._irc_listener is not None:
            self._irc_listener.close()

    def _accept_one(self, listener: socket.socket, kind: type[Session]) -> None:
        try:
            sock, address = listener.accept()
        except OSError as error:  # e.g. EMFILE: log and keep serving the others
            log.warning("accept failed: %s", error)
            return
        peer = f"{address[0]}:{address[1]}"
        refusal = self._admit(sock, address, kind)
        if refusal is not None:
            log.warning("%s refused (%s)", peer, refusal.decode().strip("! \r\n"))
            _refuse(sock, refusal)
            return
        log.info("%s connected", peer)

    def _admit(
        self, sock: socket.socket, address: tuple[str, int], kind: type[Session] = Session
    ) -> bytes | None:
        """Registers a session of `kind` for `sock` and starts it, or says why not."""
        ip = address[0]
        limit_this = self._limit_loopback or not ipaddress.ip_address(ip).is_loopback
        _tune(sock)
        with self._lock:
            if len(self._sessions) >= self._max_clients:
                return kind.refusal(SERVER_FULL)
            if limit_this and self._per_address[ip] >= self._max_per_address:
                return kind.refusal(TOO_MANY)
            session = kind(
                sock, address, self.hub, self._sender, self._config, self._on_session_exit
            )
            self._sessions.add(session)
            self._per_address[ip] += 1
        session.start()
        return None

    def _on_session_exit(self, session: Session) -> None:
        """Called by a session's reader thread as its very last act."""
        for crash in session.crashes:
            self.audit.record("crashed operation", f"{session!r}: {crash}")
        with self._lock:
            self._sessions.discard(session)
            self._per_address[session.address[0]] -= 1
            if self._per_address[session.address[0]] <= 0:
                del self._per_address[session.address[0]]
            self._finished.append(session)
            self._all_gone.notify_all()

    def _reap(self) -> None:
        """Joins the threads of sessions that have ended, so none is ever left behind."""
        with self._lock:
            finished, self._finished = self._finished, []
        for session in finished:
            session.reader.join()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    return listener


def _tune(sock: socket.socket) -> None:
    """Low latency and dead-peer detection for a client socket."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    # Linux: probe after 60 s of silence, every 15 s, give up after 4 misses (about 2 minutes).
    for option, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 4)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _refuse(sock: socket.socket, line: bytes) -> None:
    """Sends one error line without ever blocking the accept loop, then closes."""
    try:
        sock.setblocking(False)
        sock.send(line)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()
