"""What a typed line means: "/nick bob" -> protocol message, local command or usage error. PURE.

The server's commands (`/msg`, `/me`, `/nick`, `/who`, `/users`, `/quit`, the room commands)
become JSON Lines messages (docs/protocol.md); `/help` and `/clear` are the client's own.
Unknown commands are answered here, locally, so a typo is never sent to the room.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from client.wire import MAX_LINE_BYTES, ROOM_PREFIX

ProtocolMessage = dict[str, Any]


@dataclass(frozen=True)
class Send:
    """Messages to send to the server, in order."""

    messages: tuple[ProtocolMessage, ...]


@dataclass(frozen=True)
class Local:
    """A command the client carries out itself (`help`, `clear`)."""

    name: str


@dataclass(frozen=True)
class Quit:
    """Leave the chat, with an optional reason shown to the others."""

    reason: str


@dataclass(frozen=True)
class Usage:
    """The line could not be understood: show this text, send nothing."""

    text: str


Parsed = Send | Local | Quit | Usage | None

# (usage, description) of every command, in the order /help lists them.
SERVER_COMMANDS: dict[str, tuple[str, str]] = {
    "msg": ("/msg NICK text", "private message to NICK"),
    "me": ("/me text", "action: * alice waves"),
    "nick": ("/nick NEW", "change your nickname"),
    "who": ("/who", "list the people in the current room"),
    "users": ("/users", "list everyone online, in every room"),
    "join": ("/join #room [key]", "join a room and talk there (or switch to it)"),
    "part": ("/part [#room] [reason]", "leave a room (the current one by default)"),
    "rooms": ("/rooms", "list the rooms and how many are in each"),
    "topic": ("/topic [text]", "show or set the current room's topic"),
    "kick": ("/kick NICK [reason]", "operators: remove NICK from the current room"),
    "key": ("/key [KEY]", "operators: set the room's key (no KEY: remove it)"),
    "secret": ("/secret on|off", "operators: hide the room from /rooms, or show it"),
    "history": ("/history [N]", "the room's history: the last N messages, then older (PageUp)"),
    "away": ("/away [reason]", "mark yourself away (no reason: back)"),
    "quit": ("/quit [reason]", "leave the chat (also Ctrl-D or Ctrl-C)"),
    "help": ("/help", "this list"),
}
CLIENT_COMMANDS: dict[str, tuple[str, str]] = {
    "clear": ("/clear", "clear the screen (also Ctrl-L)"),
}
# irssi habits that mean the same thing here.
ALIASES: dict[str, str] = {
    "names": "who",
    "query": "msg",
    "exit": "quit",
    "leave": "part",
    "j": "join",
}

COMMAND_NAMES: tuple[str, ...] = tuple(sorted({*SERVER_COMMANDS, *CLIENT_COMMANDS}))


def help_lines() -> list[str]:
    """The text of /help: the server's commands, then the client's own."""
    lines = ["Commands (sent to the server):"]
    lines += [f"  {usage:<22} {text}" for usage, text in SERVER_COMMANDS.values()]
    lines.append("Client commands:")
    lines += [f"  {usage:<22} {text}" for usage, text in CLIENT_COMMANDS.values()]
    lines.append(f"  {'//text':<22} send a message that starts with /")
    lines.append("Keys: Tab completes nicks and commands, Up/Down history, Emacs editing keys.")
    return lines


def _encoded_size(message: ProtocolMessage) -> int:
    return len(json.dumps(message, ensure_ascii=False).encode("utf-8")) + 1  # + newline


# A message longer than the server's line limit is split into several that each fit, as irssi
# does, instead of being dropped by the server.
def split_text(template: ProtocolMessage, text: str, max_bytes: int = MAX_LINE_BYTES) -> list[str]:
    """Split `text` into pieces so that `template` with `"text": piece` encodes in `max_bytes`.

    Splits at the last space of a piece when there is one, so words stay whole.
    """
    if _encoded_size({**template, "text": text}) <= max_bytes:
        return [text]
    budget = max_bytes - _encoded_size({**template, "text": ""})
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        cost = len(json.dumps(ch, ensure_ascii=False).encode("utf-8")) - 2
        if used + cost > budget:
            piece = "".join(current)
            cut = piece.rfind(" ")
            if cut > len(piece) // 2:
                pieces.append(piece[:cut])
                rest = piece[cut + 1 :]
            else:
                pieces.append(piece)
                rest = ""
            current = list(rest)
            used = sum(len(json.dumps(c, ensure_ascii=False).encode("utf-8")) - 2 for c in rest)
        current.append(ch)
        used += cost
    if current:
        pieces.append("".join(current))
    return [p for p in pieces if p.strip()]


def _texts(template: ProtocolMessage, text: str) -> Send:
    return Send(tuple({**template, "text": piece} for piece in split_text(template, text)))


def parse(line: str) -> Parsed:
    """Interpret one line typed by the user.

    Returns:
        `Send`, `Local`, `Quit`, `Usage`, or None for a blank line.
    """
    if not line.strip():
        return None
    if line.startswith("//"):
        return _texts({"type": "message"}, line[1:])
    if not line.startswith("/"):
        return _texts({"type": "message"}, line)
    name, _, rest = line[1:].partition(" ")
    name = ALIASES.get(name.lower(), name.lower())
    rest = rest.strip()
    if name == "msg":
        to, _, text = rest.partition(" ")
        if not to or not text.strip():
            return Usage("usage: " + SERVER_COMMANDS["msg"][0])
        return _texts({"type": "private", "to": to}, text.strip())
    if name == "me":
        if not rest:
            return Usage("usage: " + SERVER_COMMANDS["me"][0])
        return _texts({"type": "action"}, rest)
    if name == "history":  # the UI names its current room; again: older pages (#11)
        if rest and not (rest.isdigit() and rest.isascii() and 0 < int(rest) <= 1000):
            return Usage("usage: " + SERVER_COMMANDS["history"][0] + " (N: 1 to 1000)")
        return Send(({"type": "history", "limit": int(rest)} if rest else {"type": "history"},))
    if name == "nick":
        if not rest or " " in rest:
            return Usage("usage: " + SERVER_COMMANDS["nick"][0])
        return Send(({"type": "nick", "nick": rest},))
    if name == "who":  # the UI names its current room (the server's may differ)
        return Send(({"type": "who"},))
    if name == "users":
        return Send(({"type": "users"},))
    if name == "join":
        room, _, key = rest.partition(" ")
        if not room:
            return Usage("usage: " + SERVER_COMMANDS["join"][0])
        if not room.startswith(ROOM_PREFIX):
            room = ROOM_PREFIX + room
        join: ProtocolMessage = {"type": "join", "room": room}
        if key.strip():
            join["key"] = key.strip()
        return Send((join,))
    if name == "part":
        part: ProtocolMessage = {"type": "part"}
        if rest.startswith(ROOM_PREFIX):
            room, _, rest = rest.partition(" ")
            part["room"] = room
        if rest.strip():
            part["message"] = rest.strip()
        return Send((part,))
    if name == "rooms":
        return Send(({"type": "rooms"},))
    if name == "away":
        return Send(({"type": "away", "text": rest.strip()},))
    if name == "topic":
        return Send(({"type": "topic", "topic": rest} if rest else {"type": "topic"},))
    if name == "kick":
        target, _, reason = rest.partition(" ")
        if not target:
            return Usage("usage: " + SERVER_COMMANDS["kick"][0])
        kick: ProtocolMessage = {"type": "kick", "nick": target}
        if reason.strip():
            kick["reason"] = reason.strip()
        return Send((kick,))
    if name == "key":
        return Send(({"type": "mode", "key": rest},))
    if name == "secret":
        if rest.lower() not in ("on", "off"):
            return Usage("usage: " + SERVER_COMMANDS["secret"][0])
        return Send(({"type": "mode", "secret": rest.lower() == "on"},))
    if name == "quit":
        return Quit(rest)
    if name in ("help", "clear"):
        return Local(name)
    return Usage(f"unknown command /{name} (try /help)")
