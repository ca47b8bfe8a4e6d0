"""Tab completion of /commands and of the nicknames of people online, irssi style.

The completer holds no state of its own: it asks a callable for the current snapshot (an
immutable tuple published by the connection thread), so it is safe to call from the UI thread
while events arrive, and it is tested without an application.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from client.commands import ALIASES, COMMAND_NAMES

# irssi's `completion_char`: completing a nick at the start of a line addresses that person.
ADDRESS_SUFFIX = ": "


class ChatCompleter(Completer):
    """Completes `/com<Tab>` to a command and `al<Tab>` to a nickname.

    At the start of a line a nickname completes to `alice: `; elsewhere to `alice`, and after
    `/msg ` to `alice `. Nicks are offered in the order the snapshot gives (the UI puts the
    people who spoke last first, as irssi does); my own nick is never offered.

    Args:
        nicks: returns the nicknames to offer (the people in my current room), most relevant
            first.
        own_nick: returns my current nickname.
        rooms: returns the rooms I am in: a word starting with `#` completes to one of them.
        everyone: returns the nicknames to offer after `/msg ` (the people in any of my rooms:
            a private message may go to someone outside the current room); default `nicks`.
    """

    def __init__(
        self,
        nicks: Callable[[], Sequence[str]],
        own_nick: Callable[[], str],
        rooms: Callable[[], Sequence[str]] = tuple,
        everyone: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self._nicks = nicks
        self._own_nick = own_nick
        self._rooms = rooms
        self._everyone = everyone or nicks

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        before = document.text_before_cursor
        word = before.rsplit(" ", 1)[-1]
        if before.startswith("/") and " " not in before:
            typed = before[1:].lower()
            for name in (*COMMAND_NAMES, *sorted(ALIASES)):
                if name.startswith(typed):
                    yield Completion("/" + name + " ", start_position=-len(before))
            return
        if not word:
            return
        if word.startswith("#"):
            for room in self._rooms():
                if room.lower().startswith(word.lower()):
                    yield Completion(room + " ", start_position=-len(word))
            return
        candidates = self._nicks
        if word == before:
            suffix = ADDRESS_SUFFIX
        elif before.lower().startswith(("/msg ", "/query ")) and before.count(" ") == 1:
            suffix = " "
            candidates = self._everyone
        else:
            suffix = ""
        own = self._own_nick().lower()
        folded = word.lower()
        for nick in candidates():
            if nick.lower().startswith(folded) and nick.lower() != own:
                yield Completion(nick + suffix, start_position=-len(word), display=nick)
