"""IrcDialect: IRC (RFC 1459/2812 and modern IRC) for irssi, weechat, HexChat and bots.

Registration (CAP, PASS, NICK, USER), PING/PONG liveness, the 512-byte line cap, and the IRC
commands and numerics; chat/wire/irc.py formats every line. The connection, the send queue,
flood control and the hub are the same as for text and JSON users.
"""

from __future__ import annotations

import logging
import time

from chat import events as ev
from chat.config import ServerConfig
from chat.dialects import Link, piece_bytes, reclaim_nick, split_lines
from chat.flood import FloodGate, Verdict
from chat.hub import (
    BadKey,
    BadRoomKey,
    BadRoomName,
    ChatError,
    HistoryOff,
    Hub,
    NickTaken,
    NoMoreRooms,
    NoSuchNick,
    NoSuchRoom,
    NotInRoom,
    NotOperator,
    TooManyRooms,
    Unavailable,
    UserNotInRoom,
)
from chat.protocol import (
    REALNAME_MAX_CHARS,
    Line,
    clean_text,
    in_order,
    nick_error,
    nick_key,
    nick_mask,
    room_error,
    room_key,
)
from chat.store import MAX_HISTORY_LIMIT
from chat.wire import EncodeCache, irc

log = logging.getLogger("chat.dialects.irc")

# WHO with a mask lists at most this many users (as ircu's MAXWHOREPLIES): "WHO *" on a server
# of 10,000 would otherwise be a megabyte, more than a client's send queue.
WHO_MAX_REPLIES = 500
# Commands a client may send before it is registered (everything else gets 451).
_BEFORE_REGISTRATION = {"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT"}
# Capabilities of a client that asked for none: one shared object (since Python 3.10 every
# `frozenset()` is a new 216-byte object; one per idle client is 2 MiB at 10,000, #14).
NO_CAPS: frozenset[str] = frozenset()
# What CAP LS offers when the server keeps history, sorted once here (a sort in a reader thread
# costs it a stack page for good: chat/protocol.py `in_order`).
_HISTORY_CAPS = tuple(sorted((*irc.CAPS, irc.CHATHISTORY_CAP)))


class IrcDialect:
    """One IRC client's protocol state.

    Thread safety: the reader thread alone calls everything but `encode()` and alone changes
    the registration state (`_wanted_nick`, `_user`, `_password`, `_cap_open`), the liveness
    state (`_ping_sent`) and `nick`. `encode()` runs in whichever thread delivers an event (under
    the hub lock) and reads `nick` (one attribute read) as the numerics' target, and `_caps`
    (the capabilities negotiated, a frozenset replaced whole by the reader: one attribute
    read) to encode a history replay (#11).
    """

    __slots__ = (
        "_batches",
        "_cap_open",
        "_caps",
        "_config",
        "_flood",
        "_hub",
        "_link",
        "_password",
        "_pending_room",
        "_pending_texts",
        "_ping_sent",
        "_quit_message",
        "_server",
        "_user",
        "_userhost",
        "_wanted_nick",
        "nick",
    )

    max_line_bytes = irc.MAX_BODY_BYTES

    def __init__(self, link: Link, hub: Hub, config: ServerConfig) -> None:
        self._link = link
        self._hub = hub
        self._config = config
        self._server = config.server_name
        self.nick: str | None = None
        self._flood = FloodGate(config.flood_rate, config.flood_burst, time.monotonic())
        self._quit_message = ""
        self._wanted_nick: str | None = None
        self._user: tuple[str, str] | None = None  # (username, realname)
        self._password: str | None = None
        self._cap_open = False  # CAP LS/REQ seen, no CAP END yet: registration waits
        self._ping_sent = False
        self._userhost = ""
        # Plain PRIVMSGs to one channel, waiting to go to the hub as one batch (_say_pending).
        self._pending_room = ""
        self._pending_texts: list[str] | None = None  # (made by the first: memory, #14)
        # History (#11): IRCv3 capabilities this client negotiated; batches sent (their refs).
        self._caps: frozenset[str] = NO_CAPS
        self._batches = 0

    @staticmethod
    def refusal(message: str) -> bytes:
        return irc.format_line("", "ERROR", f"Closing link: ({message})")

    @property
    def registered(self) -> bool:
        return self.nick is not None

    # -- the Dialect protocol ------------------------------------------------------------------

    def greet(self) -> None:
        pass  # IRC clients speak first

    def encode(self, event: ev.Event, cache: EncodeCache | None) -> bytes:
        if isinstance(event, ev.History):  # a replay on join (#11): one client's, not cached
            caps = self._caps
            if irc.CHATHISTORY_CAP in caps:
                return b""  # it asks with CHATHISTORY itself, as it likes
            first = event.events[0].id if event.events else 0
            return irc.history_lines(event, self._server, caps, f"replay{first}")
        return irc.encode(event, self.nick or "*", self._server, cache)

    def silence_limit(self) -> float | None:
        config = self._config
        return config.irc_timeout_s - config.irc_ping_s if self._ping_sent else config.irc_ping_s

    def on_silence(self) -> bool:
        if not self._ping_sent:
            self._ping_sent = True
            self._send(irc.format_line("", "PING", self._server))
            return True
        seconds = int(self._config.irc_timeout_s)
        if self._link.end(ev.LeaveReason.PING_TIMEOUT):
            self._send(irc.format_line("", "ERROR", f"Closing link: (Ping timeout: {seconds} s)"))
        return True

    def farewell(self, reason: str, message: str) -> None:
        what = message[:1].upper() + message[1:]
        self._send(irc.format_line("", "ERROR", f"Closing link: ({what})"))

    def finish(self, reason: str) -> None:
        self._hub.leave(self._link, reason, self._quit_message)

    def handle(self, lines: list[Line]) -> None:
        self._ping_sent = False  # the client is alive after all
        for line in lines:
            self._handle(line)
            if self._link.ending:
                break
        self._say_pending()

    def _flood_allows(self) -> bool:
        verdict = self._flood.check(time.monotonic())
        if verdict is Verdict.WARN:
            rate = self._config.flood_rate
            message = f"slow down: at most {rate:g} lines/s"
            self._send(irc.format_line(self._server, "NOTICE", self._me, message))
        elif verdict is Verdict.KICK:
            self._link.end(ev.LeaveReason.FLOODING)
            self._send(irc.format_line("", "ERROR", "Closing link: (kicked for flooding)"))
        return verdict is Verdict.ACCEPT

    def _say_pending(self) -> None:
        """Hands the hub the channel messages queued by `_talk`, as one batch (as text mode
        does with the lines of one recv()): one lock round and one send per member."""
        if not self._pending_texts:
            return
        room, texts = self._pending_room, self._pending_texts
        self._pending_texts = None
        try:
            self._hub.say(self._link, *texts, room=room)
        except ChatError as error:
            self._chat_error(error, "PRIVMSG")

    def _handle(self, line: Line) -> None:
        if line.too_long:
            self._numeric(irc.ERR_INPUTTOOLONG, "Input line was too long")
            return
        message = irc.parse(line.data.decode("utf-8", errors="replace"))
        if message is None or not self._flood_allows():
            return
        command = message.command
        if command != "PRIVMSG":
            self._say_pending()  # keep the order: earlier messages go before this command
        if self.nick is None and command not in _BEFORE_REGISTRATION:
            self._numeric(irc.ERR_NOTREGISTERED, "You have not registered")
            return
        handler = getattr(self, f"_irc_{command.lower()}", None)
        if handler is None or not command.isalpha():
            self._numeric(irc.ERR_UNKNOWNCOMMAND, command, "Unknown command")
            return
        try:
            handler(message.params)
        except ChatError as error:
            self._chat_error(error, command)

    # -- registration --------------------------------------------------------------------------

    def _irc_cap(self, params: tuple[str, ...]) -> None:
        sub = params[0].upper() if params else ""
        offered = self._offered_caps()
        if sub == "LS":
            self._cap_open = self.nick is None
            self._send(
                irc.format_line(self._server, "CAP", self.nick or "*", "LS", " ".join(offered))
            )
        elif sub == "LIST":
            listed = " ".join(in_order(self._caps, key=str))  # (no sort: the stack, #14)
            self._send(irc.format_line(self._server, "CAP", self.nick or "*", "LIST", listed))
        elif sub == "REQ":
            self._cap_open = self.nick is None
            wanted = params[1] if len(params) > 1 else ""
            names = [name for name in wanted.split(" ") if name]
            if names and all(name.removeprefix("-") in offered for name in names):
                caps = set(self._caps)
                for name in names:
                    if name.startswith("-"):
                        caps.discard(name[1:])
                    else:
                        caps.add(name)
                self._caps = frozenset(caps)  # one assignment: encode() reads it (#11)
                self._send(irc.format_line(self._server, "CAP", self.nick or "*", "ACK", wanted))
            else:
                self._send(irc.format_line(self._server, "CAP", self.nick or "*", "NAK", wanted))
        elif sub == "END":
            self._cap_open = False
            self._try_register()
        else:
            self._numeric(irc.ERR_INVALIDCAPCMD, sub or "*", "Invalid CAP command")

    def _irc_pass(self, params: tuple[str, ...]) -> None:
        if self.nick is not None:
            self._numeric(irc.ERR_ALREADYREGISTERED, "You may not reregister")
        elif not params:
            self._numeric(irc.ERR_NEEDMOREPARAMS, "PASS", "Not enough parameters")
        else:
            self._password = params[0]

    def _irc_user(self, params: tuple[str, ...]) -> None:
        if self.nick is not None:
            self._numeric(irc.ERR_ALREADYREGISTERED, "You may not reregister")
            return
        if len(params) < 4 or not params[0] or not params[3]:
            self._numeric(irc.ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")
            return
        username = "".join(c for c in params[0] if c.isalnum() or c in "-_.")[:10] or "user"
        self._user = (username, clean_text(params[3])[:REALNAME_MAX_CHARS].strip() or username)
        self._try_register()

    def _irc_nick(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self._numeric(irc.ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        nick = params[0]
        if nick_error(nick) is not None:
            self._numeric(irc.ERR_ERRONEUSNICKNAME, nick, "Erroneous nickname")
            return
        if self.nick is None:
            # Nothing about who is online before the password is known to be right: with a
            # server password, a taken nickname is only reported once registration completes.
            authenticated = self._config.password is None
            if (
                authenticated
                and self._hub.holder(nick) is not None
                and not reclaim_nick(self._hub, nick)
            ):
                self._numeric(irc.ERR_NICKNAMEINUSE, nick, "Nickname is already in use")
                return
            self._wanted_nick = nick
            self._try_register()
            return
        try:
            self._hub.rename(self._link, nick)  # the NICK line comes back as an event
        except NickTaken:
            self._numeric(irc.ERR_NICKNAMEINUSE, nick, "Nickname is already in use")
            return
        self.nick = nick

    def _try_register(self) -> None:
        """Completes registration once NICK and USER are in and CAP negotiation is over."""
        if self.nick is not None or self._wanted_nick is None or self._user is None:
            return
        if self._cap_open:
            return
        if self._config.password is not None and self._password != self._config.password:
            self._numeric(irc.ERR_PASSWDMISMATCH, "Password incorrect")
            self._send(irc.format_line("", "ERROR", "Closing link: (Bad password)"))
            self._link.end(ev.LeaveReason.BAD_PASSWORD)
            return
        nick, user, password = self._wanted_nick, self._user, self._password
        # What only registration needs is not kept by an idle client (memory, #14).
        self._user = self._password = None
        self._userhost = f"~{user[0]}@irc"
        try:
            try:
                self._hub.register(self._link, nick, self._userhost, user[1])
            except NickTaken:
                if not reclaim_nick(self._hub, nick):
                    raise
                self._hub.register(self._link, nick, self._userhost, user[1])
        except NickTaken:  # someone else won the race for it since NICK
            self._wanted_nick = None
            self._user, self._password = user, password  # for the next NICK
            self._numeric(irc.ERR_NICKNAMEINUSE, nick, "Nickname is already in use")
            return
        self.nick = nick
        log.info("%s registered as %s (IRC)", self._link.label(), nick)
        s, me = self._server, nick
        self._send(
            irc.numeric(s, me, irc.RPL_WELCOME, f"Welcome to the chat, {me}!{self._userhost}"),
            irc.numeric(s, me, irc.RPL_YOURHOST, f"Your host is {s}, running {irc.VERSION}"),
            irc.numeric(s, me, irc.RPL_CREATED, "This server is a threadroom chat server"),
            irc.format_line(s, irc.RPL_MYINFO, me, s, irc.VERSION, "i", "kos", "ko"),
            irc.numeric(
                s,
                me,
                irc.RPL_ISUPPORT,
                *irc.isupport(self._hub.rooms_per_user),
                "are supported by this server",
            ),
        )
        if self._hub.store is not None:  # history (#11): in a 005 line of its own
            self._numeric(
                irc.RPL_ISUPPORT,
                *irc.history_isupport(MAX_HISTORY_LIMIT),
                "are supported by this server",
            )
        self._irc_lusers(())
        self._irc_motd(())

    # -- liveness and leaving ------------------------------------------------------------------

    def _irc_ping(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self._numeric(irc.ERR_NOORIGIN, "No origin specified")
            return
        self._hub.barrier()  # cluster (#12): PONG after what other nodes did before the PING
        self._send(irc.format_line(self._server, "PONG", self._server, params[0]))

    def _irc_pong(self, params: tuple[str, ...]) -> None:
        pass  # any line proves liveness (see _handle)

    def _irc_quit(self, params: tuple[str, ...]) -> None:
        message = self._text(params[0]) if params else ""
        self._quit_message = message
        self._link.end(ev.LeaveReason.QUIT)
        self._hub.leave(self._link, ev.LeaveReason.QUIT, message)
        self._send(
            irc.format_line("", "ERROR", f"Closing link: ({irc.quit_text('quit', message)})")
        )

    # -- rooms ---------------------------------------------------------------------------------

    def _irc_join(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric(irc.ERR_NEEDMOREPARAMS, "JOIN", "Not enough parameters")
            return
        if params[0] == "0":  # leave every room
            for room in self._hub.rooms_of(self._link):
                self._hub.part(self._link, room, "")
            return
        keys = params[1].split(",") if len(params) > 1 else []
        for i, room in enumerate(params[0].split(",")):
            if room_error(room) is not None:
                self._numeric(irc.ERR_NOSUCHCHANNEL, room or "*", "No such channel")
                continue
            try:
                self._hub.enter(
                    self._link, room, keys[i] if i < len(keys) else "", show_if_in=False
                )
            except ChatError as error:
                self._chat_error(error, "JOIN")

    def _irc_part(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric(irc.ERR_NEEDMOREPARAMS, "PART", "Not enough parameters")
            return
        message = self._text(params[1]) if len(params) > 1 else ""
        for room in params[0].split(","):
            try:
                self._hub.part(self._link, room, message)
            except ChatError as error:
                self._chat_error(error, "PART")

    def _irc_names(self, params: tuple[str, ...]) -> None:
        rooms = params[0].split(",") if params else list(self._hub.rooms_of(self._link))
        for room in rooms:
            found = self._hub.room_names(room, self._link)
            if found is None:
                self._numeric(irc.RPL_ENDOFNAMES, room, "End of /NAMES list")
                continue
            name, users = found
            modes = self._hub.room_modes(name, self._link)
            secret = modes is not None and modes[3]
            self._link.send_pieces(
                split_lines(
                    irc.names_lines(self._server, self._me, name, users, secret),
                    piece_bytes(self._config),
                )
            )
        if not params:
            self._numeric(irc.RPL_ENDOFNAMES, "*", "End of /NAMES list")

    def _irc_list(self, params: tuple[str, ...]) -> None:
        wanted = {room_key(r) for r in params[0].split(",")} if params else None
        lines = [irc.numeric(self._server, self._me, irc.RPL_LISTSTART, "Channel", "Users Name")]
        for info in self._hub.list_rooms(self._link).rooms:
            if wanted is None or room_key(info.name) in wanted:
                lines.append(
                    irc.numeric(
                        self._server, self._me, irc.RPL_LIST, info.name, str(info.count), info.topic
                    )
                )
        lines.append(irc.numeric(self._server, self._me, irc.RPL_LISTEND, "End of /LIST"))
        self._link.send_pieces(split_lines(b"".join(lines), piece_bytes(self._config)))

    def _irc_topic(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric(irc.ERR_NEEDMOREPARAMS, "TOPIC", "Not enough parameters")
            return
        room = params[0]
        if len(params) > 1:
            self._hub.set_topic(self._link, room, self._text(params[1]))
            return
        reply = self._hub.topic(self._link, room)  # NoSuchRoom: a secret room for outsiders
        self._send(
            irc.topic_lines(self._server, self._me, reply.room, reply.topic, reply.by, reply.ts)
        )

    def _irc_kick(self, params: tuple[str, ...]) -> None:
        if len(params) < 2:
            self._numeric(irc.ERR_NEEDMOREPARAMS, "KICK", "Not enough parameters")
            return
        reason = self._text(params[2]) if len(params) > 2 else ""
        for nick in params[1].split(","):
            try:
                self._hub.kick(self._link, params[0], nick, reason)
            except ChatError as error:
                self._chat_error(error, "KICK")

    def _irc_mode(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric(irc.ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
            return
        target = params[0]
        if not target.startswith("#"):
            self._user_mode(target, params[1:])
            return
        modes = self._hub.room_modes(target, self._link)
        if modes is None:  # no such room, or a secret one the asker is not in
            raise NoSuchRoom(target)
        name, keyed, key, secret = modes
        if len(params) == 1:
            shown = "+n" + ("s" if secret else "") + ("k" if keyed else "")
            args = [key] if key else []  # a non-member sees "+nk" without the key, as on ircds
            self._numeric(irc.RPL_CHANNELMODEIS, name, shown, *args)
            return
        changes, lists = self._parse_modes(params[1], list(params[2:]))
        for letter in lists:  # list queries (bans, exceptions): we keep no lists
            end = {"b": irc.RPL_ENDOFBANLIST, "e": "349", "I": "347"}[letter]
            self._numeric(end, name, "End of list")
        if changes:
            self._hub.set_modes(self._link, name, changes)

    def _parse_modes(self, spec: str, args: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
        changes: list[tuple[str, str]] = []
        lists: list[str] = []
        sign = "+"
        for letter in spec:
            if letter in "+-":
                sign = letter
            elif letter in "beI":
                if args and sign == "+":
                    args.pop(0)  # setting a ban: unsupported, ignored
                lists.append(letter)
            elif letter in "ko":
                if letter == "k" and sign == "-":
                    if args:
                        args.pop(0)
                    changes.append(("-k", ""))
                elif not args:
                    self._numeric(irc.ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
                else:
                    changes.append((sign + letter, args.pop(0)))
            elif letter in "sn":
                if letter == "s":
                    changes.append((sign + "s", ""))
            else:
                self._numeric(irc.ERR_UNKNOWNMODE, letter, "is an unknown mode char to me")
        return changes, lists

    def _user_mode(self, target: str, params: tuple[str, ...]) -> None:
        if self._hub.identity_of(target) is None:
            raise NoSuchNick(target)
        if nick_key(target) != nick_key(self._me):
            self._numeric(irc.ERR_USERSDONTMATCH, "Cannot change mode for other users")
        elif not params:
            self._numeric(irc.RPL_UMODEIS, "+")
        elif any(c not in "+-iw" for c in params[0]):
            self._numeric(irc.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")
        # +i / +w: accepted and meaningless here (a WHO mask lists everyone, docs/irc.md)

    # -- talking -------------------------------------------------------------------------------

    def _irc_privmsg(self, params: tuple[str, ...]) -> None:
        self._talk("PRIVMSG", params)

    def _irc_notice(self, params: tuple[str, ...]) -> None:
        self._talk("NOTICE", params)

    def _talk(self, command: str, params: tuple[str, ...]) -> None:
        """PRIVMSG and NOTICE; a NOTICE is never answered with an error (RFC 2812 3.3.2)."""
        notice = command == "NOTICE"
        if not params or not params[0]:
            if not notice:
                self._numeric(irc.ERR_NORECIPIENT, f"No recipient given ({command})")
            return
        if len(params) < 2 or not params[1]:
            if not notice:
                self._numeric(irc.ERR_NOTEXTTOSEND, "No text to send")
            return
        raw = params[1]
        ctcp = irc.split_ctcp(raw)
        if ctcp is not None and ctcp[0] != "ACTION":
            return  # other CTCP (VERSION, PING, ...) is not relayed: docs/irc.md
        text = self._text(ctcp[1] if ctcp else raw)
        if not text.strip():
            if not notice:
                self._numeric(irc.ERR_NOTEXTTOSEND, "No text to send")
            return
        targets = params[0].split(",")[: irc.MAX_TARGETS]
        if len(targets) == 1 and targets[0].startswith("#") and not ctcp and not notice:
            if self._pending_texts and self._pending_room != targets[0]:
                self._say_pending()
            self._pending_room = targets[0]
            if self._pending_texts is None:
                self._pending_texts = []
            self._pending_texts.append(text)
            return
        self._say_pending()
        for target in targets:
            try:
                if target.startswith("#"):
                    if ctcp:
                        self._hub.act(self._link, text, target, echo=False)
                    else:
                        self._hub.say(self._link, text, room=target, notice=notice)
                else:
                    self._hub.whisper(
                        self._link, target, text, echo=False, notice=notice, action=bool(ctcp)
                    )
                    if not notice and (who := self._hub.identity_of(target)) and who.away:
                        self._numeric(irc.RPL_AWAY, who.nick, who.away)
            except ChatError as error:
                if not notice:
                    self._chat_error(error, command)

    # -- history (#11): IRCv3 draft/chathistory --------------------------------------------------

    def _offered_caps(self) -> tuple[str, ...]:
        """What CAP LS offers: the capabilities of history, when the server keeps it."""
        if self._hub.store is None:
            return ()
        return _HISTORY_CAPS

    def _irc_chathistory(self, params: tuple[str, ...]) -> None:
        """CHATHISTORY LATEST|BEFORE|AFTER|AROUND|BETWEEN target ref [ref] limit, answered in a
        `chathistory` batch (plain lines with the time in front for clients without batch)."""
        if self._hub.store is None:
            self._numeric(irc.ERR_UNKNOWNCOMMAND, "CHATHISTORY", "Unknown command")
            return
        sub = params[0].upper() if params else ""
        wanted = 5 if sub == "BETWEEN" else 4
        if sub not in ("LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN") or len(params) < wanted:
            self._fail("INVALID_PARAMS", sub or "*", "Invalid or missing parameters")
            return
        target = params[1]
        refs = [_history_ref(p) for p in params[2 : wanted - 1]]
        limit = int(params[wanted - 1]) if params[wanted - 1].isdigit() else 0
        star = sub == "LATEST" and params[2] == "*"
        if limit < 1 or (None in refs and not star):
            self._fail("INVALID_PARAMS", sub, "Invalid or missing parameters")
            return
        limit = min(limit, MAX_HISTORY_LIMIT)
        try:
            answer = self._chathistory(sub, target, [r for r in refs if r is not None], limit)
        except (NoSuchRoom, NotInRoom, HistoryOff):
            self._fail("INVALID_TARGET", sub, target, "Messages could not be retrieved")
            return
        self._batches += 1
        data = irc.history_lines(answer, self._server, self._caps, f"history{self._batches}")
        self._link.send_pieces(split_lines(data, piece_bytes(self._config)))

    def _chathistory(
        self, sub: str, target: str, refs: list[tuple[str, float]], limit: int
    ) -> ev.History:
        hub, link = self._hub, self._link
        ids: dict[str, int | None] = {"before": None, "after": None}
        times: dict[str, float | None] = {"before": None, "after": None}

        def bound(ref: tuple[str, float], side: str) -> None:
            if ref[0] == "msgid":
                ids[side] = int(ref[1])
            else:
                times[side] = ref[1]

        newest = False
        if sub == "AROUND":
            kind, value = refs[0]
            if kind == "msgid":
                return hub.history(link, target, limit=limit, around=int(value))
            older = hub.history(link, target, limit=limit // 2 or 1, before_ts=value)
            rest = max(1, limit - len(older.events))
            newer = hub.history(link, target, limit=rest, after_ts=value - 1e-6)
            return ev.History(older.target, older.events + newer.events, newer.ts)
        if sub == "LATEST":
            newest = True
            if refs:
                bound(refs[0], "after")
        elif sub in ("BEFORE", "AFTER"):
            bound(refs[0], sub.lower())
        else:  # BETWEEN: given newest first, the newest of the range are wanted
            first, second = refs
            newest = first[0] == second[0] and first[1] > second[1]
            bound(second if newest else first, "after")
            bound(first if newest else second, "before")
        return hub.history(
            link,
            target,
            limit=limit,
            before=ids["before"],
            after=ids["after"],
            before_ts=times["before"],
            after_ts=times["after"],
            newest=newest,
        )

    def _fail(self, code: str, *params: str) -> None:
        """An IRCv3 standard reply: FAIL CHATHISTORY CODE [context...] :description."""
        self._send(irc.format_line(self._server, "FAIL", "CHATHISTORY", code, *params))

    # -- information ---------------------------------------------------------------------------

    def _irc_away(self, params: tuple[str, ...]) -> None:
        if self._hub.set_away(self._link, params[0] if params else "") is not None:
            self._numeric(irc.RPL_NOWAWAY, "You have been marked as being away")
        else:
            self._numeric(irc.RPL_UNAWAY, "You are no longer marked as being away")

    def _irc_userhost(self, params: tuple[str, ...]) -> None:
        """USERHOST nick...: `nick=+user@host` for each one online (`-` if away), 302."""
        if not params:
            self._numeric(irc.ERR_NEEDMOREPARAMS, "USERHOST", "Not enough parameters")
            return
        replies = []
        for nick in params[:5]:  # RFC 2812: up to five
            if (who := self._hub.identity_of(nick)) is not None:
                replies.append(f"{who.nick}={'-' if who.away else '+'}{who.userhost}")
        self._numeric(irc.RPL_USERHOST, " ".join(replies))

    def _irc_ison(self, params: tuple[str, ...]) -> None:
        """ISON nick...: which of them are online, as spelled (irssi's /notify asks this)."""
        if not params:
            self._numeric(irc.ERR_NEEDMOREPARAMS, "ISON", "Not enough parameters")
            return
        asked = " ".join(params).split()  # as many as one 512-byte line holds
        online = [who.nick for nick in asked if (who := self._hub.identity_of(nick))]
        self._numeric(irc.RPL_ISON, " ".join(online))

    def _irc_who(self, params: tuple[str, ...]) -> None:
        mask = params[0] if params else "*"
        lines = []
        if mask.startswith("#"):
            found = self._hub.room_names(mask, self._link)
            entries = [(u.lstrip("@"), u.startswith("@")) for u in found[1]] if found else []
            room = found[0] if found else mask
        else:  # a nick, or a mask of nicks ("*" and "0": everyone), the first WHO_MAX_REPLIES
            matches = nick_mask(mask)
            entries = [(n, False) for n in self._hub.nicks() if matches(n)][:WHO_MAX_REPLIES]
            room = "*"
        for nick, op in entries:
            who = self._hub.identity_of(nick)
            if who is None:
                continue
            user, _, host = who.userhost.partition("@")
            lines.append(
                irc.numeric(
                    self._server,
                    self._me,
                    irc.RPL_WHOREPLY,
                    room,
                    user,
                    host,
                    self._server,
                    who.nick,
                    ("G" if who.away is not None else "H") + ("@" if op else ""),
                    f"0 {who.realname}",
                )
            )
        lines.append(irc.numeric(self._server, self._me, irc.RPL_ENDOFWHO, mask, "End of WHO"))
        self._link.send_pieces(split_lines(b"".join(lines), piece_bytes(self._config)))

    def _irc_whois(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric(irc.ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        nick = params[-1]
        who = self._hub.identity_of(nick)
        rooms = self._hub.visible_rooms_of(nick, self._link)
        if who is None or rooms is None:
            self._numeric(irc.ERR_NOSUCHNICK, nick, "No such nick/channel")
            self._numeric(irc.RPL_ENDOFWHOIS, nick, "End of /WHOIS list")
            return
        user, _, host = who.userhost.partition("@")
        s, me = self._server, self._me
        lines = [irc.numeric(s, me, irc.RPL_WHOISUSER, who.nick, user, host, "*", who.realname)]
        if rooms:
            lines.append(irc.numeric(s, me, irc.RPL_WHOISCHANNELS, who.nick, " ".join(rooms)))
        lines.append(irc.numeric(s, me, irc.RPL_WHOISSERVER, who.nick, s, "threadroom chat"))
        if who.away is not None:
            lines.append(irc.numeric(s, me, irc.RPL_AWAY, who.nick, who.away))
        lines.append(irc.numeric(s, me, irc.RPL_ENDOFWHOIS, who.nick, "End of /WHOIS list"))
        self._send(*lines)

    def _irc_lusers(self, params: tuple[str, ...]) -> None:
        users, most, rooms = self._hub.counts()
        s, me = self._server, self._me
        self._send(
            irc.numeric(
                s, me, irc.RPL_LUSERCLIENT, f"There are {users} users and 0 invisible on 1 servers"
            ),
            irc.numeric(s, me, irc.RPL_LUSERCHANNELS, str(rooms), "channels formed"),
            irc.numeric(s, me, irc.RPL_LUSERME, f"I have {users} clients and 0 servers"),
            irc.numeric(
                s,
                me,
                irc.RPL_LOCALUSERS,
                str(users),
                str(most),
                f"Current local users {users}, max {most}",
            ),
            irc.numeric(
                s,
                me,
                irc.RPL_GLOBALUSERS,
                str(users),
                str(most),
                f"Current global users {users}, max {most}",
            ),
        )

    def _irc_motd(self, params: tuple[str, ...]) -> None:
        self._numeric(irc.ERR_NOMOTD, "MOTD File is missing")

    # -- helpers -------------------------------------------------------------------------------

    @property
    def _me(self) -> str:
        return self.nick or "*"

    def _send(self, *lines: bytes) -> None:
        """Queues reply lines; a client too slow to take them is dropped like any other."""
        self._link.send(b"".join(lines))

    def _numeric(self, code: str, *params: str) -> None:
        self._send(irc.numeric(self._server, self._me, code, *params))

    @staticmethod
    def _text(raw: str) -> str:
        """Text from an IRC client as every front-end may show it: no formatting, no controls."""
        return clean_text(irc.strip_formatting(raw))

    def _chat_error(self, error: ChatError, command: str) -> None:
        name = error.name or "*"
        match error:
            case NoSuchNick():
                self._numeric(irc.ERR_NOSUCHNICK, name, "No such nick/channel")
            case NoSuchRoom():
                if command in ("PRIVMSG", "NOTICE"):
                    self._numeric(irc.ERR_NOSUCHNICK, name, "No such nick/channel")
                else:
                    self._numeric(irc.ERR_NOSUCHCHANNEL, name, "No such channel")
            case BadRoomName():
                self._numeric(irc.ERR_BADCHANMASK, name, "Bad channel mask")
            case NotInRoom():
                if command in ("PRIVMSG", "NOTICE"):
                    self._numeric(irc.ERR_CANNOTSENDTOCHAN, name, "Cannot send to channel")
                else:
                    self._numeric(irc.ERR_NOTONCHANNEL, name, "You're not on that channel")
            case UserNotInRoom():
                self._numeric(irc.ERR_USERNOTINCHANNEL, name, "*", "They aren't on that channel")
            case BadRoomKey():
                self._numeric(irc.ERR_BADCHANNELKEY, name, "Cannot join channel (+k)")
            case NotOperator():
                self._numeric(irc.ERR_CHANOPRIVSNEEDED, name, "You're not channel operator")
            case NickTaken():
                self._numeric(irc.ERR_NICKNAMEINUSE, name, "Nickname is already in use")
            case TooManyRooms():
                self._numeric(irc.ERR_TOOMANYCHANNELS, name, "You have joined too many channels")
            case NoMoreRooms():
                self._numeric(irc.ERR_TOOMANYCHANNELS, name, "The server has too many channels")
            case BadKey():
                self._numeric(irc.ERR_INVALIDKEY, name, "Key is not well-formed")
            case Unavailable(problem=problem):  # cluster (#12): RPL_TRYAGAIN
                self._numeric(irc.RPL_TRYAGAIN, command, problem)
            case _:
                log.warning("%s: unexpected %r", self._link.label(), error)


def _history_ref(param: str) -> tuple[str, float] | None:
    """("msgid", 123) for "msgid=123", ("timestamp", unix time) for "timestamp=2026-...Z",
    None for anything else (#11)."""
    kind, _, value = param.partition("=")
    if kind == "msgid" and value.isdigit() and value.isascii():
        return "msgid", float(int(value))
    if kind == "timestamp":
        when = irc.parse_server_time(value)
        if when is not None:
            return "timestamp", when
    return None
