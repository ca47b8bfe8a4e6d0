"""The IRC wire format (RFC 1459/2812, modern IRC): parse client lines, format server lines.

Pure: no sockets, threads or clocks. `parse()` turns one line into an `IrcMessage`;
`format_line()` builds one CRLF-terminated line of at most 512 bytes; `encode()` turns a chat
event into the line(s) an IRC client expects. The dialect (chat/dialects/irc.py) owns the state
machine.
"""

from __future__ import annotations

import calendar
import dataclasses
import re
import time
from dataclasses import dataclass, field

from chat import events as ev
from chat.protocol import (
    AWAY_MAX_CHARS,
    KEY_MAX_CHARS,
    NICK_MAX_CHARS,
    ROOM_MAX_CHARS,
    TOPIC_MAX_CHARS,
)
from chat.wire import EncodeCache, encode_once

NAME = "irc"
VERSION = "threadroom-0.1.0"
# RFC 1459: a line is at most 512 bytes, CRLF included. Longer input is refused with 417
# (ERR_INPUTTOOLONG); our own output is truncated to fit, at a UTF-8 character boundary.
MAX_LINE_BYTES = 512
MAX_BODY_BYTES = MAX_LINE_BYTES - 2
# Message tags (IRCv3) are allowed in front of a line, up to 4094 bytes plus the space; we offer
# no capability that makes clients send them, but a line carrying some is still parsed.
MAX_TAGS_BYTES = 4096
# How many targets one PRIVMSG / NOTICE may name (ISUPPORT TARGMAX).
MAX_TARGETS = 4


def isupport(rooms_per_user: int) -> tuple[str, ...]:
    """The RPL_ISUPPORT tokens: what this server allows, for clients that adapt to it."""
    return (
        "CHANTYPES=#",
        f"CHANLIMIT=#:{rooms_per_user}",
        f"CHANNELLEN={ROOM_MAX_CHARS}",
        f"NICKLEN={NICK_MAX_CHARS}",
        f"TOPICLEN={TOPIC_MAX_CHARS}",
        f"KEYLEN={KEY_MAX_CHARS}",
        f"AWAYLEN={AWAY_MAX_CHARS}",
        "CASEMAPPING=ascii",
        f"TARGMAX=PRIVMSG:{MAX_TARGETS},NOTICE:{MAX_TARGETS},JOIN:,PART:,NAMES:,KICK:1,WHOIS:1",
        "CHANMODES=,k,,ns",
        "PREFIX=(o)@",
        "MODES=4",
        "NETWORK=threadroom",
    )


# Numerics by name (https://modern.ircdocs.horse/), so the session reads like the spec.
RPL_WELCOME = "001"
RPL_YOURHOST = "002"
RPL_CREATED = "003"
RPL_MYINFO = "004"
RPL_ISUPPORT = "005"
RPL_UMODEIS = "221"
RPL_AWAY = "301"
RPL_UNAWAY = "305"
RPL_NOWAWAY = "306"
RPL_USERHOST = "302"
RPL_ISON = "303"
RPL_LUSERCLIENT = "251"
RPL_TRYAGAIN = "263"  # cluster (#12): the cluster link is down, try again
RPL_LUSERCHANNELS = "254"
RPL_LUSERME = "255"
RPL_LOCALUSERS = "265"
RPL_GLOBALUSERS = "266"
RPL_WHOISUSER = "311"
RPL_WHOISSERVER = "312"
RPL_ENDOFWHO = "315"
RPL_ENDOFWHOIS = "318"
RPL_WHOISCHANNELS = "319"
RPL_LISTSTART = "321"
RPL_LIST = "322"
RPL_LISTEND = "323"
RPL_CHANNELMODEIS = "324"
RPL_NOTOPIC = "331"
RPL_TOPIC = "332"
RPL_TOPICWHOTIME = "333"
RPL_WHOREPLY = "352"
RPL_NAMREPLY = "353"
RPL_ENDOFNAMES = "366"
RPL_ENDOFBANLIST = "368"
RPL_MOTD = "372"
RPL_MOTDSTART = "375"
RPL_ENDOFMOTD = "376"
ERR_NOSUCHNICK = "401"
ERR_NOSUCHCHANNEL = "403"
ERR_TOOMANYCHANNELS = "405"
ERR_CANNOTSENDTOCHAN = "404"
ERR_NOORIGIN = "409"
ERR_INVALIDCAPCMD = "410"
ERR_NORECIPIENT = "411"
ERR_NOTEXTTOSEND = "412"
ERR_INPUTTOOLONG = "417"
ERR_UNKNOWNCOMMAND = "421"
ERR_NOMOTD = "422"
ERR_NONICKNAMEGIVEN = "431"
ERR_ERRONEUSNICKNAME = "432"
ERR_NICKNAMEINUSE = "433"
ERR_USERNOTINCHANNEL = "441"
ERR_NOTONCHANNEL = "442"
ERR_NOTREGISTERED = "451"
ERR_NEEDMOREPARAMS = "461"
ERR_ALREADYREGISTERED = "462"
ERR_PASSWDMISMATCH = "464"
ERR_UNKNOWNMODE = "472"
ERR_BADCHANNELKEY = "475"
ERR_BADCHANMASK = "476"
ERR_CHANOPRIVSNEEDED = "482"
ERR_INVALIDKEY = "525"
ERR_UMODEUNKNOWNFLAG = "501"
ERR_USERSDONTMATCH = "502"


@dataclass(frozen=True)
class IrcMessage:
    """One parsed line: `command` upper-cased, `params` with the trailing one last."""

    command: str
    params: tuple[str, ...] = ()
    source: str = ""
    tags: dict[str, str] = field(default_factory=dict, compare=False)


def parse(line: str) -> IrcMessage | None:
    """One client line (without CRLF) as a message; None for an empty line (ignored)."""
    tags: dict[str, str] = {}
    rest = line.lstrip(" ")
    if rest.startswith("@"):
        raw_tags, _, rest = rest[1:].partition(" ")
        for item in raw_tags.split(";"):
            key, _, value = item.partition("=")
            if key:
                tags[key] = value
        rest = rest.lstrip(" ")
    source = ""
    if rest.startswith(":"):
        source, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    head, sep, trailing = rest.partition(" :")
    if rest.startswith(":"):  # no middle params, only a trailing one
        head, sep, trailing = "", " :", rest[1:]
    # Parameters are separated by spaces only (RFC 1459 2.3.1), as IRC clients split them:
    # str.split() would also split at tabs, \x1c-\x1f, NBSP or U+3000 inside a parameter.
    words = [word for word in head.split(" ") if word]
    if not words:
        return None
    params = words[1:]
    if sep:
        params.append(trailing)
    return IrcMessage(words[0].upper(), tuple(params), source, tags)


# Never inside a line we send: CR or LF would end it early (the rest would read as a second line
# from the server: a forgery), NUL truncates it in C clients.
_LINE_BREAKERS = str.maketrans("", "", "\r\n\0")
# A lone surrogate (from a JSON "\ud800") cannot be encoded: it becomes U+FFFD, as clean_text does.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _sendable(text: str) -> str:
    # Printable ASCII (nearly every parameter: numerics, nicknames, most chat) has nothing to
    # remove or replace: one flag and one scan in C instead of a copy and a regex (#14, burst).
    if text.isascii() and text.isprintable():
        return text
    return _SURROGATE_RE.sub("\ufffd", text.translate(_LINE_BREAKERS))


def format_line(source: str, command: str, *params: str) -> bytes:
    """`:source COMMAND p1 p2 :last` + CRLF, truncated to 512 bytes at a character boundary.

    Whatever the parameters hold, the result is exactly one line with exactly these
    parameters: CR, LF and NUL are removed; a middle parameter cannot hold a space, start with
    ':' or be empty (it would shift the ones after it), so those become "_" or "*"; the last
    parameter gets a colon when it needs one (empty, has a space, starts with ':').
    """
    parts = [f":{_sendable(source).replace(' ', '_')}"] if source else []
    parts.append(command)
    for i, raw in enumerate(params):
        param = _sendable(raw)
        if i == len(params) - 1:
            if not param or " " in param or param.startswith(":"):
                param = ":" + param
        else:
            param = param.replace(" ", "_") or "*"
            if param.startswith(":"):
                param = "_" + param[1:]
        parts.append(param)
    body = " ".join(parts).encode("utf-8")
    if len(body) > MAX_BODY_BYTES:
        body = body[:MAX_BODY_BYTES]
        while body and (body[-1] & 0xC0) == 0x80:  # a cut continuation byte: drop the char
            body = body[:-1]
        if body and body[-1] >= 0xC0:  # a lead byte without its continuation
            body = body[:-1]
    return body + b"\r\n"


def numeric(server: str, nick: str, code: str, *params: str) -> bytes:
    """A numeric reply to `nick` ("*" before it has one)."""
    return format_line(server, code, nick or "*", *params)


# IRC formatting: bold, colour (with its "fg,bg" digits), hex colour, reset, monospace,
# reverse, italics, strikethrough, underline. Stripped from all text (docs/irc.md).
_FORMATTING_RE = re.compile(
    r"\x03(?:\d{1,2}(?:,\d{1,2})?)?|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)


def strip_formatting(text: str) -> str:
    return _FORMATTING_RE.sub("", text)


def split_ctcp(text: str) -> tuple[str, str] | None:
    """("ACTION", "waves") for "\\x01ACTION waves\\x01"; None if `text` is not CTCP."""
    if not text.startswith("\x01"):
        return None
    body = text[1:].removesuffix("\x01")
    verb, _, rest = body.partition(" ")
    return verb.upper(), rest


def quit_text(reason: str, message: str) -> str:
    """The QUIT message IRC users see for a leave reason of docs/protocol.md."""
    if reason == ev.LeaveReason.QUIT:
        return f"Quit: {message}" if message else "Quit"
    return reason[:1].upper() + reason[1:]


def encode(event: ev.Event, me: str, server: str, cache: EncodeCache | None = None) -> bytes:
    """The line(s) the IRC user `me` receives for `event`; b"" for nothing. Room events read
    the same for every IRC member, so a fan-out encodes them once through `cache`."""
    if cache is not None and not isinstance(event, ev.PrivateMessage):
        data = cache.get(NAME)  # the hot path of every broadcast: encoded by another member
        if data is not None:
            return data
    if isinstance(event, ev.Batch):
        return encode_once(cache, NAME, lambda: b"".join(_room_event(e) for e in event.events))
    if isinstance(event, ev.PrivateMessage):
        if event.sender == me and event.recipient != me:
            return b""  # the sender's copy: IRC clients show their own lines themselves
        return _room_event(event)
    if isinstance(event, ev.RoomEvent):
        return encode_once(cache, NAME, lambda: _room_event(event))
    return _reply(event, me, server)


def _room_event(event: ev.RoomEvent) -> bytes:
    match event:
        case ev.Message(sender=nick, userhost=uh, room=room, text=text, notice=notice):
            return format_line(f"{nick}!{uh}", "NOTICE" if notice else "PRIVMSG", room, text)
        case ev.Action(sender=nick, userhost=uh, room=room, text=text):
            return format_line(f"{nick}!{uh}", "PRIVMSG", room, f"\x01ACTION {text}\x01")
        case ev.PrivateMessage(sender=nick, userhost=uh, recipient=to, text=text):
            if event.action:
                text = f"\x01ACTION {text}\x01"
            return format_line(f"{nick}!{uh}", "NOTICE" if event.notice else "PRIVMSG", to, text)
        case ev.Joined(nick=nick, userhost=uh, room=room):
            return format_line(f"{nick}!{uh}", "JOIN", room)
        case ev.Parted(nick=nick, userhost=uh, room=room, message=message):
            if message:
                return format_line(f"{nick}!{uh}", "PART", room, message)
            return format_line(f"{nick}!{uh}", "PART", room)
        case ev.Kicked(nick=nick, by=by, userhost=uh, room=room, reason=reason):
            return format_line(f"{by}!{uh}", "KICK", room, nick, reason)
        case ev.TopicChanged(by=by, userhost=uh, room=room, topic=topic):
            return format_line(f"{by}!{uh}", "TOPIC", room, topic)
        case ev.ModeChanged(by=by, userhost=uh, room=room, modes=modes, args=args):
            return format_line(f"{by}!{uh}", "MODE", room, modes, *args)
        case ev.Left(nick=nick, userhost=uh, reason=reason, message=message):
            return format_line(f"{nick}!{uh}", "QUIT", quit_text(reason, message))
        case ev.Renamed(old=old, new=new, userhost=uh):
            return format_line(f"{old}!{uh}", "NICK", new)
    raise TypeError(f"no IRC form for {event!r}")


def names_lines(server: str, me: str, room: str, users: tuple[str, ...], secret: bool) -> bytes:
    """RPL_NAMREPLY lines (as many as 512 bytes need) and RPL_ENDOFNAMES."""
    kind = "@" if secret else "="
    lines = []
    head = len(format_line(server, RPL_NAMREPLY, me, kind, room, ""))
    batch: list[str] = []
    size = head
    for user in users:
        if batch and size + len(user.encode()) + 1 > MAX_LINE_BYTES:
            lines.append(numeric(server, me, RPL_NAMREPLY, kind, room, " ".join(batch)))
            batch, size = [], head
        batch.append(user)
        size += len(user.encode()) + 1
    if batch:
        lines.append(numeric(server, me, RPL_NAMREPLY, kind, room, " ".join(batch)))
    lines.append(numeric(server, me, RPL_ENDOFNAMES, room, "End of /NAMES list"))
    return b"".join(lines)


def topic_lines(server: str, me: str, room: str, topic: str, by: str, when: float) -> bytes:
    """RPL_TOPIC + RPL_TOPICWHOTIME, or RPL_NOTOPIC."""
    if not topic:
        return numeric(server, me, RPL_NOTOPIC, room, "No topic is set")
    return numeric(server, me, RPL_TOPIC, room, topic) + numeric(
        server, me, RPL_TOPICWHOTIME, room, by, str(int(when))
    )


def _reply(event: ev.Event, me: str, server: str) -> bytes:
    match event:
        case ev.RoomView(room=room, users=users, topic=topic, topic_by=by, topic_ts=when):
            # After our own JOIN: the topic if there is one, then the names.
            head = topic_lines(server, me, room, topic, by, when) if topic else b""
            return head + names_lines(server, me, room, users, event.secret)
        case ev.Notice(text=text):
            return format_line(server, "NOTICE", me or "*", text)
        case ev.Goodbye(reason=reason):
            return format_line("", "ERROR", f"Closing link: ({quit_text('quit', reason)})")
        case ev.Error(message=message):
            return format_line(server, "NOTICE", me or "*", message)
    raise TypeError(f"no IRC form for {event!r}")


# -- history (#11): IRCv3 batch, server-time, message-tags, draft/chathistory -----------------

# The capabilities this server offers (CAP LS) when it keeps history (none otherwise).
CAPS = ("batch", "message-tags", "server-time")
CHATHISTORY_CAP = "draft/chathistory"


def history_isupport(limit: int) -> tuple[str, ...]:
    """The ISUPPORT tokens of a server keeping history, sent in an RPL_ISUPPORT line of their
    own (a line should hold at most 13 tokens): CHATHISTORY is the most one answer holds."""
    return (f"CHATHISTORY={limit}", "MSGREFTYPES=msgid,timestamp")


def server_time(ts: float) -> str:
    """IRCv3 server-time: "2026-11-30T09:58:01.123Z" (UTC, milliseconds)."""
    seconds = int(ts)
    millis = round((ts - seconds) * 1000)
    if millis == 1000:
        seconds, millis = seconds + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def parse_server_time(text: str) -> float | None:
    """The Unix time of a server-time string, or None if it is not one."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z?", text)
    if match is None:
        return None
    try:
        parsed = time.strptime(match[1], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    fraction = float(f"0.{match[2]}") if match[2] else 0.0
    return calendar.timegm(parsed) + fraction


def history_lines(
    event: ev.History, server: str, caps: frozenset[str] | set[str], ref: str
) -> bytes:
    """Stored messages for an IRC client: in a `chathistory` batch with `@time=` (and `msgid=`
    with message-tags) for clients that negotiated them; else plain lines with the time in
    front of the text ("[09:58:01] hi"), as ZNC's playback does. A client with `server-time`
    but no `batch` (irssi 1.4, which does not show the tag's time by default) gets both: the tag,
    and the time in the text, so it can tell history from live traffic."""
    batch = "batch" in caps
    timed = "server-time" in caps
    tagged = "message-tags" in caps
    lines: list[bytes] = []
    if batch:
        lines.append(format_line(server, "BATCH", f"+{ref}", "chathistory", event.target))
    for item in event.events:
        tags = []
        if batch:
            tags.append(f"batch={ref}")
        if timed:
            tags.append(f"time={server_time(item.ts)}")
        if tagged:
            tags.append(f"msgid={item.id}")
        if not (batch and timed) and isinstance(item, ev.Message | ev.Action | ev.PrivateMessage):
            stamp = time.strftime("[%H:%M:%S] ", time.localtime(item.ts))
            item = dataclasses.replace(item, text=stamp + item.text)
        line = _room_event(item)
        lines.append((f"@{';'.join(tags)} ".encode() if tags else b"") + line)
    if batch:
        lines.append(format_line(server, "BATCH", f"-{ref}"))
    return b"".join(lines)
