"""The interactive screen: a prompt-toolkit prompt session with a status bar, lines printed above.

Design: a `PromptSession` (input line, history, completion, bottom toolbar) with received lines
printed *above* it through `run_in_terminal`, rather than a full-screen layout. The chat then
lives in the terminal's own scrollback, so scrolling, searching and copying work the way they
do in the shell (and what was said stays on screen after /quit; lines already printed are not
rewrapped after a resize, new ones wrap to the new width); the input line is
redrawn after every batch of printed lines, so typing is never corrupted. A full-screen layout
would add our own scrollback, wrapping and paging to maintain, for little gain with one room.

Threads: the connection's threads call `listener()`, which only puts the event in a queue and
schedules `_drain()` on the UI's event loop with `call_soon_threadsafe`; everything else here
(rendering, printing, the transcript, the recent-speaker list) happens on that one loop thread.
The toolbar and the completer read the connection's immutable `Status` snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.application import Application
from prompt_toolkit.application.current import set_app
from prompt_toolkit.application.run_in_terminal import run_in_terminal
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.formatted_text import FormattedText, StyleAndTextTuples
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent, merge_key_bindings
from prompt_toolkit.output import Output
from prompt_toolkit.renderer import print_formatted_text as print_fragments
from prompt_toolkit.styles import Style

from client import commands
from client.commands import Local, Quit, Send, Usage
from client.completion import ChatCompleter
from client.connection import Connection, Event, Notice, Received, StatusChanged
from client.paths import data_home
from client.render import (
    ERROR,
    Line,
    info_line,
    own_message_line,
    render_event,
    render_history,
    sanitize,
    wrap,
)
from client.state import Status
from client.wire import fold

# What the terminal shows is the real scrollback; the transcript is a bounded copy for tests
# and for nothing else, so its size only bounds memory.
MAX_TRANSCRIPT_LINES = 2000
# irssi offers the people who spoke last first; remember this many of them.
MAX_RECENT_SPEAKERS = 50
TOOLBAR_REFRESH_S = 0.5  # the "reconnecting in Ns" countdown ticks
QUIT_PRINT_TIMEOUT_S = 1.0  # leaving waits this long at most for lines still being printed

# Requests about a room: the client adds its current room when the user did not name one.
_ROOM_REQUESTS = frozenset({"message", "action", "part", "topic", "kick", "mode", "who", "history"})
# What may wait in the queue while disconnected: what the user said. Anything else answers the
# moment and is refused while offline.
_QUEUED_REQUESTS = frozenset({"message", "action", "private"})

STYLE = Style.from_dict(
    {
        "time": "fg:ansibrightblack",
        "dim": "fg:ansibrightblack",
        "history": "fg:ansibrightblack italic",
        "error": "fg:ansired bold",
        "own": "",
        "action": "italic",
        "private": "fg:ansimagenta",
        "mention": "bold reverse",
        "room": "fg:ansicyan",
        "bottom-toolbar": "noreverse bg:ansiblue fg:ansiwhite",
        "bottom-toolbar.state.connected": "fg:ansibrightgreen bold",
        "bottom-toolbar.state.offline": "fg:ansibrightred bold",
        "prompt": "bold",
    }
)


def default_history_path() -> Path:
    """$CHAT_CLIENT_HISTORY, or $XDG_DATA_HOME (default ~/.local/share)/chat-client/history."""
    explicit = os.environ.get("CHAT_CLIENT_HISTORY")
    if explicit:
        return Path(explicit)
    return data_home() / "chat-client" / "history"


def open_history(path: Path | None) -> tuple[History, str | None]:
    """The input history kept in `path` (private: it holds private messages), or in memory.

    Returns:
        The history, and a warning to show when the file could not be used.
    """
    if path is None:
        return InMemoryHistory(), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))
    except OSError as exc:
        return InMemoryHistory(), f"history not saved ({path}: {exc.strerror})"
    return FileHistory(str(path)), None


def toolbar_fragments(status: Status, now: float) -> StyleAndTextTuples:
    """The status bar: server, connection state, own nick, people online, queued lines."""
    if status.state == "connected":
        state, state_style = "connected", "class:bottom-toolbar.state.connected"
    else:
        state_style = "class:bottom-toolbar.state.offline"
        if status.state == "reconnecting" and status.retry_at is not None:
            # One line that updates, instead of a line per attempt on the screen.
            wait_s = math.ceil(status.retry_at - now)
            when = f"next in {wait_s}s" if wait_s > 0 else "now"
            state = f"reconnecting (attempt {status.attempt}, {when})"
            if status.last_error:
                state += f": {sanitize(status.last_error)}"
        else:
            state = status.state
    fragments: StyleAndTextTuples = [
        ("", f" {status.address} │ "),
        (state_style, state),
        # The current room's member count, kept from the room's events (not everyone online).
        ("", f" │ {status.nick} │ {status.room} ({len(status.users)} here)"),
    ]
    if len(status.rooms) > 1:
        fragments.append(("", f" │ {len(status.rooms)} rooms"))
    if status.queued:
        fragments.append(("", f" │ {status.queued} queued"))
    return fragments


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("tab")
    def _complete(event: KeyPressEvent) -> None:
        """irssi: the first match goes in at once, Tab again cycles, Shift-Tab goes back.

        Completion runs here, synchronously (the completer only reads a snapshot): a single
        match is simply inserted (no menu); several open the menu on the first one.
        """
        buffer = event.current_buffer
        if buffer.complete_state:
            buffer.complete_next()
            return
        if buffer.completer is None:
            return
        found = list(
            buffer.completer.get_completions(
                buffer.document, CompleteEvent(completion_requested=True)
            )
        )
        if len(found) == 1:
            buffer.apply_completion(found[0])
        elif found:
            buffer.start_completion(select_first=True)

    @bindings.add("s-tab")
    def _complete_back(event: KeyPressEvent) -> None:
        buffer = event.current_buffer
        if buffer.complete_state:
            buffer.complete_previous()

    return bindings


class ChatUI:
    """The interactive client on top of a registered `Connection`.

    Args:
        connection: connected (`connect()` done) but not started.
        history_path: where the input history is kept; None keeps it in memory.
        input: prompt-toolkit input (tests: `create_pipe_input()`); None is the terminal.
        output: prompt-toolkit output (tests: `DummyOutput()`); None is the terminal.
    """

    def __init__(
        self,
        connection: Connection,
        *,
        history_path: Path | None = None,
        input: Input | None = None,
        output: Output | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection = connection
        self._clock = clock
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recent: deque[str] = deque(maxlen=MAX_RECENT_SPEAKERS)
        self._transcript: deque[Line] = deque(maxlen=MAX_TRANSCRIPT_LINES)
        self._transcript_changed = threading.Condition()
        self.bells = 0
        self._quitting = False
        self._printing: set[asyncio.Future[None]] = set()
        # What the next prompt starts with: a paste the user did not send, to edit (UI loop only).
        self._kept_input = ""
        history, self._history_warning = open_history(history_path)
        self.session: PromptSession[str] = PromptSession(
            message=self._prompt,
            history=history,
            completer=ChatCompleter(
                lambda: self._nicks_for_completion(self.status.users),
                lambda: self.status.nick,
                lambda: self.status.rooms,
                everyone=lambda: self._nicks_for_completion(self.status.known),
            ),
            complete_while_typing=False,
            bottom_toolbar=self._toolbar,
            refresh_interval=TOOLBAR_REFRESH_S,
            key_bindings=merge_key_bindings([_key_bindings(), self._history_keys()]),
            style=STYLE,
            reserve_space_for_menu=3,  # room for the menu when several nicks match
            # The accepted line is erased: what was sent is shown as `<alice> text` (with its
            # time stamp), as in irssi, instead of twice.
            erase_when_done=True,
            input=input,
            output=output,
        )
        self._confirm_session: PromptSession[str] = PromptSession(
            style=STYLE, erase_when_done=True, input=input, output=output
        )
        self._active_app: Application[str] = self.session.app

    def _history_keys(self) -> KeyBindings:
        """PageUp: the page of the current room's history before the oldest message shown."""
        bindings = KeyBindings()

        @bindings.add("pageup")
        def _older(event: KeyPressEvent) -> None:
            room = self.status.room
            if room and self.status.state == "connected":
                self.connection.ask_older(room)

        return bindings

    # --- state read by the toolbar, the prompt and the completer ----------------------------

    @property
    def status(self) -> Status:
        return self.connection.status

    def _prompt(self) -> StyleAndTextTuples:
        return [("class:prompt", f"[{self.status.room or self.status.nick}] ")]

    def _toolbar(self) -> StyleAndTextTuples:
        return toolbar_fragments(self.status, time.monotonic())

    def _nicks_for_completion(self, online: tuple[str, ...]) -> list[str]:
        """`online` with the people who spoke last first (irssi's order)."""
        folded = {fold(nick): nick for nick in online}
        recent = [folded.pop(fold(n)) for n in reversed(self._recent) if fold(n) in folded]
        return recent + [nick for nick in online if fold(nick) in folded]

    # --- transcript (tests read it; it mirrors what was printed) -----------------------------

    @property
    def transcript(self) -> list[Line]:
        with self._transcript_changed:
            return list(self._transcript)

    def wait_for_line(self, predicate: Callable[[Line], bool], timeout: float) -> Line:
        """Block until a printed line satisfies `predicate` (any thread but the UI's).

        Raises:
            TimeoutError: no such line within `timeout` seconds.
        """
        found: list[Line] = []

        def match() -> bool:
            found[:] = [line for line in self._transcript if predicate(line)][:1]
            return bool(found)

        with self._transcript_changed:
            if not self._transcript_changed.wait_for(match, timeout):
                shown = "\n".join(line.plain for line in self._transcript)
                raise TimeoutError(f"no matching line; screen:\n{shown}")
        return found[0]

    # --- events from the connection ---------------------------------------------------------

    def listener(self, event: Event) -> None:
        """Called from the connection's threads: hand the event to the UI loop. Never blocks."""
        self._events.put(event)
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: we are exiting
                loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        lines: list[Line] = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, Received) and event.event.get("type") == "history":
                lines += render_history(event.event, event.status.nick, self._clock())
            elif isinstance(event, Received):
                if event.event.get("type") in ("message", "action"):
                    sender = event.event.get("from")
                    if isinstance(sender, str):
                        self._recent.append(sender)
                line = render_event(
                    event.event,
                    event.status.nick,
                    self._clock(),
                    event.status.room,
                    room_before=event.room_before,
                )
                if line is not None:
                    lines.append(line)
            elif isinstance(event, Notice):
                style = ERROR if event.error else "class:dim"
                lines.append(info_line(event.text, self._clock(), style=style))
            elif isinstance(event, StatusChanged):
                pass  # the toolbar reads the status; a repaint is all it takes
        if lines:
            self.show(lines)
        self._active_app.invalidate()

    def show(self, lines: list[Line]) -> None:
        """Print lines above the input line (UI loop thread only); ring the bell for mentions."""
        with self._transcript_changed:
            self._transcript.extend(lines)
            self._transcript_changed.notify_all()
        app = self._active_app
        output = app.output
        bell = any(line.highlight for line in lines)
        if bell:
            self.bells += 1

        def render() -> None:
            # The width now: after a resize, new lines wrap to the new width; lines already
            # printed are the terminal's scrollback and are not rewrapped (docs/client.md).
            columns = output.get_size().columns
            for line in lines:
                for row in wrap(line, columns):
                    print_fragments(output, FormattedText([*row, ("", "\n")]), STYLE)
            if bell:
                output.bell()
            output.flush()

        if not app.is_running:  # between prompts, or leaving: nothing to draw around
            render()
            return
        with set_app(app):
            printing = asyncio.ensure_future(run_in_terminal(render))
        self._printing.add(printing)
        printing.add_done_callback(self._printing.discard)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.show([info_line(text, self._clock(), style=ERROR if error else "class:dim")])

    # --- input ------------------------------------------------------------------------------

    async def run_async(self) -> int:
        """Run until /quit, Ctrl-D or Ctrl-C; tell the server; return the exit code (0)."""
        self._loop = asyncio.get_running_loop()
        with self._terminate_on_sigterm(self._loop):
            self.connection.start(self.listener)
            if self._history_warning:
                self._say(self._history_warning, error=True)
            reason = ""
            while not self._quitting:
                try:
                    self._active_app = self.session.app
                    text = await self.session.prompt_async(default=self._kept_input)
                except (EOFError, KeyboardInterrupt):
                    break
                self._kept_input = ""
                if self._quitting:
                    break
                outcome = await self.handle_input(text)
                if isinstance(outcome, Quit):
                    reason = outcome.reason
                    break
            dropped = await self._loop.run_in_executor(None, self.connection.quit, reason)
            if self._printing:  # lines still being printed above the last prompt
                await asyncio.wait(set(self._printing), timeout=QUIT_PRINT_TIMEOUT_S)
            self._drain()
            if dropped:
                self._say(f"{dropped} queued line(s) were never sent (not connected)", error=True)
        return 0

    def run(self) -> int:
        """Run on a new event loop in this thread."""
        return asyncio.run(self.run_async())

    def request_quit(self) -> None:
        """Leave as if Ctrl-D was pressed. Thread-safe."""
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._quit_now)

    def _quit_now(self) -> None:
        self._quitting = True
        if self._active_app.is_running:
            self._active_app.exit(exception=EOFError())

    @contextlib.contextmanager
    def _terminate_on_sigterm(self, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
        """SIGTERM leaves like Ctrl-D (tell the server, restore the terminal)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        loop.add_signal_handler(signal.SIGTERM, self._quit_now)
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    async def handle_input(self, text: str) -> Quit | None:
        """Act on one accepted input (a typed line, or a pasted block of lines)."""
        lines = [line for line in text.split("\n") if line.strip()]
        if len(lines) > 1:
            # A paste of many lines: ask first (a wrong clipboard should not reach the room).
            # Each pasted line goes as a message, even one starting with "/": pasted text is
            # content, not commands.
            self._active_app = self._confirm_session.app
            try:
                answer = await self._confirm_session.prompt_async(
                    f"Send {len(lines)} pasted lines to the room? [y/N] "
                )
            except (EOFError, KeyboardInterrupt):
                answer = ""
            finally:
                self._active_app = self.session.app
            if answer.strip().lower() not in ("y", "yes"):
                # Not thrown away: a paste that was almost right is edited, not pasted again.
                self._kept_input = text
                self._say(f"paste of {len(lines)} lines not sent; it is back in the input line")
                return None
            for line in lines:
                self._send(Send(({"type": "message", "text": line},)))
            return None
        parsed = commands.parse(text)
        if parsed is None:
            return None
        if isinstance(parsed, Quit):
            return parsed
        if isinstance(parsed, Usage):
            self._say(parsed.text, error=True)
        elif isinstance(parsed, Local):
            if parsed.name == "help":
                now = self._clock()
                self.show([info_line(line, now, style="") for line in commands.help_lines()])
            elif parsed.name == "clear":
                with self._transcript_changed:
                    self._transcript.clear()
                self._active_app.renderer.clear()
        else:
            self._send(parsed)
        return None

    def _send(self, parsed: Send) -> None:
        connected = self.status.state == "connected"
        for message in parsed.messages:
            kind = message["type"]
            room = self.status.room
            if kind == "join" and self.status.has_room(message["room"]):
                self.connection.switch_room(message["room"])
                self._say(f"Now talking in {self.status.room}")
                continue
            if kind in _ROOM_REQUESTS and "room" not in message and room:
                # Say which room: the client's current room is the one the user sees.
                message = {**message, "room": room}
            if not connected and kind not in _QUEUED_REQUESTS:
                self._say(f"not connected: /{kind} works again once reconnected", error=True)
                continue
            if not self.connection.offer(message):
                self._say(
                    f"not sent (too many lines waiting): {message.get('text', '')}", error=True
                )
                continue
            now = self._clock()
            if kind == "message":
                self.show(
                    [own_message_line(self.status.nick, message["text"], now, queued=not connected)]
                )
            elif not connected:
                command = {"action": "/me", "private": f"/msg {message.get('to')}"}[kind]
                self._say(f"queued until reconnected: {command} {message.get('text', '')}")
