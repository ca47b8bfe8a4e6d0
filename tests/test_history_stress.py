"""History under the worst end (#11): `kill -9` in the middle of a 10,000-message run."""

from __future__ import annotations

import contextlib
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.peers import JsonPeer, wait_until

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = 10_000
KILL_AFTER = 5_000  # messages the watcher has seen when the server is killed


def _start(path: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chat",
            "--port",
            "0",
            "--flood-rate",
            "0",
            # The whole run (~1 MB of JSON) fits the watcher's queue: on a busy machine the
            # watcher reads slower than the talker floods, and must not be dropped for it.
            "--sendq-bytes",
            str(4 * 1024 * 1024),
            "--history-db",
            str(path),
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", proc.stderr.readline())
    assert match
    return proc, int(match[1])


def _committed(path: Path) -> int:
    """Messages the server's writer has committed so far (read beside it, as WAL allows)."""
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM events").fetchone()[0])
        except sqlite3.OperationalError:  # no table yet
            return 0


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_kill_9_mid_run_loses_only_the_last_batch_window_and_never_corrupts(
    tmp_path, record_property
):
    path = tmp_path / "killed.sqlite3"
    proc, port = _start(path)
    try:
        watcher = JsonPeer(("127.0.0.1", port), "watcher", timeout=30)
        talker = JsonPeer(("127.0.0.1", port), "talker", timeout=30)
        lines = [f'{{"type": "message", "text": "k{i}"}}\n' for i in range(MESSAGES)]

        def talk() -> None:
            try:
                for start in range(0, MESSAGES, 100):
                    talker.send("".join(lines[start : start + 100]))
            except OSError:
                pass  # killed under our feet: expected

        talking = threading.Thread(target=talk)
        talking.start()
        seen: list[str] = []
        arrived: list[float] = []

        def read_message() -> None:
            while (event := watcher.event())["type"] != "message":
                pass
            seen.append(event["text"])
            arrived.append(time.monotonic())

        while len(seen) < KILL_AFTER:
            read_message()
        # On a busy machine the writer can lag a flood by thousands of messages: the kill comes
        # once it has committed something (mid-run still, unless the whole run is out by then).
        while not _committed(path) and len(seen) < MESSAGES:
            for _ in range(min(100, MESSAGES - len(seen))):
                read_message()
        wait_until(lambda: _committed(path) > 0, timeout=60)
        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        proc.wait(timeout=10)
        talking.join(timeout=30)
        assert not talking.is_alive()
        try:  # what was already on its way to the watcher
            while True:
                event = watcher.event(timeout=5)
                if event["type"] == "message":
                    seen.append(event["text"])
        except (EOFError, TimeoutError, OSError):
            pass
    finally:
        proc.kill()
        proc.wait()
    assert time.monotonic() - killed_at < 60
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = [text for (text,) in db.execute("SELECT text FROM events ORDER BY id")]
    # Both are the start of what was said, in order, without a hole.
    assert seen == [f"k{i}" for i in range(len(seen))]
    assert stored == [f"k{i}" for i in range(len(stored))]
    lost = max(0, len(seen) - len(stored))
    record_property("delivered_not_stored", lost)
    if lost > 0 and len(stored) < len(arrived):  # when the first lost one came, before the kill
        record_property("lost_window_ms", round((killed_at - arrived[len(stored)]) * 1000))
    # Delivered but not committed: what was queued for the writer when the process died, the
    # last batch window (measured and stated in docs/history.md). Something was committed.
    assert stored, "nothing was committed in a whole run"

    # The file opens again, and ids go on after the last stored one.
    proc, port = _start(path)
    try:
        alice = JsonPeer(("127.0.0.1", port), "alice")
        while (replay := alice.expect_type("history")).get("partial"):
            pass  # a replay comes in several objects; the newest is in the last
        assert replay["messages"][-1]["text"] == stored[-1]
        last_id = replay["messages"][-1]["id"]
        bob = JsonPeer(("127.0.0.1", port), "bob")
        bob.send_json({"type": "message", "text": "after the crash"})
        assert alice.expect_type("message")["id"] > last_id
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
