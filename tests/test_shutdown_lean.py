"""Issue #14, the lean shutdown and the lean reader: what was cut must not cost a report, a log
line that matters, or a thread left behind.

At a shutdown the readers no longer log a line each (the server logs one for all) and their
threads are joined newest-ended first; a reader's thread shares one exception hook with the
others and has no argument dict of its own. These tests check that nothing of what the cuts
touch was lost: an exception escaping a reader still reaches `threading.excepthook`, a client
leaving for another reason is still logged, every thread is joined, and every client still
reads its goodbye.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from chat.runner import ThreadPerConnection
from tests.peers import TextPeer, wait_until


def test_an_exception_escaping_a_reader_still_reaches_threading_excepthook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[type[BaseException] | None, str | None]] = []
    monkeypatch.setattr(
        threading,
        "excepthook",
        lambda args: seen.append((args.exc_type, args.thread.name if args.thread else None)),
    )
    runner = ThreadPerConnection()

    def broken() -> None:
        raise ValueError("a bug outside serve()'s own handlers")

    for n in range(2):  # two threads: the hook they share serves each with its own thread
        runner.run(n, broken, f"reader test:{n}")
    runner.close()
    assert sorted(seen, key=str) == [(ValueError, "reader test:0"), (ValueError, "reader test:1")]


def test_a_reader_thread_runs_its_serve_with_no_arguments_and_is_joined() -> None:
    runner = ThreadPerConnection()
    ran = threading.Event()
    runner.run("key", ran.set, "reader test")
    assert ran.wait(5)
    runner.reap("key")
    assert not [t for t in threading.enumerate() if t.name == "reader test"]


def test_at_a_shutdown_one_line_says_how_many_left_and_other_ends_are_still_logged(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chat")
    server = make_server()
    quitter = TextPeer(server.address, "quitter")
    stayers = [TextPeer(server.address, f"stayer{n}") for n in range(3)]
    quitter.send("/quit\n")
    quitter.until_closed()
    wait_until(lambda: server.client_count == 3)
    server.stop()
    for peer in stayers:
        assert peer.until_closed()[-1] == "*** server shutting down"
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("quitter disconnected (quit)") for m in messages), messages
    assert "3 client(s) disconnected (server shutting down)" in messages
    assert not [m for m in messages if m.endswith("disconnected (server shutting down)")][1:]
    assert any(m.startswith("stopped in ") and "readers ended" in m for m in messages)
