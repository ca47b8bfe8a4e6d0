"""`chat-server`: command-line options, logging, and signals that stop the server cleanly."""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gc
import logging
import logging.handlers
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from chat.config import ServerConfig, default_history_path
from chat.hub import LinkError
from chat.protocol import room_error
from chat.server import ChatServer, ListenError
from chat.store import StoreError
from chat.tls import TlsConfigError

EXIT_USAGE = 2
# The main thread checks for a stop at least this often while it waits (see _wait_for).
WAKE_CHECK_S = 1.0


class _Parser(argparse.ArgumentParser):
    """Bad options get one clear line on stderr (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _number(text: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def _count_or_off(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a positive whole number, not {text}")
    return value


def _port(text: str) -> int:
    value = int(_number(text, int))
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, not {text}")
    return value


def _seconds_or_off(text: str) -> float | None:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or more seconds, not {text}")
    return value or None


def _days_or_off(text: str) -> float | None:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or more days, not {text}")
    return value or None


def _rate(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or more lines per second, not {text}")
    return value


def _heartbeat(text: str) -> float:  # cluster (#12)
    value = _number(text, float)
    if not 0.05 <= value <= 60:
        raise argparse.ArgumentTypeError(f"a heartbeat is 0.05 to 60 seconds, not {text}")
    return value


def _room(text: str) -> str:
    problem = room_error(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


# A send queue must hold the longest line a client can be sent, or one long message disconnects
# every member of its room ('send queue exceeded'). That line is JSON: 4096 bytes of two-byte
# UTF-8 text are 2048 characters, each escaped as \uXXXX (ensure_ascii): 12,288 bytes, plus
# its fields.
MIN_SENDQ_BYTES = 16 * 1024


def _sendq_bytes(text: str) -> int:
    value = int(_number(text, int))
    if value < MIN_SENDQ_BYTES:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_SENDQ_BYTES} (the longest line a client can be sent), "
            f"not {text}"
        )
    return value


def _milliseconds(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more milliseconds, not {text}")
    return value


def _raise_file_limit(max_clients: int) -> None:
    """Lifts the soft limit on open files toward the hard one, so --max-clients can be reached.

    Each client is one descriptor; the common soft limit of 1024 would refuse clients (accept()
    fails with EMFILE) long before a --max-clients of a few thousand.
    """
    try:
        import resource  # POSIX only
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_clients + 64  # listening sockets, the wake-up pipe, logs
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if new > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        logging.getLogger("chat").info("raised the open-file limit from %d to %d", soft, new)
    if new < wanted:
        logging.getLogger("chat").warning(
            "open-file limit %d allows fewer than --max-clients %d clients", new, max_clients
        )


def build_parser() -> argparse.ArgumentParser:
    defaults = ServerConfig()
    parser = _Parser(
        prog="chat-server",
        description="A multi-client chat server. Join with `nc HOST PORT`, telnet or chat-client.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 (or ::) to let the LAN in",
    )
    parser.add_argument(
        "--port", type=_port, default=defaults.port, help="TCP port (0 picks a free one)"
    )
    parser.add_argument(
        "--max-clients",
        type=_positive_int,
        default=defaults.max_clients,
        help="connections served at once (each has its own thread); more are told 'server full'",
    )
    parser.add_argument(
        "--max-per-address",
        type=_positive_int,
        default=defaults.max_per_address,
        help="connections from one IP address (loopback is exempt)",
    )
    parser.add_argument(
        "--limit-loopback", action="store_true", help="apply --max-per-address to loopback too"
    )
    parser.add_argument(
        "--room",
        type=_room,
        default=defaults.room,
        help="the default room, where text and JSON users land (a name starting with #)",
    )
    parser.add_argument(
        "--rooms-per-user",
        type=_positive_int,
        default=defaults.rooms_per_user,
        help="rooms one user may be in at once (IRC clients see it as CHANLIMIT)",
    )
    parser.add_argument(
        "--max-rooms",
        type=_positive_int,
        default=defaults.max_rooms,
        help="rooms on the whole server; joining an existing room always works",
    )
    parser.add_argument(
        "--quiet-room-size",
        type=_count_or_off,
        default=defaults.quiet_room_size,
        metavar="N",
        help="in rooms of more than N users, joins, parts and quits are told only to the user"
        " concerned, not to everyone (0: always to everyone)",
    )
    parser.add_argument(
        "--irc-port",
        type=_port,
        default=None,
        help="also listen for IRC clients on this port (e.g. 6667); off by default",
    )
    parser.add_argument(
        "--server-name",
        default=defaults.server_name,
        help="the server's name as IRC clients see it",
    )
    parser.add_argument(
        "--password",
        default=None,
        help="server password: text users are asked for it, JSON sends it in the hello, "
        "IRC uses PASS",
    )
    parser.add_argument(
        "--sendq-bytes",
        type=_sendq_bytes,
        default=defaults.sendq_bytes,
        help="output that may wait for one client before it is disconnected "
        "('send queue exceeded')",
    )
    parser.add_argument(
        "--flood-rate",
        type=_rate,
        default=defaults.flood_rate,
        help="lines per second a client may send on average; 0 turns flood control off",
    )
    parser.add_argument(
        "--flood-burst",
        type=_positive_int,
        default=defaults.flood_burst,
        help="lines a client may send at once",
    )
    parser.add_argument(
        "--register-timeout",
        type=_seconds_or_off,
        default=defaults.register_timeout_s,
        help="seconds a new connection has to choose a nickname (0: no limit)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_seconds_or_off,
        default=None,
        help="disconnect clients silent for this many seconds (0 or None: "
        "never; TCP keepalive still finds dead peers)",
    )
    tls = parser.add_argument_group("TLS (docs/tls.md)")
    tls.add_argument("--tls-cert", metavar="FILE", help="certificate chain (PEM) for the TLS ports")
    tls.add_argument("--tls-key", metavar="FILE", help="its private key (PEM, not encrypted)")
    tls.add_argument(
        "--tls-port",
        type=_port,
        default=None,
        help="also listen for text/JSON clients over TLS on this port (e.g. 8889)",
    )
    tls.add_argument(
        "--irc-tls-port",
        type=_port,
        default=None,
        help="also listen for IRC clients over TLS on this port (6697 is the convention)",
    )
    tls.add_argument(
        "--tls-only",
        action="store_true",
        help="open only the TLS ports (--port and --irc-port stay closed)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log detail",
    )
    # -- cluster (#12, docs/cluster.md) --
    parser.add_argument(
        "--cluster",
        metavar="URL",
        default=os.environ.get("CHAT_CLUSTER_URL") or None,
        help="join the chat of every server on this Redis/Valkey: redis://[:PASSWORD@]HOST:PORT/DB "
        "(rediss:// for TLS); default $CHAT_CLUSTER_URL (keeps a password off the command line)",
    )
    parser.add_argument(
        "--cluster-heartbeat",
        type=_heartbeat,
        default=defaults.cluster_heartbeat_s,
        metavar="S",
        help="with --cluster: refresh this server's liveness key every S seconds; a server "
        "silent for about 5 S is gone and its users leave",
    )
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="with --cluster: start N server processes on this one port (SO_REUSEPORT), one "
        "chat through the cluster, so one command uses every core",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    # -- end of cluster (#12) --
    # -- history (#11, docs/history.md) --
    history = parser.add_argument_group("history (docs/history.md)")
    history.add_argument(
        "--history-db",
        default=default_history_path(),
        metavar="PATH",
        help="SQLite file keeping messages, topics and rooms across restarts (:memory: keeps"
        " them until exit)",
    )
    history.add_argument(
        "--no-history", action="store_true", help="keep no history at all (nothing is written)"
    )
    history.add_argument(
        "--history-replay",
        type=_count_or_off,
        default=defaults.history_replay,
        metavar="N",
        help="messages replayed to a user joining a room (0: none)",
    )
    history.add_argument(
        "--history-days",
        type=_days_or_off,
        default=None,
        metavar="DAYS",
        help="delete messages older than this many days (0: keep them)",
    )
    history.add_argument(
        "--history-max",
        type=_count_or_off,
        default=0,
        metavar="N",
        help="keep at most N messages per room (0: all)",
    )
    history.add_argument(
        "--history-private",
        action="store_true",
        help="store private messages too (by default they are never written anywhere)",
    )
    demos = parser.add_argument_group("classroom demos (docs/classroom.md), never for real users")
    demos.add_argument(
        "--unsafe-registry",
        action="store_true",
        help="run the hub's registry (nicknames, members) without its lock, with a race window",
    )
    demos.add_argument(
        "--race-window-ms",
        type=_milliseconds,
        default=20.0,
        help="pause between check and act with --unsafe-registry",
    )
    demos.add_argument(
        "--lock-while-sending",
        action="store_true",
        help="send to every client while holding the room lock (naive design)",
    )
    demos.add_argument(
        "--send-timeout",
        type=_seconds_or_off,
        default=2.0,
        help="with --lock-while-sending: drop a client whose send blocks this "
        "long (0: wait forever)",
    )
    demos.add_argument(  # cluster (#12)
        "--racy-cluster-claims",
        action="store_true",
        help="with --cluster: claim nicknames with a separate check, then set, across servers",
    )
    demos.add_argument(
        "--one-at-a-time", action="store_true", help="serve one client at a time; the others wait"
    )
    demos.add_argument(
        "--pool",
        type=_positive_int,
        default=None,
        metavar="N",
        help="serve connections from a pool of N threads (client N+1 waits for a free one)",
    )
    return parser


def _check_tls(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """TLS options that cannot work together: one clear line, exit 2."""
    tls_ports = args.tls_port is not None or args.irc_tls_port is not None
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if tls_ports and args.tls_cert is None:
        parser.error("--tls-port and --irc-tls-port need --tls-cert and --tls-key")
    if args.tls_cert is not None and not tls_ports:
        parser.error("--tls-cert needs --tls-port or --irc-tls-port")
    if args.tls_only and not tls_ports:
        parser.error("--tls-only needs --tls-port or --irc-tls-port")
    if tls_ports and args.lock_while_sending:
        parser.error("--lock-while-sending sends on the raw socket: not with TLS")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_tls(parser, args)
    if args.cluster and not args.no_history and args.history_db != default_history_path():
        # history in a cluster (#12): one file per server cannot be every node's history
        parser.error(
            "--history-db is one server's file; with --cluster, history is kept in the"
            " cluster's Redis (--no-history: none)"
        )
    if args.workers > 1:  # cluster (#12): this process only starts and watches the workers
        return _run_workers(args, list(sys.argv[1:] if argv is None else argv))
    listener = _log_through_a_queue(args.log_level)
    try:
        return _serve(args)
    finally:
        listener.stop()  # writes what is still queued
        if argv is None:  # the program itself, about to exit (not a test calling main())
            # The interpreter's exit collects garbage one last time: with 10,000 clients just
            # gone, that walked their objects for 0.35-0.45 s of the 2 s the README promises
            # (docs/performance.md, #14). The memory goes back to the OS at once anyway, so
            # every object is moved out of that collection's way. (Nothing left needs a
            # finalizer: the sockets and the history file are closed, the log written.)
            gc.freeze()


# The log writer, woken by a line, lets the lines that follow gather this long before it writes
# (#14, the burst: docs/performance.md "Burst, fifth look"). Without it, each of 2,000 arrivals'
# "registered as" lines in one second woke the writer, which then asked for the interpreter
# lock the chatters need; with it, the writer wakes at most about 50 times a second and a
# reader's line is an append to a queue nobody waits on. A line reaches stderr this much later.
LOG_GATHER_S = 0.02


class _GatheringListener(logging.handlers.QueueListener):
    """A QueueListener that takes the lines already queued without waiting and, when it had
    to wait for one, lets the next ones gather for `LOG_GATHER_S` (its documented override
    point, `dequeue`)."""

    def __init__(
        self, records: queue.SimpleQueue[logging.LogRecord], handler: logging.Handler
    ) -> None:
        super().__init__(records, handler)
        self._records = records

    def dequeue(self, block: bool) -> logging.LogRecord:
        try:
            return self._records.get_nowait()
        except queue.Empty:
            pass
        record = self._records.get(block)
        if record is not self._sentinel:  # type: ignore[attr-defined]
            time.sleep(LOG_GATHER_S)  # a pace, not a wait for anything: stop() adds its end
        return record


def _log_through_a_queue(level: str) -> logging.handlers.QueueListener:
    """Log lines are written to stderr by one thread; a thread that logs only appends its record
    to a queue. With a plain StreamHandler every thread that logs takes the handler's lock and
    writes while holding it (the write lets other threads run, which then queue up on the
    lock): 10,000 clients disconnecting at once, one "disconnected" line each, waited in that
    convoy for minutes, and the main thread's "shutting down" waited behind them
    (docs/performance.md, shutdown)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = _GatheringListener(records, handler)
    # The queue's side keeps only the message (with any traceback); the writer adds the rest.
    logging.basicConfig(
        level=level, format="%(message)s", handlers=[logging.handlers.QueueHandler(records)]
    )
    listener.start()
    return listener


def _serve(args: argparse.Namespace) -> int:
    config = ServerConfig(
        host=args.host,
        port=args.port,
        irc_port=args.irc_port,
        room=args.room,
        max_clients=args.max_clients,
        max_per_address=args.max_per_address,
        limit_loopback=args.limit_loopback,
        rooms_per_user=args.rooms_per_user,
        max_rooms=args.max_rooms,
        quiet_room_size=args.quiet_room_size,
        sendq_bytes=args.sendq_bytes,
        flood_rate=args.flood_rate,
        flood_burst=args.flood_burst,
        register_timeout_s=args.register_timeout,
        idle_timeout_s=args.idle_timeout,
        password=args.password,
        server_name=args.server_name,
        cluster_url=args.cluster,  # cluster (#12)
        cluster_heartbeat_s=args.cluster_heartbeat,
        cluster_racy_claims=args.racy_cluster_claims,
        reuse_port=args.reuse_port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_port=args.tls_port,
        irc_tls_port=args.irc_tls_port,
        tls_only=args.tls_only,
        history_db=None if args.no_history else args.history_db,
        history_replay=args.history_replay,
        history_days=args.history_days,
        history_max=args.history_max,
        history_private=args.history_private,
    )
    demo_flags = (args.unsafe_registry, args.lock_while_sending, args.one_at_a_time)
    if any(demo_flags) or args.pool is not None:
        server = _classroom_server(config, args)
    else:
        try:
            server = ChatServer(config)
        except ModuleNotFoundError as error:  # cluster (#12): --cluster without the extra
            sys.stderr.write(
                f"chat-server: --cluster needs {error.name}: pip install 'threadroom[cluster]'\n"
            )
            return EXIT_USAGE
    # `kill -USR1 PID` prints every thread's stack: look inside a server that seems stuck.
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    _raise_file_limit(args.max_clients)
    stop_requested = threading.Event()
    reload_requested = threading.Event()  # SIGHUP: the certificate is read again
    woken = threading.Event()  # either of them: the main thread looks

    def request_stop(signum: int, _frame: object) -> None:
        logging.getLogger("chat").info("%s received", signal.Signals(signum).name)
        stop_requested.set()
        woken.set()

    def request_reload(_signum: int, _frame: object) -> None:
        reload_requested.set()
        woken.set()

    # Before start(): a Ctrl-C right after "listening on" must stop the server, not raise
    # KeyboardInterrupt in the main thread while the accept thread keeps the process alive.
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    if hasattr(signal, "SIGHUP") and config.tls_cert is not None:
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, request_reload)
    try:
        server.start()
    except (ListenError, TlsConfigError, StoreError) as error:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        message = error.message if isinstance(error, ListenError) else str(error)
        sys.stderr.write(f"chat-server: {message}\n")
        return EXIT_USAGE
    except LinkError as error:  # cluster (#12): bad URL, wrong password, Redis not there
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.stderr.write(f"chat-server: {error}\n")
        return EXIT_USAGE
    if hasattr(signal, "SIGUSR1"):
        logging.getLogger("chat").info(
            "pid %d: `kill -USR1 %d` prints every thread's stack", os.getpid(), os.getpid()
        )
    while not stop_requested.is_set():
        _wait_for(woken)
        woken.clear()  # before looking: a signal from now on wakes us again
        if reload_requested.is_set() and not stop_requested.is_set():
            reload_requested.clear()
            logging.getLogger("chat").info("SIGHUP received: reloading the TLS certificate")
            server.reload_tls()
    server.stop()
    return 0


def _run_workers(args: argparse.Namespace, argv: list[str]) -> int:
    """`--workers N`: N `chat-server` processes with the same options on one port (each with
    --reuse-port), one chat through the cluster. SIGINT/SIGTERM are passed on; the exit code
    is the worst of theirs. A worker that cannot start (exit 2) stops the others."""
    if not args.cluster:
        sys.stderr.write("chat-server: --workers needs --cluster (or CHAT_CLUSTER_URL)\n")
        return EXIT_USAGE
    if args.port == 0:
        sys.stderr.write("chat-server: --workers needs a --port other than 0 (one port for all)\n")
        return EXIT_USAGE
    own: list[str] = []
    skip = False
    for word in argv:  # the workers get every option but --workers
        if skip:
            skip = False
        elif word == "--workers":
            skip = True
        elif not word.startswith("--workers="):
            own.append(word)
    command = [sys.executable, "-m", "chat", *own, "--reuse-port"]
    workers = [subprocess.Popen(command) for _ in range(args.workers)]
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop_requested.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    while not stop_requested.is_set() and all(w.poll() is None for w in workers):
        stop_requested.wait(0.2)  # polled: a child's exit has no event to wait on here
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    codes = [worker.wait() for worker in workers]
    return max(codes, key=abs)


def _wait_for(woken: threading.Event) -> None:
    """Sleeps in select() on a socket that every signal writes a byte to (set_wakeup_fd), until
    a handler has set `woken`. Not in `woken.wait()`: a SIGTERM that arrived
    right after start-up could leave the main thread asleep in that lock wait with its Python
    handler never run (1 run in 10 or so hung for ever, in main before #11 too; found by
    tests/test_history.py). A byte on the socket always wakes select(), and the handler runs as
    soon as the main thread runs Python code again."""
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    previous = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    try:
        while not woken.is_set():
            select.select([wake_r], [], [], WAKE_CHECK_S)
            with contextlib.suppress(BlockingIOError):
                while wake_r.recv(4096):
                    pass
    finally:
        signal.set_wakeup_fd(previous)
        wake_r.close()
        wake_w.close()


def _classroom_server(config: ServerConfig, args: argparse.Namespace) -> ChatServer:
    """A server with the classroom's demo modes on (imported only then: never on the default
    path)."""
    from chat import classroom

    options = classroom.DemoOptions(
        unsafe_registry=args.unsafe_registry,
        race_window_s=args.race_window_ms / 1000,
        lock_while_sending=args.lock_while_sending,
        send_timeout_s=args.send_timeout,
        one_at_a_time=args.one_at_a_time,
        pool=args.pool,
    )
    for line in classroom.banner(options):
        logging.getLogger("chat").warning("%s", line)
    if options.unsafe_registry:
        classroom.shorten_switch_interval()
    return classroom.build_server(config, options)


if __name__ == "__main__":
    sys.exit(main())
