"""Many real clients at once: exactly-once, in-order delivery; a stalled reader stalls nobody."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.peers import JsonPeer, TextPeer

CLIENTS = 50
MESSAGES = 200
JOIN_TIMEOUT_S = 60


def _collect(peer: JsonPeer, expected: int, out: dict[str, list[int]], done: threading.Event):
    """Reads message events until `expected` have arrived; records seq numbers per sender."""
    count = 0
    while count < expected:
        event = peer.event(timeout=30)
        if event["type"] == "message":
            sender, seq = event["text"].split(" ")
            out.setdefault(sender, []).append(int(seq))
            count += 1
    done.set()


# One run in the fast set; the repeats (more chances for a rare interleaving) are stress.
_REPEAT = [pytest.mark.stress, pytest.mark.timeout(120)]


@pytest.mark.parametrize("run", [0, *(pytest.param(n, marks=_REPEAT) for n in range(1, 5))])
def test_every_message_arrives_exactly_once_in_order_per_sender(make_server, run):
    server = make_server(flood_rate=0, sendq_bytes=16 * 1024 * 1024)
    peers = [JsonPeer(server.address, f"c{i}") for i in range(CLIENTS)]
    for peer in peers:  # everyone has joined before anyone talks
        peer.sync()
    received: list[dict[str, list[int]]] = [{} for _ in peers]
    dones = [threading.Event() for _ in peers]
    readers = [
        threading.Thread(target=_collect, args=(p, (CLIENTS - 1) * MESSAGES, r, d))
        for p, r, d in zip(peers, received, dones, strict=True)
    ]
    barrier = threading.Barrier(CLIENTS)

    def talk(i: int, peer: JsonPeer) -> None:
        barrier.wait(JOIN_TIMEOUT_S)
        lines = "".join(f'{{"type": "message", "text": "c{i} {n}"}}\n' for n in range(MESSAGES))
        peer.send(lines)

    talkers = [threading.Thread(target=talk, args=(i, p)) for i, p in enumerate(peers)]
    for thread in readers + talkers:
        thread.start()
    for thread in talkers + readers:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive()
    assert all(done.is_set() for done in dones)
    for i, got in enumerate(received):
        assert f"c{i}" not in got, "a message was echoed to its sender"
        assert len(got) == CLIENTS - 1
        for sender, seqs in got.items():
            assert seqs == list(range(MESSAGES)), f"c{i} from {sender}: lost, doubled or reordered"
    for peer in peers:
        peer.close()


class PauseMeter:
    """A thread of this process that only wakes every millisecond and notes when it woke late:
    the pauses a busy machine gives the whole process (other processes had the cores), which no
    server design can avoid. A sender blocked on a socket releases the GIL: it pauses nobody
    here, so what it costs is never excused as a pause."""

    TICK_S = 0.001
    LATE_S = 0.003  # a wake-up later than this after the last one is a pause

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []  # (from, to), perf_counter times
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pause meter")

    def __enter__(self) -> PauseMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(self.TICK_S):
            now = time.perf_counter()
            if now - last > self.LATE_S:
                self.pauses.append((last + self.TICK_S, now))
            last = now

    def within(self, start: float, end: float) -> float:
        """How long the process was paused between `start` and `end`."""
        return sum(max(0.0, min(end, b) - max(start, a)) for a, b in list(self.pauses))


def _round_trip(
    alice: JsonPeer, bob: JsonPeer, n: int, text: str, meter: PauseMeter | None = None
) -> tuple[float, list[dict]]:
    """Alice says message n; returns how long until bob had it (less the pauses the machine gave
    the whole process meanwhile, if `meter`), and what bob read before it."""
    start = time.perf_counter()
    alice.send_json({"type": "message", "text": f"{n} {text}"})
    before = []
    while (event := bob.event())["type"] != "message":
        before.append(event)
    end = time.perf_counter()
    assert event["text"].startswith(f"{n} "), "lost or reordered"
    return end - start - (meter.within(start, end) if meter else 0.0), before


# While a client stalls, a message may take this many times the slowest one of the calm runs
# before and after, plus a scheduling hiccup of one thread (the pauses of the whole process are
# measured and left out: one of them, unmatched in the short calm runs, failed this test at
# load 4): a sender that waited for the stalled socket would take far longer.
STALL_FACTOR = 10
HICCUP_S = 0.05
CALM_ROUNDS = 1000


def test_a_client_that_never_reads_stalls_nobody_and_is_dropped(make_server):
    server = make_server(flood_rate=0, sendq_bytes=64 * 1024)
    alice = JsonPeer(server.address, "alice")
    # As chat-load's bots do: else Nagle holds alice's next message for the server's delayed
    # ACK now and then (40 ms on Linux), in both runs alike, which says nothing about the server.
    alice.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bob = JsonPeer(server.address, "bob")
    alice.sync()
    text = "x" * 3000
    stalled_times: list[float] = []
    dropped_after = None
    # The kernel's socket buffers on loopback absorb a few MB before the send queue even starts
    # to fill; 20,000 messages of 3 KB are far more than both. Stop soon after the drop.
    n = 0
    with PauseMeter() as meter:
        # The baseline is measured twice, before and after (the load of a busy machine comes
        # and goes): messages with nobody stalled.
        calm_before = [_round_trip(alice, bob, -1, text, meter)[0] for _ in range(CALM_ROUNDS)]
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(server.address)
        stalled.sendall(b"stalled\n")  # joins, then never reads again
        assert bob.expect_type("join")["nick"] == "stalled"
        for n in range(20_000):
            if dropped_after is not None and n > dropped_after + 100:
                break
            elapsed, before = _round_trip(alice, bob, n, text, meter)
            stalled_times.append(elapsed)
            for event in before:
                assert (event["type"], event["nick"]) == ("leave", "stalled")
                assert event["reason"] == "send queue exceeded"
                dropped_after = n
        assert dropped_after is not None, "the stalled client was never dropped"
        # The baseline, measured now on the same machine: as many messages with nobody stalled.
        calm_after = [_round_trip(alice, bob, n + 1 + i, text, meter)[0] for i in range(n)]
    worst, calm = max(stalled_times), max(calm_before + calm_after)
    paused = sum(b - a for a, b in meter.pauses)
    assert worst < STALL_FACTOR * calm + HICCUP_S, (
        f"a message took {worst * 1000:.1f} ms while a client stalled; "
        f"at most {calm * 1000:.1f} ms with nobody stalled (pauses left out: {paused:.2f} s)"
    )
    assert bob.sync() == []
    stalled.close()


def test_many_threads_race_for_one_nickname_exactly_one_wins(server):
    racers = 20
    barrier = threading.Barrier(racers)
    outcomes: list[str] = []
    peers = [TextPeer(server.address) for _ in range(racers)]

    def race(peer: TextPeer) -> None:
        barrier.wait(JOIN_TIMEOUT_S)
        peer.send("winner\n")
        outcomes.append(peer.line())

    threads = [threading.Thread(target=race, args=(p,)) for p in peers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
    assert sum(o.startswith("* Hello winner") for o in outcomes) == 1
    assert sum(o == "! nickname winner is taken" for o in outcomes) == racers - 1
    assert server.hub.nicks() == ("winner",)
