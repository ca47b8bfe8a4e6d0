"""ChatServer: the listening sockets, the accept loop, admission, and the server's lifecycle.

Usable in-process (tests, embedding) as well as from `chat-server`:

    with ChatServer(ServerConfig(port=0)) as server:
        host, port = server.address

A server composes its parts: one `Hub` (the shared chat state), one `Sender` thread, a
`Connection` per client with a dialect chosen by the port it came in on (text/JSON or IRC), and
a `Runner` that gives each connection's reader a thread. The classroom modes
(chat/classroom.py) pass different parts to the same constructor.
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
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from chat import events as ev
from chat.audit import Audit
from chat.config import ServerConfig
from chat.connection import Connection, peer_label
from chat.dialects import DialectClass
from chat.dialects.irc import IrcDialect
from chat.dialects.textjson import TextJsonDialect
from chat.hub import Hub
from chat.outbox import Outbox, Output
from chat.runner import Runner, ThreadPerConnection
from chat.sender import Sender
from chat.store import HistoryStore
from chat.waker import Waker

if TYPE_CHECKING:
    from chat.tls import ServerTls

log = logging.getLogger("chat.server")

# SIGTERM to exit must fit in 2 s: flush goodbyes for at most this long, then cut.
# At shutdown the goodbyes have GOODBYE_S to be sent (10,000 take ~0.2 s), and every connection
# must have finished SHUTDOWN_FLUSH_S after the start, else it is cut off: one deadline for all,
# not one per client. The README promises an exit within 2 s of Ctrl-C.
GOODBYE_S = 0.5
SHUTDOWN_FLUSH_S = 1.0
# History (#11): the writer flushes what is queued until this long after stop() began, so the
# whole stop stays inside the 2 s promised (it usually needs a few milliseconds).
HISTORY_FLUSH_UNTIL_S = 1.8
SERVER_FULL = "server full, try again later"
TOO_MANY = "too many connections from your address"
# Connections the kernel completes before the accept thread takes them. A burst of clients
# (a netsplit rejoin, a restart) larger than this finds its handshakes' last ACK dropped and
# waits for the kernel's SYN-ACK retries (seconds); 128 stalled 216 of 2,000 clients arriving
# 500 at a time for over 40 s. The kernel caps it at net.core.somaxconn (4096 on current Linux).
LISTEN_BACKLOG = 1024

OutputFactory = Callable[[socket.socket, ServerConfig], Output]


def queued_output(sock: socket.socket, config: ServerConfig) -> Output:
    """The real design's output: a bounded queue that the sender thread drains."""
    return Outbox(config.sendq_bytes)


class ListenError(OSError):
    """A listening socket could not be opened; says which option's port it was."""

    def __init__(self, option: str, host: str, port: int, error: OSError) -> None:
        super().__init__(error.errno, error.strerror)
        self.option = option
        where = peer_label((host, port))
        self.message = f"cannot listen on {where} ({option}): {error.strerror or error}"


class ChatServer:
    """A chat server on one TCP port for text and JSON users, and optionally one for IRC.

    Thread safety: `_lock` guards `_connections` (every live connection, registered or not),
    the per-address counts, `_finished` and `_told_to_go`. It is never held together with the
    hub lock or while doing socket I/O, so there is no lock order to get wrong between them.
    One accept thread
    admits connections; the runner gives each connection's reader a thread; one sender thread
    sends to every client (chat/sender.py). `stop()` may be called from any thread, any number
    of times, also at once from two: `_stop_lock` makes the second wait for the first.
    `audit` has its own leaf lock; any thread may record into it. With TLS ports, `tls`
    (chat/tls.py ServerTls) holds the certificate: `reload_tls()` (the main thread, on SIGHUP)
    swaps its context by one assignment, the accept thread reads it for each new connection.
    """

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        hub: Hub | None = None,
        runner: Runner | None = None,
        output: OutputFactory = queued_output,
        audit: Audit | None = None,
        store: HistoryStore | None = None,
        waker: Waker | None = None,
    ) -> None:
        # hub, runner, output and audit are the parts the classroom (chat/classroom.py) and
        # tests swap; a server for real users takes the defaults.
        self.config = config = config or ServerConfig()
        # -- history (#11): a store from config.history_db unless one is given --
        # (With --cluster it is kept in the cluster's Redis instead: below.)
        if (
            store is None
            and hub is None
            and config.history_db is not None
            and not config.cluster_url
        ):
            from chat.store.sqlite import SqliteStore  # not imported when history is off

            store = SqliteStore(
                config.history_db,
                retention_days=config.history_days,
                max_per_target=config.history_max,
            )
        if store is None and hub is None and config.history_db is not None and config.cluster_url:
            # history in a cluster (#12): every node reads and writes the cluster's Redis
            from chat.store.redis import RedisStore

            store = RedisStore(
                config.cluster_url,
                retention_days=config.history_days,
                max_per_target=config.history_max,
            )
        self.store = store if hub is None else hub.store
        # (`is None`, not `or`: an empty Hub has len() 0 and is falsy.)
        if hub is None and config.cluster_url:  # cluster (#12): imported only when asked for
            from chat.cluster import ClusterHub

            hub = ClusterHub(
                config.cluster_url,
                config.room,
                heartbeat_s=config.cluster_heartbeat_s,
                racy_claims=config.cluster_racy_claims,
                rooms_per_user=config.rooms_per_user,
                max_rooms=config.max_rooms,
                quiet_room_size=config.quiet_room_size,
                store=store,  # history (#11) in the cluster's Redis, or None
                replay=config.history_replay,
                replay_bytes=max(1024, config.sendq_bytes // 4),
                store_private=config.history_private,
            )
        if hub is None:
            hub = Hub(
                config.room,
                rooms_per_user=config.rooms_per_user,
                max_rooms=config.max_rooms,
                quiet_room_size=config.quiet_room_size,
                store=store,
                replay=config.history_replay,
                replay_bytes=max(1024, config.sendq_bytes // 4),
                store_private=config.history_private,
            )
        self.hub = hub
        self.audit = Audit() if audit is None else audit
        self._runner = ThreadPerConnection() if runner is None else runner
        self._output = output
        self._lock = threading.Lock()
        self._connections: set[Connection] = set()
        self._per_address: Counter[str] = Counter()
        self._finished: list[Connection] = []
        self._on_exit = self._on_connection_exit  # one bound method for every connection (#14)
        self._told_to_go = 0  # connections that ended because the server stops
        self._all_gone = threading.Condition(self._lock)
        self._listeners: list[tuple[socket.socket, DialectClass]] = []
        self._accept_thread: threading.Thread | None = None
        self._sender = Sender()
        # readers sleep here until they have input (chat/waker.py; the classroom's may differ)
        self._waker = Waker(sleepers=config.max_clients) if waker is None else waker
        self._wake_r = self._wake_w = -1  # a pipe that wakes the accept loop for stop()
        self._stopping = threading.Event()
        self._stop_lock = threading.Lock()
        self._stopped = False
        # TLS (chat/tls.py): the certificate, which listeners speak TLS, and each option's
        # listener (for the address properties).
        self.tls: ServerTls | None = None
        self._tls_listeners: set[socket.socket] = set()
        self._bound: dict[str, socket.socket] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ChatServer:
        """Binds and starts accepting; raises ListenError if an address is in use."""
        if self._listeners:
            raise RuntimeError("a ChatServer starts once")
        config = self.config
        wanted: list[tuple[str, int, DialectClass]] = []
        if not config.tls_only:
            wanted.append(("--port", config.port, TextJsonDialect))
            if config.irc_port is not None:
                wanted.append(("--irc-port", config.irc_port, IrcDialect))
        wanted += self._load_tls()
        self.hub.open()  # a cluster's hub links to Redis first (LinkError); a plain one: no-op
        for option, port, dialect in wanted:
            try:
                listener = _listen(config.host, port, reuse_port=config.reuse_port)
            except OSError as error:
                for listener, _ in self._listeners:
                    listener.close()
                self._listeners.clear()
                self.hub.close()
                raise ListenError(option, config.host, port, error) from error
            self._listeners.append((listener, dialect))
            self._bound[option] = listener
            if option in ("--tls-port", "--irc-tls-port"):
                self._tls_listeners.add(listener)
        self._start_history()
        self._wake_r, self._wake_w = os.pipe()
        self._sender.start()
        self.hub.attach_sender(self._sender.wait_idle)  # a cluster's follower waits on it (#12)
        self._waker.start()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="accept")
        self._accept_thread.start()
        for option, what in (
            ("--port", "listening on"),
            ("--irc-port", "IRC listening on"),
            ("--tls-port", "TLS listening on"),
            ("--irc-tls-port", "IRC over TLS listening on"),
        ):
            if option in self._bound:
                log.info("%s %s", what, peer_label(self._address_of(option)))
        if self.store is not None:  # history (#11): where it is kept, said at every start
            log.info(
                "history: %s (replay %d, private messages %s)",
                self.store.description,
                config.history_replay,
                "stored" if config.history_private else "not stored",
            )
        return self

    def _start_history(self) -> None:
        """Opens the store and restores the hub from it, before any client is accepted;
        raises StoreError (the listeners closed) if the file cannot be used (#11)."""
        if self.store is None:
            return
        try:
            self.store.start()
        except BaseException:
            for listener, _ in self._listeners:
                listener.close()
            self._listeners.clear()
            self._bound.clear()
            self._tls_listeners.clear()
            raise
        self.hub.restore_history()

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); with port=0 this is where the OS put us."""
        return self._address_of("--port")

    @property
    def irc_address(self) -> tuple[str, int]:
        """The bound (host, port) of the IRC listener; start() with irc_port first."""
        return self._address_of("--irc-port")

    @property
    def tls_address(self) -> tuple[str, int]:
        """The bound (host, port) of the TLS text/JSON listener (tls_port)."""
        return self._address_of("--tls-port")

    @property
    def irc_tls_address(self) -> tuple[str, int]:
        """The bound (host, port) of the IRC-over-TLS listener (irc_tls_port)."""
        return self._address_of("--irc-tls-port")

    def _address_of(self, option: str) -> tuple[str, int]:
        assert option in self._bound, f"start() with {option[2:].replace('-', '_')} first"
        host, port = self._bound[option].getsockname()[:2]
        return host, port

    # -- TLS -----------------------------------------------------------------------------------

    def _load_tls(self) -> list[tuple[str, int, DialectClass]]:
        """Loads the certificate if a TLS port is asked for (raises TlsConfigError); returns
        the TLS listeners wanted. `ssl` is imported only then."""
        config = self.config
        wanted: list[tuple[str, int, DialectClass]] = []
        if config.tls_port is not None:
            wanted.append(("--tls-port", config.tls_port, TextJsonDialect))
        if config.irc_tls_port is not None:
            wanted.append(("--irc-tls-port", config.irc_tls_port, IrcDialect))
        if wanted:
            from chat.tls import ServerTls, TlsConfigError

            if config.tls_cert is None or config.tls_key is None:
                raise TlsConfigError("a TLS port needs --tls-cert and --tls-key")
            self.tls = ServerTls(config.tls_cert, config.tls_key)
            log.info("TLS certificate SHA-256 fingerprint %s", self.tls.fingerprint)
        return wanted

    def reload_tls(self) -> bool:
        """Loads the certificate and key again (SIGHUP): new connections get the new one,
        connected clients keep theirs. A file that cannot be used is logged and the old
        certificate stays. Returns whether the new one is in use."""
        if self.tls is None:
            return False
        from chat.tls import TlsConfigError

        try:
            fingerprint = self.tls.reload()
        except (TlsConfigError, OSError, ValueError) as error:
            message = getattr(error, "message", str(error))
            log.error("TLS certificate not reloaded, the old one stays: %s", message)
            return False
        log.info("TLS certificate reloaded, SHA-256 fingerprint %s", fingerprint)
        return True

    def stop(self) -> None:
        """Tells every client goodbye, flushes for at most SHUTDOWN_FLUSH_S, joins every thread.

        Returns once the server has stopped, whoever asked first; a second call (or a call
        from a second thread meanwhile) waits for that and does nothing more.
        """
        with self._stop_lock:
            if self._accept_thread is None or self._stopped:
                return  # never started, or stopped already
            self._stopped = True
            self._stop_locked()

    def _stop_locked(self) -> None:
        """One deadline for everything, however many clients: goodbyes are sent for at most
        GOODBYE_S, then every connection is closed and has until SHUTDOWN_FLUSH_S (from the
        start) to finish before the ones left are cut off. Nobody is told about the others
        leaving (`Hub.hush`). The goodbyes go out before any reader is woken: 10,000 readers
        waking at once would starve the one sender thread (docs/performance.md, shutdown)."""
        assert self._accept_thread is not None
        start = time.monotonic()
        self._stopping.set()
        os.write(self._wake_w, b"x")
        self.hub.hush()  # nobody is told about the others leaving: they are all leaving
        with self._lock:
            connections = list(self._connections)
        log.info("shutting down, %d client(s) connected", len(connections))
        # No reader runs while every connection is told (the readers that this wakes would
        # compete with this thread and the sender for the interpreter, a few at a time).
        with self._waker.every_slot():
            for connection in connections:
                connection.say_goodbye()
            if connections:  # the sender says when it has been through them all (no polling)
                self._sender.wait_idle(max(0.0, start + GOODBYE_S - time.monotonic()))
            log.info(
                "goodbyes sent to %d of %d client(s) in %.2f s",
                sum(1 for c in connections if not c.unsent),
                len(connections),
                time.monotonic() - start,
            )
            for connection in connections:
                connection.shut_down()
        said = time.monotonic()
        # Goodbyes first, then wait for the accept thread: a runner may be serving a client in
        # it (the classroom's one-at-a-time mode) until that client is told to go.
        self._accept_thread.join()
        deadline = start + SHUTDOWN_FLUSH_S
        with self._lock:
            while self._connections and (left := deadline - time.monotonic()) > 0:
                self._all_gone.wait(left)
            stuck = list(self._connections)
        if stuck:
            log.info("%d client(s) did not finish in time: cut off", len(stuck))
        for connection in stuck:  # not reading their goodbye: cut them off
            connection.drop("server shutting down")
        ended = self._wait_readers_ended()
        # Join the threads newest-ended first: the first join waits for nearly all of them,
        # the others have exited by then. (CPython 3.11's join scans every live non-daemon
        # thread's lock: joined in the order they end, 10,000 threads cost 0.7 s of CPU; a
        # reader's lock is no longer among them, chat/runner.py; docs/performance.md.)
        self._reap(newest_first=True)
        self._runner.close()
        joined = time.monotonic()
        if self._told_to_go:  # one line for all (their readers do not log one each then)
            log.info("%d client(s) disconnected (server shutting down)", self._told_to_go)
        self._waker.stop()  # no reader sleeps any more
        self.hub.close()  # every reader has left the hub: a cluster's link threads end now
        if self.store is not None:  # every reader is gone: nothing more is offered (#11)
            self.store.stop(max(0.1, start + HISTORY_FLUSH_UNTIL_S - time.monotonic()))
        self._sender.stop()  # every connection has retired: the sender closes their sockets
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._audit_registry()
        log.info(
            "stopped in %.2f s (goodbyes %.2f s, readers ended %.2f s, threads joined %.2f s, "
            "the rest %.2f s)",
            time.monotonic() - start,
            said - start,
            ended - said,
            joined - ended,
            time.monotonic() - joined,
        )

    def _audit_registry(self) -> None:
        """Every connection has left: the hub must be empty and consistent. Logs the audit."""
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
            return len(self._connections)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- the accept thread ---------------------------------------------------------------------

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            for listener, dialect in self._listeners:
                selector.register(listener, selectors.EVENT_READ, dialect)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.data is not None:
                        assert isinstance(key.fileobj, socket.socket)
                        self._accept_one(key.fileobj, key.data)
                self._reap()
        for listener, _ in self._listeners:
            listener.close()

    def _accept_one(self, listener: socket.socket, dialect: DialectClass) -> None:
        try:
            sock, address = listener.accept()
        except OSError as error:  # e.g. EMFILE: log and keep serving the others
            log.warning("accept failed: %s", error)
            return
        tls = listener in self._tls_listeners
        refusal = self._admit(sock, address, dialect, tls)
        if refusal is not None:
            log.warning("%s refused (%s)", peer_label(address), refusal)
            # A TLS client cannot read a plaintext line: it only sees the connection close.
            _refuse(sock, b"" if tls else dialect.refusal(refusal))

    def _admit(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        dialect: DialectClass,
        tls: bool = False,
    ) -> str | None:
        """Makes a connection speaking `dialect` for `sock` and starts it, or says why not."""
        config = self.config
        ip = address[0]
        limit_this = config.limit_loopback or not ipaddress.ip_address(ip).is_loopback
        _tune(sock)
        with self._lock:
            if len(self._connections) >= config.max_clients:
                return SERVER_FULL
            if limit_this and self._per_address[ip] >= config.max_per_address:
                return TOO_MANY
            connection = Connection(
                sock,
                address,
                sender=self._sender,
                output=self._output(sock, config),
                register_timeout_s=config.register_timeout_s,
                on_exit=self._on_exit,
                tls=self.tls.session(config.register_timeout_s) if tls and self.tls else None,
                waker=self._waker,
            )
            connection.attach(dialect(connection, self.hub, config))
            self._connections.add(connection)
            self._per_address[ip] += 1
        # DEBUG: the "registered as"/"joined as" line names the address too, and the accept
        # thread is what a burst of arrivals waits on (#14, burst: docs/performance.md).
        log.debug("%s connected", peer_label(address))  # before its reader can log
        if self._stopping.is_set():
            # Accepted in the accept thread's last round, after stop() took its list: it gets
            # the same goodbye as everyone (added to the set first, so none falls between).
            connection.shut_down()
        self._runner.run(connection, connection.serve, f"reader {connection.peer}")
        return None

    def _on_connection_exit(self, connection: Connection) -> None:
        """Called by a connection's reader as its very last act."""
        for crash in connection.crashes:
            self.audit.record("crashed operation", f"{connection!r}: {crash}")
        ip = connection.address[0]
        with self._lock:
            self._connections.discard(connection)
            self._per_address[ip] -= 1
            if self._per_address[ip] <= 0:
                del self._per_address[ip]
            self._finished.append(connection)
            if connection.reason == ev.LeaveReason.SHUTDOWN:
                self._told_to_go += 1
            if not self._connections:  # (not one wake-up of stop() per client)
                self._all_gone.notify_all()

    def _wait_readers_ended(self) -> float:
        """Waits until every reader has ended (each one cut off or told to go by now);
        returns when."""
        with self._lock:
            while self._connections:
                self._all_gone.wait()
        return time.monotonic()

    def _reap(self, newest_first: bool = False) -> None:
        """Joins the threads of connections that have ended, so none is ever left behind."""
        with self._lock:
            finished, self._finished = self._finished, []
        for connection in reversed(finished) if newest_first else finished:
            self._runner.reap(connection)


def _listen(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # cluster (#12) --workers: N processes share the port, the kernel spreads
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
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
        if line:
            sock.send(line)
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.close()
