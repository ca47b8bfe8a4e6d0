"""Properties of the pure layers, checked with hypothesis on inputs nobody thought of.

Every decoder takes any input and either returns a result or raises the documented
`ProtocolError`; framing does not depend on how the bytes are split; every encoder, fed events
built from arbitrary strings after the hub's cleaning (`clean_text`), writes whole lines that
hold nothing a terminal or a renderer would act on. Small limits (a line of 8 bytes, 40 to
give up) let hypothesis reach every edge of the decoder quickly.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from chat import events as ev
from chat.protocol import (
    MAX_DISCARD_BYTES,
    MAX_LINE_BYTES,
    EndlessLine,
    Line,
    LineDecoder,
    ProtocolError,
    clean_text,
)
from chat.wire import EncodeCache
from chat.wire import irc as wire_irc
from chat.wire import jsonl as wire_json
from chat.wire import text as wire_text

# Enough examples to find the edges, few enough that the whole file takes a few seconds; no
# deadline, so that a busy machine cannot fail an example for being slow.
PROPERTY = settings(max_examples=100, deadline=None)

# What must never reach a client from someone's input: C0 controls (a tab becomes a space),
# DEL, C1 controls, and the bidi embeddings, overrides, isolates and marks.
_FORBIDDEN = "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
FORBIDDEN_RE = re.compile(_FORBIDDEN)
# IRC wraps actions in \x01 (CTCP) itself: that one is ours, not the sender's.
FORBIDDEN_IRC_RE = re.compile(_FORBIDDEN.replace("\x00-\x1f", "\x00\x02-\x1f"))

# Characters that break things, mixed into everything else (including lone surrogates, which a
# JSON client can send as "\ud800").
NASTY = (
    "\r\n\x00\x01\x07\x08\t\x0b\x0c\x1b\x7f\x85\x9b\x9c\u061c\u200e\u200f\u202a\u202e"
    '\u2066\u2069\u2028\u3000\xa0\ufeff\ud800\udfff :;#@!{}[]"\\/%,é日😃'
)
# (A list joined, not st.text: st.text leaves the surrogates out of a mixed alphabet.)
hostile_text = st.lists(
    st.one_of(st.sampled_from(NASTY), st.characters(exclude_categories=()))
).map("".join)
# Names, texts and reasons as the hub passes them on: cleaned.
cleaned = hostile_text.map(clean_text)


# -- LineDecoder -----------------------------------------------------------------------------

SMALL_LINE = 8
SMALL_DISCARD = 40
stream = st.lists(
    st.one_of(st.sampled_from([b"\n", b"\r\n", b"\r", b"x"]), st.binary(max_size=12)),
    max_size=30,
).map(b"".join)


def _expected(data: bytes, max_line: int) -> list[Line]:
    """The lines of `data` by the book: split at LF, one CR before it dropped, too long marked
    (an unfinished line as soon as it is too long even with a CR, so that it is not kept)."""
    *complete, tail = data.split(b"\n")
    lines = []
    for raw in complete:
        line = raw.removesuffix(b"\r")
        lines.append(Line(b"", too_long=True) if len(line) > max_line else Line(line))
    if len(tail) > max_line + 1:
        lines.append(Line(b"", too_long=True))
    return lines


def _feed(data: bytes, cuts: list[int], decoder: LineDecoder) -> list[Line]:
    lines: list[Line] = []
    edges = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for start, end in itertools.pairwise(edges):
        lines += decoder.feed(data[start:end])
        assert decoder.pending <= SMALL_LINE + 1  # memory stays bounded, whatever comes
    return lines


@PROPERTY
@given(stream, st.lists(st.integers(min_value=0), max_size=10))
def test_any_split_of_the_bytes_gives_the_same_lines_as_feeding_them_whole(data, cuts):
    longest = max((len(piece) for piece in data.split(b"\n")), default=0)
    decoder = LineDecoder(max_line=SMALL_LINE, max_discard=SMALL_DISCARD)
    try:
        lines = _feed(data, cuts, decoder)
    except EndlessLine:
        # only past the discard limit: a line (or the unfinished tail) that long was fed
        assert longest > SMALL_DISCARD
        return
    assert lines == _expected(data, SMALL_LINE)
    assert lines == LineDecoder(max_line=SMALL_LINE, max_discard=SMALL_DISCARD).feed(data)
    assert decoder.pending == len(data.split(b"\n")[-1]) or decoder.pending == 0


@PROPERTY
@given(st.integers(min_value=0, max_value=3 * SMALL_DISCARD), st.integers(min_value=1, max_value=9))
def test_an_over_long_line_is_one_marker_and_endless_only_past_the_discard_limit(length, step):
    data = b"y" * length
    decoder = LineDecoder(max_line=SMALL_LINE, max_discard=SMALL_DISCARD)
    try:
        lines = _feed(data + b"\nnext\n", list(range(step, length + 6, step)), decoder)
    except EndlessLine:
        assert length > SMALL_DISCARD
        return
    marker = [Line(b"", too_long=True)] if length > SMALL_LINE else [Line(data)]
    assert lines == [*marker, Line(b"next")]


def test_the_real_limits_agree_with_the_small_ones():
    decoder = LineDecoder()
    assert decoder.feed(b"x" * MAX_LINE_BYTES + b"\r\n") == [Line(b"x" * MAX_LINE_BYTES)]
    assert decoder.feed(b"x" * (MAX_LINE_BYTES + 1) + b"\n") == [Line(b"", too_long=True)]
    for _ in range(MAX_DISCARD_BYTES // 1024):
        decoder.feed(b"y" * 1024)
    with pytest.raises(EndlessLine):
        decoder.feed(b"y" * 1024)


# -- text and JSON parsing -------------------------------------------------------------------


@PROPERTY
@given(hostile_text, st.booleans())
def test_text_parse_returns_a_request_or_a_protocol_error(line, registered):
    for candidate in (line, clean_text(line)):
        try:
            request: ev.Request | ProtocolError = wire_text.parse(candidate, registered=registered)
        except ProtocolError as error:
            request = error
        if isinstance(request, ProtocolError):
            assert (request.code, bool(request.message)) == ("bad_request", True)
        elif registered and candidate.strip() and not candidate.startswith("/"):
            assert request == ev.Say(clean_text(candidate))  # the codec cleans what it keeps


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["type", "nick", "text", "room", "to", "key", "reason", "message", "topic", "secret"]
requests = st.dictionaries(
    st.sampled_from(FIELDS) | hostile_text,
    json_values | st.sampled_from([*wire_json.REQUEST_TYPES, "bogus"]),
    max_size=5,
)


@PROPERTY
@given(requests | json_values, st.booleans())
def test_json_parse_returns_a_request_or_a_protocol_error(obj, registered):
    line = json.dumps(obj)
    assert wire_json.looks_like_json(line) == isinstance(obj, dict)
    try:
        request: ev.Request | ProtocolError = wire_json.parse(line, registered=registered)
    except ProtocolError as error:
        request = error
    if isinstance(request, ProtocolError):
        assert request.code in ("bad_request", "not_registered")
        return
    for value in vars(request).values():
        if isinstance(value, str) and not isinstance(request, ev.Hello):
            assert not FORBIDDEN_RE.search(value), request


@PROPERTY
@given(hostile_text, st.booleans())
def test_json_parse_of_any_line_returns_a_request_or_a_protocol_error(line, registered):
    looks = wire_json.looks_like_json(line)
    assert isinstance(looks, bool)
    with contextlib.suppress(ProtocolError):
        wire_json.parse(line, registered=registered)


# -- IRC parsing and formatting --------------------------------------------------------------


@PROPERTY
@given(hostile_text)
def test_irc_parse_takes_any_line(line):
    message = wire_irc.parse(line)
    if message is not None:
        assert message.command
        assert message.command == message.command.upper()
        assert all(isinstance(p, str) for p in message.params)


# Middle parameters are names (nicks, rooms, modes): short. The last one is free text.
middle = st.text(st.one_of(st.sampled_from(NASTY), st.characters()), max_size=20)
last = st.text(st.one_of(st.sampled_from(NASTY), st.characters()), max_size=600)


def _shown_middle(param: str) -> str:
    """What format_line makes of a middle parameter (see its docstring)."""
    param = re.sub("[\ud800-\udfff]", "\ufffd", param.translate({13: None, 10: None, 0: None}))
    param = param.replace(" ", "_") or "*"
    return "_" + param[1:] if param.startswith(":") else param


@PROPERTY
@given(
    middle,
    st.sampled_from(["PRIVMSG", "NOTICE", "KICK", "MODE", "001", "353"]),
    st.lists(middle, max_size=4),
    st.none() | last,
)
def test_format_line_is_one_line_of_at_most_512_bytes_with_the_same_parameters(
    source, command, middles, trailing
):
    params = [*middles, *([] if trailing is None else [trailing])]
    line = wire_irc.format_line(source, command, *params)
    assert line.endswith(b"\r\n")
    assert len(line) <= wire_irc.MAX_LINE_BYTES
    body = line[:-2]
    assert b"\r" not in body
    assert b"\n" not in body
    assert b"\0" not in body
    message = wire_irc.parse(body.decode("utf-8"))  # whole characters: it decodes
    assert message is not None
    assert message.command == command
    assert len(message.params) == len(params), (params, body)
    if not params:
        return
    assert list(message.params[:-1]) == [_shown_middle(p) for p in params[:-1]]
    shown_last = re.sub(  # as _shown_middle: line breaks gone, lone surrogates replaced
        "[\ud800-\udfff]", "\ufffd", params[-1].translate({13: None, 10: None, 0: None})
    )
    if len(middles) < len(params):  # the free text: intact, or cut at a character boundary
        assert shown_last.startswith(message.params[-1])
    else:
        assert message.params[-1] == _shown_middle(params[-1]) or shown_last.startswith(
            message.params[-1]
        )


# -- encoding events built from cleaned input ------------------------------------------------

ids = st.integers(min_value=1, max_value=2**40)
stamps = st.floats(min_value=0, max_value=2e9)
names = st.lists(cleaned, max_size=4).map(tuple)
reasons = st.sampled_from([v for k, v in vars(ev.LeaveReason).items() if k.isupper()])


def _room_events(room: str = "#r") -> st.SearchStrategy[ev.RoomEvent]:
    common = {"id": ids, "ts": stamps, "room": cleaned, "userhost": cleaned}
    return st.one_of(
        st.builds(ev.Message, **common, sender=cleaned, text=cleaned, notice=st.booleans()),
        st.builds(ev.Action, **common, sender=cleaned, text=cleaned),
        st.builds(
            ev.PrivateMessage,
            **common,
            sender=cleaned,
            recipient=cleaned,
            text=cleaned,
            notice=st.booleans(),
            action=st.booleans(),
        ),
        st.builds(ev.Joined, **common, nick=cleaned, count=st.integers(0, 10**6)),
        st.builds(ev.Parted, **common, nick=cleaned, message=cleaned),
        st.builds(ev.Kicked, **common, nick=cleaned, by=cleaned, reason=cleaned, rooms_left=names),
        st.builds(ev.TopicChanged, **common, by=cleaned, topic=cleaned),
        st.builds(
            ev.ModeChanged,
            **common,
            by=cleaned,
            modes=st.sampled_from(["+k", "-k", "+s", "-s", "+o", "-o", "+ko", "+k-s"]),
            args=names,
        ),
        st.builds(ev.Left, **common, nick=cleaned, reason=reasons, message=cleaned, rooms=names),
        st.builds(ev.Renamed, **common, old=cleaned, new=cleaned, rooms=names),
    )


room_events = _room_events()
batches = st.lists(room_events, min_size=1, max_size=4).map(lambda e: ev.Batch(tuple(e)))
greetings = st.builds(ev.Greeting, online=st.integers(0, 10**6), password=st.booleans())
# The replies an IRC user gets as events (the IRC dialect writes its numerics itself).
irc_replies = st.one_of(
    st.builds(
        ev.RoomView,
        room=cleaned,
        users=names,
        topic=cleaned,
        topic_by=cleaned,
        topic_ts=stamps,
        ts=stamps,
        secret=st.booleans(),
        has_key=st.booleans(),
    ),
    st.builds(ev.Notice, text=cleaned, ts=stamps),
    st.builds(ev.Error, code=st.just("bad_request"), message=cleaned, ts=stamps),
    st.builds(ev.Goodbye, reason=cleaned, ts=stamps),
)
replies = st.one_of(
    irc_replies,
    st.builds(ev.Welcome, nick=cleaned, room=cleaned, users=names, ts=stamps),
    st.builds(ev.UserList, room=st.none() | cleaned, users=names, ts=stamps),
    st.builds(
        ev.RoomList,
        rooms=st.lists(
            st.builds(ev.RoomInfo, name=cleaned, count=st.integers(0, 99), topic=cleaned),
            max_size=60,
        ).map(tuple),
        ts=stamps,
    ),
    st.builds(ev.TopicReply, room=cleaned, topic=cleaned, by=cleaned, ts=stamps),
    st.builds(ev.HelpText, ts=stamps),
    st.builds(ev.Pong, token=json_values, ts=stamps),
)


def _strings(value: Any) -> list[str]:
    """Every string inside a decoded JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


@PROPERTY
@given(room_events | batches | replies | greetings, cleaned, st.none() | cleaned)
def test_text_encode_writes_whole_clean_lines(event, recipient, current_room):
    data = wire_text.encode(event, recipient, current_room, EncodeCache())
    assert data.endswith(b"\n")
    for line in data.decode("utf-8").split("\n")[:-1]:
        assert not FORBIDDEN_RE.search(line), line


@PROPERTY
@given(room_events | batches | replies, cleaned)  # the greeting comes before JSON mode
def test_json_encode_writes_one_clean_object_per_line(event, recipient):
    data = wire_json.encode(event, recipient, None, EncodeCache())
    assert data.endswith(b"\n")
    assert data.isascii()
    for line in data.decode("ascii").split("\n")[:-1]:
        obj = json.loads(line)
        assert isinstance(obj, dict)
        if obj["type"] == "pong":
            del obj["token"]  # the client's own token, echoed to it alone: any JSON value
        for value in _strings(obj):
            assert not FORBIDDEN_RE.search(value), value
            value.encode("utf-8")  # no lone surrogate a client could choke on


@PROPERTY
@given(room_events | batches | irc_replies, cleaned, cleaned)
def test_irc_encode_writes_crlf_lines_of_at_most_512_bytes(event, me, server):
    data = wire_irc.encode(event, me, server, EncodeCache())
    if not data:  # the sender's own private message: IRC clients echo it themselves
        return
    assert data.endswith(b"\r\n")
    for line in data.split(b"\r\n")[:-1]:
        assert len(line) + 2 <= wire_irc.MAX_LINE_BYTES
        text = line.decode("utf-8")
        assert not FORBIDDEN_IRC_RE.search(text), text
        assert wire_irc.parse(text) is not None


@PROPERTY
@given(hostile_text)
def test_clean_text_leaves_nothing_to_clean_and_nothing_unencodable(raw):
    once = clean_text(raw)
    assert clean_text(once) == once
    assert not FORBIDDEN_RE.search(once)
    once.encode("utf-8")


@PROPERTY
@given(room_events)
def test_one_fan_out_encodes_each_form_once_and_the_same_as_without_a_cache(event):
    assume(not isinstance(event, ev.PrivateMessage))  # depends on the recipient: not cached
    assume(not (isinstance(event, ev.Kicked) and event.nick in ("x", "y")))  # ditto
    cache = EncodeCache()
    first = wire_text.encode(event, "x", event.room, cache)
    assert wire_text.encode(event, "y", event.room, cache) is first
    assert first == wire_text.encode(event, "x", event.room)


@PROPERTY
@given(
    cleaned,
    cleaned,
    st.booleans(),
    st.lists(st.tuples(ids, stamps | st.integers(0, 2**40), cleaned), min_size=1, max_size=6),
    room_events,
)
def test_json_batch_of_one_senders_messages_is_encoded_as_one_by_one(
    room, sender, notice, messages, other
):
    """A batch from Hub.say (messages of one sender in one room) has a fast path in the JSON
    encoder: its bytes are those of each message encoded on its own; a batch with anything
    else in it (`other`) too."""
    events = tuple(
        ev.Message(i, ts, room, sender=sender, text=text, notice=notice) for i, ts, text in messages
    )
    for batch in (events, (*events, other), (other, *events)):
        expected = b"".join(wire_json.encode(e, "x") for e in batch)
        assert wire_json.encode(ev.Batch(batch), "x", None, EncodeCache()) == expected


@PROPERTY
@given(
    st.text(st.one_of(st.sampled_from(NASTY), st.characters()), max_size=40)
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
)
@example("bob\r\nQUIT :forged")  # ASCII, not printable: the full cleaning
@example("a\x00b")
@example("caf\udce9")
def test_an_irc_parameter_is_cleaned_the_same_with_or_without_the_fast_path(text):
    """Printable ASCII skips the cleaning (#14, the burst: the welcome's 55 parameters); for
    every text the result is what the full cleaning gives: no CR, LF or NUL, no lone
    surrogate."""
    full = re.sub("[\ud800-\udfff]", "\ufffd", text.translate({13: None, 10: None, 0: None}))
    assert wire_irc._sendable(text) == full
