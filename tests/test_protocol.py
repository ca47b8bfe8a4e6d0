"""The pure protocol layer: framing, text hygiene, nicknames, flood control, the outbox."""

from __future__ import annotations

import threading

import pytest

from chat.flood import FloodGate, Verdict
from chat.outbox import Outbox
from chat.protocol import (
    MAX_LINE_BYTES,
    Line,
    LineDecoder,
    ProtocolError,
    clean_text,
    decode_text,
    nick_error,
    nick_mask,
)

SAMPLE = b"alice\r\nhello world\n\nsecond line\r\n"
EXPECTED = [Line(b"alice"), Line(b"hello world"), Line(b""), Line(b"second line")]


def test_decoder_whole_stream():
    assert LineDecoder().feed(SAMPLE) == EXPECTED


def test_decoder_one_byte_at_a_time():
    decoder = LineDecoder()
    lines = []
    for i in range(len(SAMPLE)):
        lines += decoder.feed(SAMPLE[i : i + 1])
    assert lines == EXPECTED


def test_decoder_keeps_an_unfinished_tail():
    decoder = LineDecoder()
    assert decoder.feed(SAMPLE + b"partial") == EXPECTED
    assert decoder.pending == len(b"partial")
    assert decoder.feed(b" line\n") == [Line(b"partial line")]


def test_decoder_accepts_a_line_of_exactly_the_limit():
    line = b"x" * MAX_LINE_BYTES
    assert LineDecoder().feed(line + b"\r\n") == [Line(line)]


@pytest.mark.parametrize("chunk", [1, 100, 10_000])
def test_decoder_drops_an_over_long_line_once_and_recovers(chunk):
    data = b"x" * (MAX_LINE_BYTES + 1) + b"\nnext\n"
    decoder = LineDecoder()
    lines = []
    for i in range(0, len(data), chunk):
        lines += decoder.feed(data[i : i + chunk])
    assert lines == [Line(b"", too_long=True), Line(b"next")]
    assert decoder.pending == 0


def test_decoder_gives_up_on_endless_line_with_bounded_memory():
    decoder = LineDecoder(max_line=100, max_discard=1000)
    for _ in range(20):  # 1000 bytes: all max_discard allows
        assert decoder.pending <= 101
        decoder.feed(b"y" * 50)
    with pytest.raises(ProtocolError) as raised:
        decoder.feed(b"y")
    assert raised.value.code == "line_too_long"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain", "plain"),
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b]0;pwned title\x07after", "after"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("bell\x07 nul\x00 bs\x08 cr\r del\x7f", "bell nul bs cr del"),
        ("c1\x9b31m csi\x85", "c1 csi"),
        ("tab\there", "tab here"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("iso\u2066late\u2069", "isolate"),
        ("line\u2028sep\u2029par", "lineseppar"),
        ("lone esc \x1b", "lone esc "),
        ("héllo wörld ✓ 日本", "héllo wörld ✓ 日本"),
    ],
)
def test_clean_text_removes_what_a_terminal_would_act_on(raw, clean):
    assert clean_text(raw) == clean


def test_invalid_utf8_becomes_replacement_character():
    assert decode_text(b"ok \xff\xfe end") == "ok \ufffd\ufffd end"


@pytest.mark.parametrize("nick", ["alice", "Bob_2", "[x]", "a-b", "`q", "{|}^", "x" * 16])
def test_valid_nicknames(nick):
    assert nick_error(nick) is None


@pytest.mark.parametrize("nick", ["", "1abc", "-ab", "has space", "x" * 17, "é", "a.b", "a:b"])
def test_invalid_nicknames(nick):
    assert nick_error(nick) is not None


def test_flood_gate_lets_a_burst_through_then_warns_drops_and_kicks():
    gate = FloodGate(rate=10, burst=20, now=0.0)
    assert [gate.check(0.0) for _ in range(20)] == [Verdict.ACCEPT] * 20
    assert gate.check(0.0) is Verdict.WARN
    assert [gate.check(0.0) for _ in range(19)] == [Verdict.DROP] * 19
    assert gate.check(0.0) is Verdict.KICK


def test_flood_gate_lets_a_fast_typist_type_forever():
    gate = FloodGate(rate=10, burst=20, now=0.0)
    verdicts = {gate.check(i / 9) for i in range(1000)}  # 9 lines/s for 111 s
    assert verdicts == {Verdict.ACCEPT}


def test_flood_gate_forgives_once_the_bucket_refills():
    gate = FloodGate(rate=10, burst=5, now=0.0)
    for _ in range(5):
        gate.check(0.0)
    assert gate.check(0.0) is Verdict.WARN
    assert gate.check(1.0) is Verdict.ACCEPT  # refilled: strikes forgotten
    for _ in range(4):
        gate.check(1.0)
    assert gate.check(1.0) is Verdict.WARN


def test_flood_gate_off():
    gate = FloodGate(rate=0, burst=1, now=0.0)
    assert {gate.check(0.0) for _ in range(10_000)} == {Verdict.ACCEPT}


def test_outbox_refuses_past_its_cap_and_hands_everything_at_once():
    outbox = Outbox(max_bytes=10)
    assert outbox.offer(b"12345")
    assert outbox.offer(b"6789")
    assert not outbox.offer(b"ab")  # 11 > 10
    assert outbox.claim() == b"123456789"
    assert not outbox.offer(b"ab")  # claimed bytes still count until released
    outbox.release()
    assert outbox.offer(b"ab")


def test_outbox_one_claim_at_a_time_and_the_unsent_rest_goes_first():
    outbox = Outbox(max_bytes=100)
    outbox.offer(b"first ")
    data = outbox.claim()
    assert data == b"first "
    outbox.offer(b"second ")
    assert outbox.claim() is None  # someone is sending: the others just queue
    outbox.release(data[3:])  # only "fir" went out
    assert outbox.claim() == b"st second "
    outbox.release()
    assert outbox.claim() is None  # nothing left
    assert outbox.size == 0


def test_outbox_after_close_accepts_discards_and_drains():
    outbox = Outbox(max_bytes=10)
    outbox.offer(b"last")
    outbox.close()
    assert outbox.offer(b"discarded")  # closed: accepted and dropped, nobody is blamed
    assert not outbox.drained  # "last" is still to be sent
    assert outbox.claim() == b"last"
    assert not outbox.drained  # claimed is not sent
    outbox.release()
    assert outbox.drained
    assert outbox.claim() is None


def test_outbox_discard_forgets_the_queue_but_waits_for_a_send_in_flight():
    outbox = Outbox(max_bytes=100)
    outbox.offer(b"in flight")
    data = outbox.claim()
    outbox.offer(b"never sent")
    outbox.discard()
    assert not outbox.drained
    outbox.release(data[2:])  # the sender gives back what the socket did not take
    assert outbox.size == len(data) - 2
    assert outbox.claim() == data[2:]
    outbox.release()
    assert outbox.drained
    assert outbox.size == 0


def test_outbox_wait_drained_wakes_when_the_last_byte_is_released():
    outbox = Outbox(max_bytes=100)
    outbox.offer(b"goodbye")
    outbox.close()
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(outbox.wait_drained(10)))
    waiter.start()
    data = outbox.claim()
    outbox.release(data[3:])  # partly sent: not drained yet
    assert outbox.claim() == b"dbye"
    outbox.release()
    waiter.join(10)
    assert result == [True]
    assert not Outbox(max_bytes=1).wait_drained(0.01)  # never closed: times out


@pytest.mark.parametrize(
    ("mask", "nick", "matches"),
    [
        ("coolni*", "CoolNick", True),  # ASCII case folded, as nicknames are compared
        ("cool", "coolNick", False),  # the whole nick, not a part
        ("a?c", "abc", True),
        ("a?c", "abbc", False),
        ("a[b]", "A[B]", True),  # brackets and backslashes are a nick's own characters
        ("a[b]", "ab", False),
        ("x\\y*", "x\\yz", True),
        ("*a*b*", "xaxbx", True),
        ("*a*b*", "xbxax", False),
        ("0", "anyone", True),  # RFC 1459's "everyone"
        ("*a" * 100 + "b", "a" * 15 + "c", False),  # no backtracking blow-up (atomic parts)
    ],
)
def test_nick_masks(mask, nick, matches):
    assert nick_mask(mask)(nick) is matches
