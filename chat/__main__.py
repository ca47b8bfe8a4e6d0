"""`chat-server`: command-line options, logging, and signals that stop the server cleanly."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from chat.room import DEFAULT_ROOM
from chat.server import DEFAULT_MAX_CLIENTS, DEFAULT_MAX_PER_ADDRESS, DEFAULT_PORT, ChatServer
from chat.session import SessionConfig

EXIT_USAGE = 2


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


def _rate(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or more lines per second, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = SessionConfig()
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
        "--port", type=_port, default=DEFAULT_PORT, help="TCP port (0 picks a free one)"
    )
    parser.add_argument(
        "--max-clients",
        type=_positive_int,
        default=DEFAULT_MAX_CLIENTS,
        help="connections served at once (each has two threads); more are told 'server full'",
    )
    parser.add_argument(
        "--max-per-address",
        type=_positive_int,
        default=DEFAULT_MAX_PER_ADDRESS,
        help="connections from one IP address (loopback is exempt)",
    )
    parser.add_argument(
        "--limit-loopback", action="store_true", help="apply --max-per-address to loopback too"
    )
    parser.add_argument(
        "--room", default=DEFAULT_ROOM, help="the default room, where text and JSON users land"
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
        type=_positive_int,
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
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log detail",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    server = ChatServer(
        args.host,
        args.port,
        max_clients=args.max_clients,
        max_per_address=args.max_per_address,
        limit_loopback=args.limit_loopback,
        room_name=args.room,
        sendq_bytes=args.sendq_bytes,
        flood_rate=args.flood_rate,
        flood_burst=args.flood_burst,
        register_timeout_s=args.register_timeout,
        idle_timeout_s=args.idle_timeout,
        irc_port=args.irc_port,
        server_name=args.server_name,
        password=args.password,
    )
    try:
        server.start()
    except OSError as error:
        sys.stderr.write(
            f"chat-server: cannot listen on {args.host}:{args.port}: {error.strerror or error}\n"
        )
        return EXIT_USAGE

    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logging.getLogger("chat").info("%s received", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stop_requested.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
