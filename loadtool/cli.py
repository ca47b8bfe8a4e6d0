"""The `chat-load` command line: its options (`build_parser`), `main` and exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from loadtool.codecs import CODECS
from loadtool.run import BOT_BURST, BOT_RATE, LoadConfig, run_load

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


# -- the command line ------------------------------------------------------------------------------


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


def _count(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _seconds(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value


def _rate(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (flat out) or more, not {text}")
    return value


def _servers(text: str) -> tuple[tuple[str, int], ...]:
    servers = []
    for item in text.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise argparse.ArgumentTypeError(f"not HOST:PORT: {item!r}")
        servers.append((host.strip("[]"), int(port)))
    return tuple(servers)


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
        "--servers",
        type=_servers,
        default=(),
        metavar="HOST:PORT,HOST:PORT",
        help="servers of one cluster (instead of --host/--port): bots are spread over them, "
        "and every bot must see the room in one order",
    )
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
    parser.add_argument("--protocol", choices=sorted(CODECS), default=defaults.protocol)
    parser.add_argument(
        "--nick-clash",
        action="store_true",
        help="bots join in pairs asking for the same nickname; the loser takes "
        "its own name. Two winners of one name is a race in the server",
    )
    parser.add_argument(
        "--tls", action="store_true", help="connect with TLS (to the server's --tls-port)"
    )
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="with --tls: verify the server against this CA (PEM; a self-signed certificate is"
        " its own CA); default: the system's trusted authorities. Implies --tls",
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
        tls=args.tls or args.tls_ca is not None,
        tls_ca=args.tls_ca,
        servers=args.servers,
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
        where = ",".join(f"{h}:{p}" for h, p in args.servers) or f"{args.host}:{args.port}"
        sys.stderr.write(f"chat-load: no bot could join {where} ({reasons})\n")
    out.write((report.to_json() if args.json else report.format_text()) + "\n")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


if __name__ == "__main__":
    sys.exit(main())
