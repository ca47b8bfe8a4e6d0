"""TextJsonDialect: the server's own protocol, as `/commands` (nc, telnet) or JSON Lines.

A client starts in text mode; a first line that is a JSON object switches it to JSON Lines for
good (chat/wire/text.py and chat/wire/jsonl.py are the codecs). Either way the same requests
reach the hub, and both kinds of user share its rooms with IRC users.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from chat import events as ev
from chat.config import ServerConfig
from chat.dialects import Link, piece_bytes, reclaim_nick, sentence, split_lines
from chat.flood import FloodGate, Verdict
from chat.hub import ChatError, Hub, NickTaken
from chat.protocol import (
    MAX_LINE_BYTES,
    Line,
    LineTooLong,
    ProtocolError,
    clean_text,
    nick_error,
    room_key,
)
from chat.wire import EncodeCache
from chat.wire import jsonl as json_wire
from chat.wire import text as text_wire

log = logging.getLogger("chat.dialects.textjson")

# History (#11): `/history since 09:30` shows at most this many messages (the oldest first:
# ask again with a later time for the rest); `/history` with no number, when the server replays
# nothing on join, shows this many.
SINCE_LIMIT = 200
DEFAULT_HISTORY_LIMIT = 50


def _last_clock_time(hour: int, minute: int) -> float:
    """The most recent moment (local time) the clock read hour:minute: today, or yesterday if
    that is still to come."""
    now = time.time()
    today = time.localtime(now)
    then = time.mktime((*today[:3], hour, minute, 0, 0, 0, -1))
    return then - 86400 if then > now else then


class Codec(Protocol):
    """A wire module as this dialect uses it (chat/wire/text.py, chat/wire/jsonl.py)."""

    NAME: str

    def parse(self, line: str, registered: bool) -> ev.Request: ...

    def encode(
        self,
        event: ev.Event,
        recipient: str,
        current_room: str | None = None,
        cache: EncodeCache | None = None,
    ) -> bytes: ...


class TextJsonDialect:
    """One text or JSON client's protocol state.

    Thread safety: the reader thread alone calls everything but `encode()`, and alone changes
    `nick`, `_codec` and the registration state. `encode()` runs in whichever thread delivers an
    event, under the hub lock: it reads `nick` and `_codec` (set before registration and never
    changed by another thread) and `current_room`, which both threads may change: the reader
    when the user joins or parts, `encode()` when the user is kicked from its current room (so
    its next plain line goes where it was told). `_room_lock` (a leaf lock, taken under the hub
    lock by `encode()`, never held while calling the hub) makes each change one step.
    """

    __slots__ = (
        "_codec",
        "_config",
        "_flood",
        "_hub",
        "_link",
        "_password_ok",
        "_quit_message",
        "_room_lock",
        "current_room",
        "nick",
    )

    max_line_bytes = MAX_LINE_BYTES

    def __init__(self, link: Link, hub: Hub, config: ServerConfig) -> None:
        self._link = link
        self._hub = hub
        self._config = config
        self.nick: str | None = None
        # Where plain messages go; lines from the user's other rooms are prefixed "[#room] ".
        self.current_room: str | None = None
        self._room_lock = threading.Lock()
        self._codec: Codec = text_wire  # until a first line in JSON says otherwise
        self._password_ok = config.password is None
        self._flood = FloodGate(config.flood_rate, config.flood_burst, time.monotonic())
        self._quit_message = ""

    @staticmethod
    def refusal(message: str) -> bytes:
        return f"! {message}\n".encode()

    @property
    def registered(self) -> bool:
        return self.nick is not None

    # -- the Dialect protocol ------------------------------------------------------------------

    def greet(self) -> None:
        self._reply(ev.Greeting(online=len(self._hub), password=not self._password_ok))

    def encode(self, event: ev.Event, cache: EncodeCache | None) -> bytes:
        current = self.current_room
        if isinstance(event, ev.Kicked) and event.nick == self.nick:
            # Kicked from the room its plain lines go to: they go to its newest room now. The
            # line itself is encoded with the room it was kicked from, to say so.
            with self._room_lock:
                current = self.current_room
                if current is not None and room_key(current) == room_key(event.room):
                    self.current_room = event.rooms_left[-1] if event.rooms_left else None
        return self._codec.encode(event, self.nick or "", current, cache)

    def silence_limit(self) -> float | None:
        return self._config.idle_timeout_s

    def on_silence(self) -> bool:
        return False  # idle too long: the connection says goodbye

    def farewell(self, reason: str, message: str) -> None:
        code = "timeout" if reason == ev.LeaveReason.TIMED_OUT else "line_too_long"
        self._reply_error(ProtocolError(code, message))

    def finish(self, reason: str) -> None:
        self._hub.leave(self._link, reason, self._quit_message)

    def handle(self, lines: list[Line]) -> None:
        """The lines of one `recv()`; consecutive messages to the current room go to the hub
        as one batch (one trip through the lock, one queue entry per member)."""
        texts: list[str] = []
        for line in lines:
            request = self._parse(line)
            if isinstance(request, ev.Say) and request.room is None:
                if request.text.strip():
                    texts.append(request.text)
                continue
            if texts:  # keep the order: the messages before this request come first
                self._say(texts)
                texts = []
            if request is not None:
                try:
                    self._dispatch(request)
                except ChatError as error:
                    self._reply_error(sentence(error))
                except ProtocolError as error:
                    self._reply_error(error)
            if self._link.ending:
                break
        if texts:
            self._say(texts)

    # -- requests ------------------------------------------------------------------------------

    def _parse(self, line: Line) -> ev.Request | None:
        """The request on `line`, or None when it was refused (and the client told why)."""
        if line.too_long:
            self._reply_error(LineTooLong(self.max_line_bytes))
            return None
        # The codec cleans what the user says, but keeps room names and keys as sent, for their
        # rules to refuse (chat/wire/text.py). Only the first lines (the mode check, the
        # password) need the whole line clean, so a registered user's line is decoded once.
        raw = line.data.decode("utf-8", errors="replace")
        if self.nick is None or not self._password_ok:
            text = clean_text(raw)
            if self.nick is None and self._codec is text_wire and json_wire.looks_like_json(text):
                self._codec = json_wire
            if not self._password_ok and self._codec is text_wire:
                self._check_password(text.strip())
                return None
        if not self._flood_allows():
            return None
        try:
            return self._codec.parse(raw, registered=self.nick is not None)
        except ProtocolError as error:
            self._reply_error(error)
            return None

    def _say(self, texts: list[str]) -> None:
        try:
            self._hub.say(self._link, *texts, room=self._room_or_current(None))
        except ChatError as error:
            self._reply_error(sentence(error))
        except ProtocolError as error:
            self._reply_error(error)

    def _dispatch(self, request: ev.Request) -> None:
        hub, link = self._hub, self._link
        match request:
            case ev.Hello(nick=nick, password=password):
                self._register(nick, password)
            case ev.Say(text=text, room=room):
                if text.strip():
                    hub.say(link, text, room=self._room_or_current(room))
            case ev.Act(text=text, room=room):
                if text.strip():  # "/me ESC[2J" is empty once cleaned: dropped, as a Say
                    hub.act(link, text, self._room_or_current(room))
            case ev.Whisper(to=to, text=text):
                if not text.strip():  # empty once cleaned: dropped, as a Say
                    return
                hub.whisper(link, to, text)
                if (who := hub.identity_of(to)) is not None and who.away is not None:
                    self._reply(ev.AwayStatus(who.nick, who.away, time.time()))
            case ev.SetAway(text=text):
                # Only this reader changes its user's away state: what it was is still true.
                before = hub.identity_of(self.nick) if self.nick else None
                away = hub.set_away(link, text)
                was_away = before is not None and before.away is not None
                self._reply(ev.AwayStatus(self.nick or "", away, time.time(), was_away))
            case ev.ChangeNick(nick=new):
                self._rename(new)
            case ev.Who(room=room):
                self._reply(hub.who(link, self._room_or_current(room)))
            case ev.ListUsers():
                self._reply(hub.users())
            case ev.Help():
                self._reply(ev.HelpText(time.time()))
            case ev.Ping(token=token):
                hub.barrier()  # cluster (#12): a pong also covers what other nodes did before
                self._reply(ev.Pong(token, time.time()))
            case ev.Quit(reason=message):
                self._quit_message = message
                self._link.end(ev.LeaveReason.QUIT)
                # Leave now, so that the goodbye is the last line this client receives.
                hub.leave(link, ev.LeaveReason.QUIT, message)
                self._reply(ev.Goodbye(message, time.time()))
            case ev.JoinRoom(room=room, key=key):
                self._switch_to(room, key)
            case ev.PartRoom(room=room, message=message):
                self._part(self._room_or_current(room), message)
            case ev.ListRooms():
                rooms = hub.list_rooms(link)
                listing = self._codec.encode(rooms, self.nick or "")
                link.send_pieces(split_lines(listing, piece_bytes(self._config)))
            case ev.SetTopic(topic=None, room=room):
                self._reply(hub.topic(link, self._room_or_current(room)))
            case ev.SetTopic(topic=str() as topic, room=room):
                hub.set_topic(link, self._room_or_current(room), topic)
            case ev.KickUser(nick=nick, reason=reason, room=room):
                hub.kick(link, self._room_or_current(room), nick, reason)
            case ev.SetRoomMode(key=key, secret=secret, room=room):
                changes: list[tuple[str, str]] = []
                if key is not None:
                    changes.append(("+k", key) if key else ("-k", ""))
                if secret is not None:
                    changes.append(("+s" if secret else "-s", ""))
                name = self._room_or_current(room)
                if changes and hub.set_modes(link, name, changes) == ("", ()):
                    self._reply(ev.Notice(_unchanged(name, key, secret), time.time()))
            case ev.ShowHistory():
                self._history(request)
            case ev.Nothing():
                pass

    def _history(self, request: ev.ShowHistory) -> None:
        """Answers /history and JSON `history` from the store (in this reader thread, outside
        the hub lock), in pieces: a thousand messages reach even a small send queue (#11)."""
        since = request.since
        if request.since_hm is not None:
            since = _last_clock_time(*request.since_hm)
        target = request.with_nick or self._room_or_current(request.room)
        limit = request.limit or (SINCE_LIMIT if since is not None else self._config.history_replay)
        answer = self._hub.history(
            self._link,
            target,
            limit=limit or DEFAULT_HISTORY_LIMIT,
            before=request.before,
            after=request.after,
            after_ts=since,
        )
        data = self.encode(answer, None)
        self._link.send_pieces(split_lines(data, piece_bytes(self._config)))

    def _flood_allows(self) -> bool:
        """Asks the flood gate about one more line; warns or kicks as it says."""
        verdict = self._flood.check(time.monotonic())
        if verdict is Verdict.WARN:
            rate = self._config.flood_rate
            self._reply_error(ProtocolError("flood", f"slow down: at most {rate:g} lines/s"))
        elif verdict is Verdict.KICK:
            self._reply_error(ProtocolError("flood", "kicked for flooding"))
            self._link.end(ev.LeaveReason.FLOODING)
        return verdict is Verdict.ACCEPT

    def _room_or_current(self, room: str | None) -> str:
        if room is not None:
            return room
        current = self.current_room
        if current is None:
            raise ProtocolError("not_in_room", "you are in no room: /join #room first")
        return current

    def _switch_to(self, room: str, key: str) -> None:
        """Joins `room` if needed and makes it the current room."""
        with self._room_lock:
            previous = self.current_room
            self.current_room = room  # before joining: the room's first lines come unprefixed
        try:
            self._hub.enter(self._link, room, key)
        except ChatError:
            with self._room_lock:
                if self.current_room == room:
                    self.current_room = previous
            raise

    def _part(self, room: str, message: str) -> None:
        self._hub.part(self._link, room, message)
        with self._room_lock:
            current = self.current_room
            if current is None or room_key(room) != room_key(current):
                return
        rooms = self._hub.rooms_of(self._link)
        with self._room_lock:
            self.current_room = rooms[-1] if rooms else None
        if rooms:
            self._hub.enter(self._link, rooms[-1])  # shows where the user talks now
        else:
            self._reply(ev.Notice("you are in no room now: /join #room to talk again", time.time()))

    def _check_password(self, attempt: str) -> None:
        """Text mode: the first line is the server password."""
        if attempt != self._config.password:
            self._reply_error(ProtocolError("bad_password", "wrong password"))
            self._link.end(ev.LeaveReason.BAD_PASSWORD)
            return
        self._password_ok = True
        self._reply(ev.Greeting(online=len(self._hub), password=False))

    def _register(self, nick: str, password: str | None = None) -> None:
        if not self._password_ok:
            if password != self._config.password:
                self._link.end(ev.LeaveReason.BAD_PASSWORD)
                raise ProtocolError("bad_password", "wrong or missing password")
            self._password_ok = True
        problem = nick_error(nick)
        if problem is not None:
            if self._codec is text_wire and nick.split(" ", 1)[0].upper() in _IRC_FIRST_WORDS:
                problem = self._not_irc()
            elif self._codec is text_wire and nick.startswith("/"):
                problem = (
                    "choose a nickname first: type just the name (like alice); "
                    "commands work after that"
                )
            raise ProtocolError("nick_invalid", problem)
        with self._room_lock:
            self.current_room = self._hub.name
        userhost = f"{nick}@{self._codec.NAME}"
        try:
            try:
                self._hub.join(self._link, nick, userhost)
            except NickTaken:
                if not reclaim_nick(self._hub, nick):
                    raise
                self._hub.join(self._link, nick, userhost)
        except NickTaken:
            with self._room_lock:
                self.current_room = None
            raise ProtocolError("nick_taken", f"nickname {nick} is taken") from None
        self.nick = nick
        log.info("%s joined as %s", self._link.label(), nick)

    def _not_irc(self) -> str:
        """What an IRC client that came to this port (irssi's CAP LS, NICK, USER) is told."""
        said = "this port speaks text and JSON Lines, not IRC"
        port = self._config.irc_port
        if port is None:
            return f"{said}, and this server has no IRC port"
        return f"{said}: connect IRC clients to the IRC port" + (f" ({port})" if port else "")

    def _rename(self, new: str) -> None:
        problem = nick_error(new)
        if problem is not None:
            raise ProtocolError("nick_invalid", problem)
        if new == self.nick:  # the hub changes nothing and tells nobody: say so, not silence
            self._reply(ev.Notice(f"you are already {new}", time.time()))
            return
        try:
            self._hub.rename(self._link, new)
        except NickTaken:
            raise ProtocolError("nick_taken", f"nickname {new} is taken") from None
        log.info("%s renamed to %s", self._link.label(), new)
        self.nick = new

    # -- replies -------------------------------------------------------------------------------

    def _reply_error(self, error: ProtocolError) -> None:
        prompt_again = self.nick is None and error.code in ("nick_invalid", "nick_taken")
        self._reply(ev.Error(error.code, error.message, time.time(), prompt_again))

    def _reply(self, event: ev.Event) -> None:
        """An event for this client alone, from its reader (no lock is held)."""
        self._link.send(self.encode(event, None))


# The first words of an IRC client's registration: on this port they arrive as a nickname.
_IRC_FIRST_WORDS = frozenset({"CAP", "NICK", "USER", "PASS"})


def _unchanged(room: str, key: str | None, secret: bool | None) -> str:
    """Why a mode request changed nothing (it is answered: silence left a person, or a program
    waiting for an event, unsure whether it had arrived)."""
    said = []
    if key is not None:
        said.append(f"{room} already has that key" if key else f"{room} has no key")
    if secret is not None:
        said.append(f"{room} is already {'secret' if secret else 'public'}")
    return "; ".join(said)
