"""Room invariants under real threads released together, with a tiny GIL switch interval."""

from __future__ import annotations

import threading

import pytest

from chat import events as ev
from chat.hub import Hub, NickTaken, NoSuchNick, muted
from chat.wire import EncodeCache

THREADS = 16
ROUNDS = 30
JOIN_TIMEOUT_S = 30


class FakeMember:
    """Records what the room delivers; can play a client whose send queue is full."""

    def __init__(self, full: bool = False) -> None:
        self.events: list[ev.Event] = []
        self.full = full
        self.dropped: list[str] = []
        self.flushes = 0

    def deliver(self, event: ev.Event, cache: EncodeCache | None = None) -> bool:
        if self.full:
            return False
        self.events.append(event)
        return True

    def flush(self) -> None:
        self.flushes += 1

    def drop(self, reason: str) -> None:
        self.dropped.append(reason)


def run_together(targets: list) -> None:
    barrier = threading.Barrier(len(targets))

    def start(target):
        barrier.wait(JOIN_TIMEOUT_S)
        target()

    threads = [threading.Thread(target=start, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive(), "deadlock?"


def test_join_rename_leave_and_private_messages():
    room = Hub()
    alice, bob = FakeMember(), FakeMember()
    welcome = room.join(alice, "alice")
    assert welcome.users == ("alice",)
    room.join(bob, "bob")
    with pytest.raises(NickTaken):
        room.join(FakeMember(), "ALICE")
    room.rename(alice, "Alice")  # same name in another case: allowed, it is hers
    with pytest.raises(NickTaken):
        room.rename(bob, "alice")
    room.whisper(bob, "ALICE", "psst")
    with pytest.raises(NoSuchNick):
        room.whisper(bob, "nobody", "x")
    assert room.nicks() == ("Alice", "bob")
    assert room.leave(alice, "quit", "bye")
    assert not room.leave(alice, "quit")
    assert room.nicks() == ("bob",)
    private = [e for e in alice.events if isinstance(e, ev.PrivateMessage)]
    assert [(p.sender, p.recipient, p.text) for p in private] == [("bob", "Alice", "psst")]
    assert isinstance(bob.events[-1], ev.Left)
    assert bob.events[-1].message == "bye"


def test_a_full_member_is_dropped_and_the_others_still_get_everything():
    room = Hub()
    slow, fast = FakeMember(), FakeMember()
    room.join(slow, "slow")
    room.join(fast, "fast")
    slow.full = True
    flushes, slow_flushes = fast.flushes, slow.flushes
    room.say(fast, "hello")
    assert slow.dropped == [ev.LeaveReason.SENDQ_EXCEEDED]
    assert slow.flushes == slow_flushes  # refused: dropped, not flushed
    assert fast.flushes == flushes  # the sender was not sent its own message
    room.act(fast, "waves")
    assert [type(e).__name__ for e in fast.events][-1] == "Action"
    assert fast.flushes == flushes + 1  # asked to send after the lock was released


@pytest.mark.usefixtures("fast_switching")
def test_exactly_one_of_many_concurrent_joins_of_one_nickname_wins():
    for _ in range(ROUNDS):
        room = Hub()
        wins: list[str] = []
        losses: list[str] = []
        members = [FakeMember() for _ in range(THREADS)]
        # Half the threads ask in upper case: "Highlander" and "highlander" are one nickname.
        spellings = ["Highlander" if i % 2 else "highlander" for i in range(THREADS)]

        def claim(
            member: FakeMember, nick: str, room: Hub = room, wins=wins, losses=losses
        ) -> None:
            try:
                room.join(member, nick)
                wins.append(nick)
            except NickTaken:
                losses.append(nick)

        run_together(
            [lambda m=m, n=n: claim(m, n) for m, n in zip(members, spellings, strict=True)]
        )
        assert len(wins) == 1
        assert len(losses) == THREADS - 1  # every other claim was refused, none vanished
        assert room.nicks() == tuple(wins)


@pytest.mark.usefixtures("fast_switching")
def test_everyone_sees_the_same_events_in_the_same_order():
    room = Hub()
    members = [FakeMember() for _ in range(THREADS)]
    for i, member in enumerate(members):
        room.join(member, f"m{i}")

    def chatter(i: int, member: FakeMember) -> None:
        for n in range(50):
            room.act(member, f"{i}:{n}")  # actions reach everyone, the author too
            if n % 10 == 0:
                room.rename(member, f"m{i}x" if n % 20 == 0 else f"m{i}")

    run_together([lambda i=i, m=m: chatter(i, m) for i, m in enumerate(members)])
    streams = [[e.id for e in m.events if isinstance(e, ev.RoomEvent)] for m in members]
    # the last member joined after every other: compare from its join on
    start = streams[-1][0]
    tails = [[i for i in s if i >= start] for s in streams]
    assert all(tail == tails[0] for tail in tails)
    assert tails[0] == sorted(set(tails[0]))  # increasing, no duplicates
    actions = [e for e in members[0].events if isinstance(e, ev.Action)]
    assert len(actions) == THREADS * 50
    for i in range(THREADS):
        mine = [int(a.text.split(":")[1]) for a in actions if a.text.startswith(f"{i}:")]
        assert mine == list(range(50))


@pytest.mark.usefixtures("fast_switching")
def test_concurrent_joins_and_leaves_leave_no_ghosts():
    room = Hub()
    watcher = FakeMember()
    room.join(watcher, "watcher")

    def churn(i: int) -> None:
        member = FakeMember()
        for n in range(40):
            room.join(member, f"c{i}_{n % 3}")
            room.say(member, "hi")
            room.leave(member, "quit")

    run_together([lambda i=i: churn(i) for i in range(THREADS)])
    assert room.nicks() == ("watcher",)
    joins = sum(isinstance(e, ev.Joined) for e in watcher.events)
    leaves = sum(isinstance(e, ev.Left) for e in watcher.events)
    assert joins - 1 == leaves == THREADS * 40
    counts = [e.count for e in watcher.events if isinstance(e, (ev.Joined, ev.Left))]
    assert counts[-1] == 1


def test_a_muted_thread_hands_its_events_to_nobody_while_other_threads_deliver():
    """Cluster (#12): the follower marks itself while it applies a request its users already
    had; a reader speaking at that moment must still be heard, and the follower again after."""
    room = Hub()
    alice, bob = FakeMember(), FakeMember()
    room.join(alice, "alice")
    room.join(bob, "bob")
    marked, said = threading.Event(), threading.Event()

    def follower() -> None:
        muted.mark(True)
        try:
            room.say(alice, "repeated")  # applied, but told to nobody
            marked.set()
            assert said.wait(JOIN_TIMEOUT_S)
        finally:
            muted.mark(False)
        room.say(alice, "new")

    thread = threading.Thread(target=follower)
    thread.start()
    assert marked.wait(JOIN_TIMEOUT_S)
    room.say(bob, "meanwhile")  # another thread, while the follower is marked
    said.set()
    thread.join(JOIN_TIMEOUT_S)

    def heard(member: FakeMember) -> list[str]:
        return [e.text for e in member.events if isinstance(e, ev.Message)]

    assert heard(alice) == ["meanwhile"]  # (a sender is not told its own message)
    assert heard(bob) == ["new"]  # not "repeated"
    assert muted.threads == frozenset()
