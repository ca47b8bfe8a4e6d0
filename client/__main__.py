"""`chat-client NICK [--host HOST] [--port PORT]`: arguments, connect, then the UI or a pipe."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from client.connection import GREETING_TIMEOUT_S, ConnectError, Connection
from client.render import sanitize
from client.wire import NICK_RULE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8888
DEFAULT_TLS_PORT = 8889  # docs/tls.md: the port a classroom gives --tls-port


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 3600:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text}")
    return seconds


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return port


def _readable_file(path: str) -> str:
    try:
        with open(path, "rb"):
            return path
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {error.strerror or error}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-client",
        description="Join the chat. With stdin not a terminal, send each input line and exit.",
    )
    parser.add_argument("nick", help=f"your nickname ({NICK_RULE})")
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"server, or server:port ([::1]:port) (default {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=None,
        help=f"port (default {DEFAULT_PORT}, with --tls {DEFAULT_TLS_PORT})",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="connect with TLS: the system's trusted authorities, else trust on first use"
        " (you are shown the certificate's fingerprint and asked; docs/tls.md)",
    )
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        type=_readable_file,
        help="with --tls: trust only certificates signed by this CA (PEM); implies --tls",
    )
    parser.add_argument(
        "--password",
        default=os.environ.get("CHAT_PASSWORD"),
        help="the server's password, if it has one (default $CHAT_PASSWORD)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=GREETING_TIMEOUT_S,
        help="how long the server may take to greet us once it accepted the connection"
        f" (default {GREETING_TIMEOUT_S:g} s)",
    )
    parser.add_argument(
        "--history-file",
        type=Path,
        help="input history (default $CHAT_CLIENT_HISTORY, else "
        "$XDG_DATA_HOME/chat-client/history, else ~/.local/share/chat-client/history)",
    )
    return parser


class _Progress:
    """The line on the terminal while connecting: replaced when the next one comes, and erased
    when it only said "waiting" and the wait is over."""

    def __init__(self) -> None:
        self._shown = False

    def show(self, text: str) -> None:
        self.erase()
        sys.stderr.write(f"chat-client: {text}")
        sys.stderr.flush()
        self._shown = True

    def erase(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False

    def keep(self) -> None:
        """End the line instead (the next line explains what happened after it)."""
        if self._shown:
            sys.stderr.write("\n")
            self._shown = False


_progress = _Progress()


def _ask_nick(reason: str) -> str | None:
    """Ask for another nickname on the terminal; None when the user gives up (Ctrl-D/Ctrl-C)."""
    from prompt_toolkit import prompt

    _progress.erase()
    sys.stderr.write(f"chat-client: {sanitize(reason)}\n")
    try:
        return prompt("Choose another nickname: ").strip() or None
    except (EOFError, KeyboardInterrupt):
        return None


def _split_host(text: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address -> (host, port or None)."""
    if text.startswith("[") and "]" in text:
        host, _, rest = text[1:].partition("]")
        return host, _port(rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(port)
    return text, None


def _ask_trust(server: str, fingerprint: str) -> bool:
    """Trust on first use, on the terminal: show the fingerprint, ask."""
    from prompt_toolkit import prompt

    _progress.erase()
    sys.stderr.write(
        f"chat-client: the certificate of {server} is not signed by an authority this system"
        f" trusts.\n  SHA-256 fingerprint: {fingerprint}\n  Compare it with the one the"
        " server's owner gives you (chat-server logs it when it starts).\n"
    )
    try:
        answer = prompt("Trust this certificate from now on? [y/N] ")
    except (EOFError, KeyboardInterrupt):
        return False
    return answer.strip().lower() in ("y", "yes")


def main(argv: list[str] | None = None) -> int:
    """The `chat-client` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    try:
        host, port = _split_host(args.host)
    except argparse.ArgumentTypeError as exc:
        parser.error(f"argument --host: {exc}")
    if port is not None and args.port is not None and port != args.port:
        parser.error(f"two ports: --host {args.host} and --port {args.port}")
    tls = None
    if args.tls or args.tls_ca:
        from client.tls import TlsSettings

        tls = TlsSettings(ca_file=args.tls_ca, ask=_ask_trust if interactive else None)
    port = port or args.port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
    connection = Connection(
        host, port, args.nick, password=args.password, greeting_timeout_s=args.timeout, tls=tls
    )
    try:
        try:
            if interactive:
                # The progress line is rewritten in place: only on a terminal.
                progress = _progress.show if sys.stderr.isatty() else None
                connection.connect(_ask_nick, progress)
            else:
                connection.connect()
        except ConnectError as exc:
            _progress.keep()
            sys.stderr.write(f"chat-client: {sanitize(str(exc))}\n")
            return 1
        finally:
            _progress.erase()
        if not interactive:
            from client.piped import run_piped

            return run_piped(connection, sys.stdin, sys.stdout, sys.stderr)

        from prompt_toolkit.patch_stdout import patch_stdout

        from client.ui import ChatUI, default_history_path

        ui = ChatUI(connection, history_path=args.history_file or default_history_path())
        with patch_stdout(raw=True):  # a stray print from anywhere cannot corrupt the screen
            return ui.run()
    except KeyboardInterrupt:  # Ctrl-C outside the prompt (connecting, piped mode)
        connection.quit()
        return 0


if __name__ == "__main__":
    sys.exit(main())
