"""chat-client and history (#11): dimmed replay with its times, paging, and a reconnect that shows
what was missed once (no gap, no duplicate)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from chat.config import ServerConfig
from chat.server import ChatServer
from client import commands
from client.backlog import Backlog
from client.connection import Received
from client.render import HISTORY, render_history
from tests.peers import JsonPeer
from tests.test_client_connection import Events, Proxy, connect


def _message(i: int, room: str = "#lobby", text: str = "") -> dict[str, Any]:
    return {"type": "message", "id": i, "ts": 1000.0 + i, "room": room, "from": "bob",
            "text": text or f"m{i}"}  # fmt: skip


def test_backlog_drops_what_was_shown_and_merges_pieces():
    backlog = Backlog()
    assert backlog.first_time(_message(5))
    assert not backlog.first_time(_message(5))
    assert backlog.first_time({"type": "join", "id": 5})  # not a message: always shown
    assert backlog.merge({"type": "history", "partial": True, "messages": [_message(3)]}) is None
    whole = backlog.merge({"type": "history", "room": "#lobby", "messages": [_message(4)]})
    assert whole is not None
    assert [m["id"] for m in whole["messages"]] == [3, 4]
    fresh = backlog.fresh({**whole, "messages": [_message(3), _message(5), _message(6)]})
    assert [m["id"] for m in fresh["messages"]] == [3, 6]
    assert backlog.newest("#LOBBY") == 6
    assert backlog.oldest("#lobby") == 3
    assert backlog.catch_up("#lobby") == {
        "type": "history",
        "room": "#lobby",
        "after": 6,
        "limit": 1000,
    }
    assert backlog.catch_up("#never") is None
    assert backlog.older("#lobby") == {
        "type": "history",
        "room": "#lobby",
        "limit": 50,
        "before": 3,
    }


def test_history_is_dimmed_with_its_own_times_between_dividers():
    event = {"type": "history", "room": "#lobby", "replay": True,
             "messages": [_message(1, text="hello alice"), _message(2)]}  # fmt: skip
    lines = render_history(event, "alice", now=1000.0 + 3)
    assert lines[0].plain.endswith(
        "--- history of #lobby: 2 messages since " + lines[1].plain[:5] + " ---"
    )
    assert "<bob> hello alice" in lines[1].plain
    assert lines[-1].plain.endswith("--- end of history ---")
    assert all(style == HISTORY for line in lines for style, _ in line.fragments[1:])
    assert not any(line.highlight for line in lines)  # the past never rings the bell
    assert render_history({**event, "messages": []}, "alice", 0.0) == []


def test_history_command():
    assert commands.parse("/history") == commands.Send(({"type": "history"},))
    assert commands.parse("/history 20") == commands.Send(({"type": "history", "limit": 20},))
    assert isinstance(commands.parse("/history lots"), commands.Usage)


@pytest.fixture
def history_server() -> Iterator[ChatServer]:
    with ChatServer(ServerConfig(port=0, flood_rate=0, history_db=":memory:")) as server:
        yield server


def _shown(events: Events) -> list[str]:
    """Every message text the client handed to its UI, in order (history and live)."""
    texts = []
    for event in events.seen:
        if not isinstance(event, Received):
            continue
        if event.event["type"] == "history":
            texts += [m["text"] for m in event.event["messages"]]
        elif event.event["type"] == "message":
            texts.append(event.event["text"])
    return texts


def test_a_reconnect_shows_what_was_missed_once(history_server: ChatServer):
    events = Events()
    proxy = Proxy(history_server.address)
    try:
        bob = JsonPeer(history_server.address, "bob")
        for i in range(60):
            bob.send_json({"type": "message", "text": f"m{i}"})
        bob.sync()
        connection = connect(proxy.address, "alice", events)
        replay = events.received("history")
        assert [m["text"] for m in replay.event["messages"]] == [f"m{i}" for i in range(10, 60)]
        proxy.gate.clear()  # hold the reconnect while bob talks on
        for ghost in proxy.cut_client_sides():
            ghost.shutdown(socket.SHUT_RDWR)
        events.notice("connection lost")
        assert bob.expect_type("leave")["nick"] == "alice"
        for i in range(80):  # more than one replay: a replay alone would leave a gap
            bob.send_json({"type": "message", "text": f"x{i}"})
        bob.sync()
        proxy.gate.set()
        events.notice("reconnected")
        bob.send_json({"type": "message", "text": "live"})
        events.wait(lambda e: isinstance(e, Received) and e.event.get("text") == "live")
        events.wait(
            lambda e: (
                isinstance(e, Received)
                and e.event["type"] == "history"
                and any(m["text"] == "x0" for m in e.event["messages"])
            )
        )
        assert connection.barrier(5.0)
        shown = _shown(events)
        expected = [f"m{i}" for i in range(10, 60)] + [f"x{i}" for i in range(80)] + ["live"]
        assert sorted(shown) == sorted(expected)  # every one, once
        missed = [t for t in shown if t.startswith("x")]
        assert missed == [f"x{i}" for i in range(80)]  # in order
        # PageUp: the page before the oldest shown.
        assert connection.ask_older("#lobby")
        older = events.wait(
            lambda e: (
                isinstance(e, Received)
                and e.event["type"] == "history"
                and any(m["text"] == "m9" for m in e.event["messages"])
            )
        )
        assert isinstance(older, Received)
        assert [m["text"] for m in older.event["messages"]] == [f"m{i}" for i in range(10)]
        connection.quit()
    finally:
        proxy.close()
