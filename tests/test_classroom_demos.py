"""The classroom demo modes do what docs/classroom.md promises, measured with chat-load.

The unsafe-registry races are made near-certain by the race window; each test still allows a
few bounded attempts, so that one unlucky scheduling on a busy machine is not a failure.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

import pytest

from chat import classroom as demo
from chat.audit import Audit
from chat.config import ServerConfig
from loadtool import LoadConfig, run_load
from tests.peers import JsonPeer, wait_until
from tests.test_room import FakeMember

ATTEMPTS = 5


@pytest.fixture
def demo_server() -> Iterator[object]:
    """Starts demo servers on 127.0.0.1 port 0 (fast thread switching while unsafe)."""
    servers = []
    old_interval = sys.getswitchinterval()

    def start(**options: object):
        if options.get("unsafe_registry"):
            demo.shorten_switch_interval()
        server_options = {k: options.pop(k) for k in list(options) if k not in _DEMO_FIELDS}
        config = ServerConfig(port=0, **server_options)
        server = demo.build_server(config, demo.DemoOptions(**options)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    sys.setswitchinterval(old_interval)


_DEMO_FIELDS = set(demo.DemoOptions.__dataclass_fields__)


def _load(server, **config: object):
    return run_load(LoadConfig(port=server.address[1], duration=20, join_timeout=10, **config))


def _reproduce(demo_server, kind: str, **config: object):
    """Runs the unsafe server under chat-load until the audit has seen `kind`; bounded."""
    for _ in range(ATTEMPTS):
        server = demo_server(unsafe_registry=True)
        report = _load(server, **config)
        server.stop()
        if server.audit.counts().get(kind):
            return server, report
    pytest.fail(f"no {kind!r} in {ATTEMPTS} runs: {server.audit.summary()}")


def test_unsafe_registry_lets_two_clients_hold_one_nickname(demo_server):
    _, report = _reproduce(
        demo_server, "duplicate nickname", clients=10, messages=5, nick_clash=True
    )
    assert report.nick_clash_both_won >= 1  # the clients saw it too
    assert not report.ok


def test_unsafe_registry_twins_clash_even_when_they_check_the_name_far_apart():
    # A busy machine: the second twin reaches join()'s check well after the first one's plain
    # race window has closed (seen: 40 ms apart at load 7; a whole run of chat-load showed no
    # clash now and then). The first one's check waits there for it, so both act on "free"
    # in the hub's own join(). Before: the second one got NickTaken.
    window_s = 0.02
    hub = demo.UnsafeHub(Audit(), window_s)
    first, second = FakeMember(), FakeMember()

    def join(member: FakeMember) -> None:
        # The two joins' broadcasts may crash each other (the demo's other race; the server
        # catches it): the names are taken before that.
        with contextlib.suppress(RuntimeError):
            hub.join(member, "twin0")

    joining = threading.Thread(target=join, args=(first,))
    joining.start()
    wait_until(lambda: hub.meeting.waiting("twin0"))  # the first one found the name free
    threading.Event().wait(3 * window_s)  # the late arrival itself, not a synchronisation
    join(second)
    joining.join(10)
    assert not joining.is_alive()
    assert hub.nicks() == ("twin0", "twin0")
    assert hub.audit.counts() == {"duplicate nickname": 1}


def test_unsafe_registry_crashes_broadcasts_and_the_server_survives(demo_server, caplog):
    server = demo_server(unsafe_registry=True)
    for _ in range(ATTEMPTS):
        report = _load(server, clients=20, messages=5)
        if server.audit.counts().get("crashed operation"):
            break
    assert "dictionary changed size during iteration" in caplog.text
    assert report.disconnected.get("server error", 0) >= 1
    # Every crash was caught: the same server still listens and serves.
    alice = JsonPeer(server.address, "alice")
    assert alice.sync() == []
    alice.send_json({"type": "quit"})
    alice.until_closed()


def test_unsafe_registry_loses_members_from_the_registry(demo_server):
    server, _ = _reproduce(demo_server, "registry", clients=10, messages=5, nick_clash=True)
    assert "registry" in server.audit.summary()


def test_the_lock_fixes_it_same_load_zero_violations(demo_server):
    server = demo_server()
    for config in ({"clients": 20, "messages": 5}, {"clients": 10, "nick_clash": True}):
        report = _load(server, **config)
        assert report.ok, report.format_text()
        assert report.nick_clash_both_won == 0
    server.stop()
    assert server.audit.total == 0, server.audit.summary()


def test_sending_under_the_lock_makes_everyone_wait_for_a_slow_client(demo_server):
    # Flat out (flood control off) to keep the test short; docs/classroom.md shows it paced.
    config = {"clients": 10, "messages": 40, "slow_clients": 1, "rate": 0}
    default = _load(demo_server(flood_rate=0), **config)
    naive = _load(demo_server(lock_while_sending=True, send_timeout_s=1.0, flood_rate=0), **config)
    assert default.ok, default.format_text()
    assert naive.ok, naive.format_text()
    assert default.latency is not None
    assert naive.latency is not None
    # Compared in the same run, not against absolute times: the naive room stalled for the
    # slow client (then dropped it), the default one never waited.
    assert naive.latency.p99_ms > 5 * default.latency.p99_ms, (default.latency, naive.latency)
    # The naive design has no queue: the slow client is dropped because a send timed out
    # (defect: it said "send queue exceeded", a queue it does not have).
    assert naive.slow_clients_disconnected == {"send timed out": 1}


def test_one_at_a_time_serves_a_single_client(demo_server):
    server = demo_server(one_at_a_time=True)
    report = run_load(
        LoadConfig(port=server.address[1], clients=3, messages=2, join_timeout=1, duration=10)
    )
    assert report.joined == 1
    assert report.join_failures == {"no welcome within 1 s": 2}


def test_the_unsafe_demo_shows_the_race_run_after_run_on_one_server(demo_server):
    # The guide says "run it a few times" on one server. A crashed leave used to leave its
    # client in #lobby after it had gone offline, and every later join crashed on it while
    # listing the room: "0 of 20 joined" from the second run on.
    server = demo_server(unsafe_registry=True)
    # Joined before the races: the guide says the other clients carry on.
    observer = JsonPeer(server.address, "observer")
    for run in range(3):
        clash = _load(server, clients=10, messages=5, nick_clash=True)
        # Most join: a few joins may crash on the unlocked registry (listing the room while
        # someone leaves), which is the demo too; none joined was the defect.
        assert clash.joined >= 5, (run, clash.format_text())
        assert clash.nick_clash_both_won >= 1, (run, clash.format_text())
        crash = _load(server, clients=20, messages=5)
        assert crash.joined >= 10, (run, crash.format_text())
        assert crash.disconnected.get("server error", 0) >= 1, (run, crash.format_text())
    # The observer was never disconnected and still chats with a newcomer.
    newcomer = JsonPeer(server.address, "newcomer")
    observer.send_json({"type": "message", "text": "still here"})
    assert newcomer.expect_type("message")["text"] == "still here"
    for peer in (observer, newcomer):
        peer.send_json({"type": "quit"})
        peer.until_closed()
    server.stop()
    counts = server.audit.counts()
    # The log reports later runs' clashes too, not only the first run's five (the audit runs
    # unlocked as well, so it may miss a clash now and then: not one per run).
    assert counts.get("duplicate nickname", 0) > 5, server.audit.summary()
    # No ghosts (names that outlive their client): the guide's exercise 7.7 explains why.
    assert "ghost" not in counts, server.audit.summary()
    assert not any(p.startswith("ghost") for p in server.hub.check_invariants())
    assert len(server.hub) == 0
