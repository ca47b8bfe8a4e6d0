"""Piped mode (`printf 'a\\nb\\n' | chat-client bob`): send each input line, exit when delivered.

No prompt-toolkit here: stdin is not a terminal. Lines are sent as they are read (so
`tail -f log | chat-client bot` works), commands included; received lines are written to the
output as plain text. At the end of input a `ping` barrier makes sure the server has handled
every line before `quit`, so nothing is lost by exiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TextIO

from client import commands
from client.commands import Local, Quit, Send, Usage
from client.connection import Connection, Event, Notice, Received
from client.render import info_line, render_event, render_history

# How long to wait at the end of input for the server to confirm every line, reconnects
# included; a script must not hang forever on a dead server.
DELIVERY_TIMEOUT_S = 30.0


def run_piped(
    connection: Connection,
    lines: Iterable[str],
    out: TextIO,
    err: TextIO,
    *,
    delivery_timeout_s: float = DELIVERY_TIMEOUT_S,
) -> int:
    """Send every line of `lines` over a registered connection; return the exit code.

    Returns:
        0 when the server confirmed every line, 1 otherwise.
    """
    out_lock = threading.Lock()

    def write(text: str) -> None:
        with out_lock:
            out.write(text + "\n")
            out.flush()

    def listener(event: Event) -> None:
        if isinstance(event, Received) and event.event.get("type") == "history":
            # A /history answer is printed; a replay on join is not: a script's output holds
            # what happened while it ran (#11).
            if event.event.get("replay") is not True:
                for past in render_history(event.event, event.status.nick, time.time()):
                    write(past.plain)
        elif isinstance(event, Received):
            status = event.status
            line = render_event(
                event.event, status.nick, time.time(), status.room, room_before=event.room_before
            )
            if line is not None:
                write(line.plain)
        elif isinstance(event, Notice):
            write(info_line(event.text, time.time()).plain)

    connection.start(listener)
    reason = ""
    for raw in lines:
        parsed = commands.parse(raw.rstrip("\r\n"))
        if isinstance(parsed, Quit):
            reason = parsed.reason
            break
        if isinstance(parsed, Usage):
            err.write(f"chat-client: {parsed.text}\n")
        elif isinstance(parsed, Local):
            if parsed.name == "help":
                for text in commands.help_lines():
                    write(text)
        elif isinstance(parsed, Send):
            for message in parsed.messages:
                # Refused only while disconnected with a full queue: wait for the queue to drain.
                if not connection.offer(message) and not (
                    connection.barrier(delivery_timeout_s) and connection.offer(message)
                ):
                    err.write("chat-client: not connected; giving up\n")
                    connection.close()
                    return 1
    delivered = connection.barrier(delivery_timeout_s)
    connection.quit(reason)
    if not delivered:
        err.write("chat-client: the server did not confirm delivery of every line\n")
        return 1
    return 0
