"""Shutdown with thousands of real connections: every client reads the goodbye before its EOF,
and stop() costs about as much per client as with a handful (measured in the same test)."""

from __future__ import annotations

import importlib.util
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

CLIENTS = 1500  # two descriptors each (ours and the server's): ~3,000 in all
SMALL = 20
READ_S = 120.0
# stop() may cost this many times more per client with CLIENTS clients than with SMALL ones:
# the work per client is the same, and a quadratic cost (every leave told to every remaining
# member) or a wait per client would be ~CLIENTS/SMALL times more per client.
PER_CLIENT_FACTOR = 8

# Every server here announces joins and leaves in every room (quiet_room_size=0): the worst case
# for a shutdown, where each leave would be told to every member still there.
pytestmark = [pytest.mark.stress, pytest.mark.timeout(120)]


def _need_descriptors() -> None:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * CLIENTS + 500:
        pytest.skip(f"ulimit -n is {soft}; {2 * CLIENTS + 500} descriptors are needed")


def _load_crowd() -> Any:
    """benchmarks/crowd.py, the crowd the benchmarks use too (loaded by its path, as
    tests/test_benchmarks.py loads benchmarks/run.py: benchmarks/ is not a package)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "crowd.py"
    spec = importlib.util.spec_from_file_location("bench_crowd", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_crowd = _load_crowd()


def _crowd_of(address: tuple[str, int], count: int) -> Any:
    """`count` registered text clients on one selector, read by this thread."""
    crowd = _crowd.Crowd(address)
    crowd.join(count, "c", READ_S)
    return crowd


def _missed(crowd: Any, count: int) -> list[int]:
    """The clients that did not read the goodbye before their EOF."""
    return [i for i in range(count) if i not in crowd.goodbye_before_eof]


def _timed_stop(server: Any) -> float:
    started = time.monotonic()
    server.stop()
    return time.monotonic() - started


def test_stop_with_thousands_says_goodbye_to_everyone_at_the_cost_per_client_of_a_few(
    make_server: Any,
) -> None:
    _need_descriptors()
    small_server = make_server(quiet_room_size=0)
    small = _crowd_of(small_server.address, SMALL)
    small_s = _timed_stop(small_server)
    small.pump(lambda: len(small.eof) == SMALL, time.monotonic() + READ_S)
    small.close()
    server = make_server(max_clients=CLIENTS + SMALL, quiet_room_size=0)
    crowd = _crowd_of(server.address, CLIENTS)
    big_s = _timed_stop(server)
    crowd.pump(lambda: len(crowd.eof) == CLIENTS, time.monotonic() + READ_S)
    missed = _missed(crowd, CLIENTS)
    crowd.close()
    assert not missed, f"{len(missed)} of {CLIENTS} clients got no goodbye before EOF"
    per_client_small, per_client_big = small_s / SMALL, big_s / CLIENTS
    assert per_client_big <= PER_CLIENT_FACTOR * per_client_small, (
        f"stop() took {big_s:.2f} s for {CLIENTS} clients, {small_s:.3f} s for {SMALL}"
    )


def test_stop_while_thousands_hang_up_at_that_moment(make_server: Any) -> None:
    _need_descriptors()
    small_server = make_server(quiet_room_size=0)
    small = _crowd_of(small_server.address, SMALL)
    small.hang_up()
    small_s = _timed_stop(small_server)
    small.close()
    server = make_server(max_clients=CLIENTS + SMALL, quiet_room_size=0)
    crowd = _crowd_of(server.address, CLIENTS)
    crowd.hang_up()
    big_s = _timed_stop(server)
    crowd.close()
    assert len(server.hub) == 0
    assert big_s / CLIENTS <= PER_CLIENT_FACTOR * small_s / SMALL, (
        f"stop() took {big_s:.2f} s for {CLIENTS} clients hanging up, {small_s:.3f} s for {SMALL}"
    )


def _serve_and_signal(count: int, hangup: bool) -> tuple[float, str, Any]:
    """A real `chat-server` process with `count` registered text clients; SIGTERM, at the
    moment they all hang up (or while they idle). Returns the seconds from the signal (and the
    hang-up) to the process's exit, its log and the crowd."""
    with tempfile.TemporaryFile("w+") as log:
        command = [sys.executable, "-m", "chat", "--port", "0", "--register-timeout", "0"]
        command += ["--flood-rate", "0", "--max-clients", str(count + 20), "--log-level", "INFO"]
        command += ["--quiet-room-size", "0"]  # every leave would be told: the worst case
        process = subprocess.Popen(command, stderr=log, cwd=Path(__file__).parent.parent)
        try:
            deadline = time.monotonic() + READ_S
            while not (port := re.search(r"INFO listening on [^ ]*:(\d+)", _read(log))):
                assert process.poll() is None, _read(log)
                assert time.monotonic() < deadline, _read(log)
                time.sleep(0.05)  # polls the log: no other sign that the server listens
            crowd = _crowd_of(("127.0.0.1", int(port.group(1))), count)
            started = time.monotonic()
            if hangup:
                crowd.hang_up()
            os.kill(process.pid, signal.SIGTERM)
            if not hangup:
                crowd.pump(lambda: len(crowd.eof) == count, started + READ_S)
            assert process.wait(READ_S) == 0
            return time.monotonic() - started, _read(log), crowd
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _read(log: Any) -> str:
    log.seek(0)
    return str(log.read())


@pytest.mark.parametrize("hangup", [False, True], ids=["idle", "all-hang-up-at-the-signal"])
def test_sigterm_with_thousands_exits_at_the_cost_per_client_of_a_few(hangup: bool) -> None:
    """The README's promise, as a ratio: SIGTERM to exit costs no more per client with
    thousands than with a handful, also when they all hang up at the moment of the signal
    (10,000 readers woken at once used to fight for the interpreter: minutes). Idle clients
    all read the goodbye first."""
    _need_descriptors()
    small_s, _log, small = _serve_and_signal(SMALL, hangup)
    small.close()
    big_s, log, crowd = _serve_and_signal(CLIENTS, hangup)
    missed = _missed(crowd, CLIENTS)
    crowd.close()
    assert "audit: 0 invariant violations" in log
    if not hangup:
        assert not missed, f"{len(missed)} of {CLIENTS} clients got no goodbye before EOF"
    assert big_s / CLIENTS <= PER_CLIENT_FACTOR * small_s / SMALL, (
        f"SIGTERM to exit took {big_s:.2f} s for {CLIENTS} clients, {small_s:.3f} s for {SMALL}"
    )
