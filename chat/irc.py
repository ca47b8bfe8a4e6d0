"""IrcSession: one IRC client connection (irssi, weechat, HexChat, bots) on the IRC port.

A `Session` subclass: it reuses the reader thread, the outbox (SendQ), the flood gate,
the shutdown machinery and the hub, and replaces what differs for IRC: the registration state
machine (CAP, PASS, NICK, USER), the 512-byte line cap, PING/PONG liveness, and the commands and
numerics (chat/wire_irc.py formats every line).
"""

from __future__ import annotations

import logging

from chat import events as ev
from chat import wire_irc as irc
from chat.protocol import (
    MAX_DISCARD_BYTES,
    Line,
    LineDecoder,
    ProtocolError,
    clean_text,
    nick_error,
    room_error,
)
from chat.room import (
    BadRoomKey,
    BadRoomName,
    ChatError,
    NickTaken,
    NoSuchNick,
    NoSuchRoom,
    NotInRoom,
    NotOperator,
    UserNotInRoom,
)
from chat.session import Session

log = logging.getLogger("chat.irc")

# Commands a client may send before it is registered (everything else gets 451).
_BEFORE_REGISTRATION = {"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT"}


class IrcSession(Session):
    """One IRC client.

    Thread safety: as for `Session`. The registration state (`_wanted_nick`, `_user`,
    `_password`, `_cap_open`) and the liveness state (`_ping_sent`) belong to the reader thread.
    `deliver()` formats with `self.nick` as the numerics' target, read atomically.
    """

    @staticmethod
    def refusal(line: bytes) -> bytes:
        text = line.decode().strip("! \n")
        return irc.format_line("", "ERROR", f"Closing link: ({text})")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._server = self._config.server_name
        self._wanted_nick: str | None = None
        self._user: tuple[str, str] | None = None  # (username, realname)
        self._password: str | None = None
        self._cap_open = False  # CAP LS/REQ seen, no CAP END yet: registration waits
        self._ping_sent = False
        self._userhost = ""
        # Plain PRIVMSGs to one channel, waiting to go to the hub as one batch (_say_pending).
        self._pending_room = ""
        self._pending_texts: list[str] = []

    # -- Session hooks -------------------------------------------------------------------------

    def deliver(self, event: ev.Event) -> bool:
        data = irc.encode(event, self.nick or "*", self._server)
        return not data or self._outbox.offer(data)

    def _make_decoder(self) -> LineDecoder:
        return LineDecoder(irc.MAX_BODY_BYTES, MAX_DISCARD_BYTES)

    def _greet(self) -> None:
        pass  # IRC clients speak first

    def _receive_timeout(self) -> float | None:
        config = self._config
        if self.nick is None:
            return config.register_timeout_s
        return config.irc_timeout_s - config.irc_ping_s if self._ping_sent else config.irc_ping_s

    def _on_timeout(self) -> bool:
        if self.nick is None:
            return False  # registration timeout: the base class says goodbye
        if not self._ping_sent:
            self._ping_sent = True
            self._send(irc.format_line("", "PING", self._server))
            return True
        seconds = int(self._config.irc_timeout_s)
        self._set_reason(ev.LeaveReason.PING_TIMEOUT)
        self._send(irc.format_line("", "ERROR", f"Closing link: (Ping timeout: {seconds} s)"))
        return True

    def _reply_error(self, error: ProtocolError) -> None:
        if error.code == "line_too_long":
            self._numeric(irc.ERR_INPUTTOOLONG, "Input line was too long")
        elif error.code == "flood" and "kicked" not in error.message:
            self._send(irc.format_line(self._server, "NOTICE", self.nick or "*", error.message))
        else:  # the connection ends: timeout, endless line, flood kick
            self._send(irc.format_line("", "ERROR", f"Closing link: ({error.message})"))

    def _handle_all(self, lines: list[Line]) -> None:
        self._ping_sent = False  # the client is alive after all
        for line in lines:
            self._handle(line)
            if self._reason is not None:
                break
        self._say_pending()

    def _say_pending(self) -> None:
        """Hands the hub the channel messages queued by `_talk`, as one batch (as text mode
        does with the lines of one recv()): one lock round and one send per member."""
        if not self._pending_texts:
            return
        room, texts = self._pending_room, self._pending_texts
        self._pending_texts = []
        try:
            self._hub.say(self, *texts, room=room)
        except ChatError as error:
            self._chat_error(error, "PRIVMSG")

    def _handle(self, line: Line) -> None:
        if line.too_long:
            self._reply_error(ProtocolError("line_too_long", "too long"))
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
        if sub == "LS":
            self._cap_open = self.nick is None
            self._send(irc.format_line(self._server, "CAP", self.nick or "*", "LS", ""))
        elif sub == "LIST":
            self._send(irc.format_line(self._server, "CAP", self.nick or "*", "LIST", ""))
        elif sub == "REQ":
            self._cap_open = self.nick is None
            wanted = params[1] if len(params) > 1 else ""
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
        self._user = (username, clean_text(params[3]))
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
            if self._hub.userhost_of(nick) is not None:
                self._numeric(irc.ERR_NICKNAMEINUSE, nick, "Nickname is already in use")
                return
            self._wanted_nick = nick
            self._try_register()
            return
        try:
            self._hub.rename(self, nick)  # the NICK line comes back as an event
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
            self._set_reason(ev.LeaveReason.BAD_PASSWORD)
            return
        nick = self._wanted_nick
        self._userhost = f"~{self._user[0]}@irc"
        try:
            self._hub.register(self, nick, self._userhost)
        except NickTaken:  # someone else won the race for it since NICK
            self._wanted_nick = None
            self._numeric(irc.ERR_NICKNAMEINUSE, nick, "Nickname is already in use")
            return
        self.nick = nick
        log.info("%s registered as %s (IRC)", self._label(), nick)
        s, me = self._server, nick
        self._send(
            irc.numeric(s, me, irc.RPL_WELCOME, f"Welcome to the chat, {me}!{self._userhost}"),
            irc.numeric(s, me, irc.RPL_YOURHOST, f"Your host is {s}, running {irc.VERSION}"),
            irc.numeric(s, me, irc.RPL_CREATED, "This server is a threadroom chat server"),
            irc.format_line(s, irc.RPL_MYINFO, me, s, irc.VERSION, "i", "kos", "ko"),
            irc.numeric(s, me, irc.RPL_ISUPPORT, *irc.ISUPPORT, "are supported by this server"),
        )
        self._irc_lusers(())
        self._irc_motd(())

    # -- liveness and leaving ------------------------------------------------------------------

    def _irc_ping(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self._numeric(irc.ERR_NOORIGIN, "No origin specified")
            return
        self._send(irc.format_line(self._server, "PONG", self._server, params[0]))

    def _irc_pong(self, params: tuple[str, ...]) -> None:
        pass  # any line proves liveness (see _handle)

    def _irc_quit(self, params: tuple[str, ...]) -> None:
        message = self._text(params[0]) if params else ""
        self._quit_message = message
        self._set_reason(ev.LeaveReason.QUIT)
        self._hub.leave(self, ev.LeaveReason.QUIT, message)
        self._send(
            irc.format_line("", "ERROR", f"Closing link: ({irc.quit_text('quit', message)})")
        )

    # -- rooms ---------------------------------------------------------------------------------

    def _irc_join(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric(irc.ERR_NEEDMOREPARAMS, "JOIN", "Not enough parameters")
            return
        if params[0] == "0":  # leave every room
            for room in self._hub.rooms_of(self):
                self._hub.part(self, room, "")
            return
        keys = params[1].split(",") if len(params) > 1 else []
        for i, room in enumerate(params[0].split(",")):
            if room_error(room) is not None:
                self._numeric(irc.ERR_NOSUCHCHANNEL, room or "*", "No such channel")
                continue
            try:
                self._hub.enter(self, room, keys[i] if i < len(keys) else "", show_if_in=False)
            except ChatError as error:
                self._chat_error(error, "JOIN")

    def _irc_part(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric(irc.ERR_NEEDMOREPARAMS, "PART", "Not enough parameters")
            return
        message = self._text(params[1]) if len(params) > 1 else ""
        for room in params[0].split(","):
            try:
                self._hub.part(self, room, message)
            except ChatError as error:
                self._chat_error(error, "PART")

    def _irc_names(self, params: tuple[str, ...]) -> None:
        rooms = params[0].split(",") if params else list(self._hub.rooms_of(self))
        for room in rooms:
            found = self._hub.room_names(room, self)
            if found is None:
                self._numeric(irc.RPL_ENDOFNAMES, room, "End of /NAMES list")
                continue
            name, users = found
            modes = self._hub.room_modes(name)
            secret = modes is not None and modes[2]
            self._send(irc.names_lines(self._server, self._me, name, users, secret))
        if not params:
            self._numeric(irc.RPL_ENDOFNAMES, "*", "End of /NAMES list")

    def _irc_list(self, params: tuple[str, ...]) -> None:
        wanted = {r.lower() for r in params[0].split(",")} if params else None
        lines = [irc.numeric(self._server, self._me, irc.RPL_LISTSTART, "Channel", "Users Name")]
        for info in self._hub.list_rooms(self).rooms:
            if wanted is None or info.name.lower() in wanted:
                lines.append(
                    irc.numeric(
                        self._server, self._me, irc.RPL_LIST, info.name, str(info.count), info.topic
                    )
                )
        lines.append(irc.numeric(self._server, self._me, irc.RPL_LISTEND, "End of /LIST"))
        self._send(*lines)

    def _irc_topic(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric(irc.ERR_NEEDMOREPARAMS, "TOPIC", "Not enough parameters")
            return
        room = params[0]
        if len(params) > 1:
            self._hub.set_topic(self, room, self._text(params[1]))
            return
        reply = self._hub.topic(room)
        modes = self._hub.room_modes(room)
        if modes is not None and modes[2] and not self._hub.is_in(self, room):
            raise NotInRoom(reply.room)
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
                self._hub.kick(self, params[0], nick, reason)
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
        modes = self._hub.room_modes(target)
        if modes is None:
            raise NoSuchRoom(target)
        name, key, secret = modes
        if len(params) == 1:
            shown = "+n" + ("s" if secret else "") + ("k" if key else "")
            args = [key] if key and self._hub.is_in(self, name) else []
            self._numeric(irc.RPL_CHANNELMODEIS, name, shown, *args)
            return
        changes, lists = self._parse_modes(params[1], list(params[2:]))
        for letter in lists:  # list queries (bans, exceptions): we keep no lists
            end = {"b": irc.RPL_ENDOFBANLIST, "e": "349", "I": "347"}[letter]
            self._numeric(end, name, "End of list")
        if changes:
            self._hub.set_modes(self, name, changes)

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
        if self._hub.userhost_of(target) is None:
            raise NoSuchNick(target)
        if target.lower() != self._me.lower():
            self._numeric(irc.ERR_USERSDONTMATCH, "Cannot change mode for other users")
        elif not params:
            self._numeric(irc.RPL_UMODEIS, "+")
        elif any(c not in "+-iw" for c in params[0]):
            self._numeric(irc.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")
        # +i / +w: accepted and meaningless here (nobody is listed by WHO without a channel)

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
            self._pending_texts.append(text)
            return
        self._say_pending()
        for target in targets:
            try:
                if target.startswith("#"):
                    if ctcp:
                        self._hub.act(self, text, target, echo=False)
                    else:
                        self._hub.say(self, text, room=target, notice=notice)
                else:
                    self._hub.whisper(
                        self, target, text, echo=False, notice=notice, action=bool(ctcp)
                    )
            except ChatError as error:
                if not notice:
                    self._chat_error(error, command)

    # -- information ---------------------------------------------------------------------------

    def _irc_who(self, params: tuple[str, ...]) -> None:
        mask = params[0] if params else "*"
        lines = []
        if mask.startswith("#"):
            found = self._hub.room_names(mask, self)
            entries = [(u.lstrip("@"), u.startswith("@")) for u in found[1]] if found else []
            room = found[0] if found else mask
        else:
            entries = [(mask, False)] if self._hub.userhost_of(mask) else []
            room = "*"
        for nick, op in entries:
            who = self._hub.userhost_of(nick)
            if who is None:
                continue
            user, _, host = who[1].partition("@")
            lines.append(
                irc.numeric(
                    self._server,
                    self._me,
                    irc.RPL_WHOREPLY,
                    room,
                    user,
                    host,
                    self._server,
                    who[0],
                    "H@" if op else "H",
                    f"0 {who[0]}",
                )
            )
        lines.append(irc.numeric(self._server, self._me, irc.RPL_ENDOFWHO, mask, "End of WHO"))
        self._send(*lines)

    def _irc_whois(self, params: tuple[str, ...]) -> None:
        if not params:
            self._numeric(irc.ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        nick = params[-1]
        who = self._hub.userhost_of(nick)
        rooms = self._hub.visible_rooms_of(nick, self)
        if who is None or rooms is None:
            self._numeric(irc.ERR_NOSUCHNICK, nick, "No such nick/channel")
            self._numeric(irc.RPL_ENDOFWHOIS, nick, "End of /WHOIS list")
            return
        user, _, host = who[1].partition("@")
        s, me = self._server, self._me
        lines = [irc.numeric(s, me, irc.RPL_WHOISUSER, who[0], user, host, "*", who[0])]
        if rooms:
            lines.append(irc.numeric(s, me, irc.RPL_WHOISCHANNELS, who[0], " ".join(rooms)))
        lines.append(irc.numeric(s, me, irc.RPL_WHOISSERVER, who[0], s, "threadroom chat"))
        lines.append(irc.numeric(s, me, irc.RPL_ENDOFWHOIS, who[0], "End of /WHOIS list"))
        self._send(*lines)

    def _irc_lusers(self, params: tuple[str, ...]) -> None:
        users, rooms = len(self._hub), self._hub.room_count()
        s, me = self._server, self._me
        self._send(
            irc.numeric(s, me, irc.RPL_LUSERCLIENT, f"There are {users} users on 1 server"),
            irc.numeric(s, me, irc.RPL_LUSERCHANNELS, str(rooms), "channels formed"),
            irc.numeric(s, me, irc.RPL_LUSERME, f"I have {users} clients and 0 servers"),
        )

    def _irc_motd(self, params: tuple[str, ...]) -> None:
        self._numeric(irc.ERR_NOMOTD, "MOTD File is missing")

    # -- helpers -------------------------------------------------------------------------------

    @property
    def _me(self) -> str:
        return self.nick or "*"

    def _send(self, *lines: bytes) -> None:
        """Queues reply lines; a client too slow to take them is dropped like any other."""
        if self._outbox.offer(b"".join(lines)):
            self.flush()
        else:
            self.drop(ev.LeaveReason.SENDQ_EXCEEDED)

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
            case _:
                log.warning("%s: unexpected %r", self._label(), error)
