"""Pure codecs: bytes <-> requests and events for each wire format (text, JSON Lines, IRC).

Nothing in this package touches a socket, a thread or a clock. `text` and `jsonl` turn one clean
line into a request (`parse`) and an event into bytes (`encode`); `irc` parses IRC lines and
formats IRC replies. `EncodeCache` is the one place where an encoded form is remembered, so that
a broadcast to 100 members of one wire format encodes the event once.
"""

from __future__ import annotations

from collections.abc import Callable


class EncodeCache(dict[str, bytes]):
    """The encoded forms of one event during one fan-out, by form ("text", "text[", "irc").

    The hub makes one for each event it publishes and passes it to every recipient's
    `deliver()`; each recipient asks for its form, and only the first one of each form encodes
    (`encode_once`). The events themselves stay immutable: the cache lives as long as one
    fan-out. A plain dict underneath, because this is the hot path of every broadcast.

    Thread safety: none needed. A cache is made, used and dropped inside one critical section
    of the hub, by the thread holding the hub lock.
    """

    __slots__ = ()


def encode_once(cache: EncodeCache | None, form: str, encode: Callable[[], bytes]) -> bytes:
    """The bytes of `form`: from `cache` if a member of this fan-out encoded them already,
    else `encode()` (remembered in `cache` when there is one; a reply has none)."""
    if cache is None:
        return encode()
    data = cache.get(form)
    if data is None:
        data = cache[form] = encode()
    return data
