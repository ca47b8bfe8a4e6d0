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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat-client",
        description="Join the chat. With stdin not a terminal, send each input line and exit.",
    )
    parser.add_argument("nick", help=f"your nickname ({NICK_RULE})")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"server (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})"
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


def main(argv: list[str] | None = None) -> int:
    """The `chat-client` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    connection = Connection(
        args.host, args.port, args.nick, password=args.password, greeting_timeout_s=args.timeout
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
