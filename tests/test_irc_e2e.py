"""End to end with a real IRC client library from PyPI (jaraco's `irc`), against our server."""

from __future__ import annotations

import queue
import threading

import pytest

irc_client = pytest.importorskip("irc.client")

from tests.peers import TextPeer  # noqa: E402

TIMEOUT_S = 10


def test_irc_library_client_talks_with_a_text_user(make_server):
    server = make_server(irc_port=0)
    text = TextPeer(server.address, "alice")
    reactor = irc_client.Reactor()
    events: queue.Queue[tuple[str, object]] = queue.Queue()
    connection = reactor.server().connect(*server.irc_address, "ircbot")

    def on_welcome(conn, event):
        events.put(("welcome", event.arguments))
        conn.join("#lobby")

    def on_join(conn, event):
        events.put(("join", event.source.nick))
        conn.privmsg("#lobby", "hello from a library")

    def on_pubmsg(conn, event):
        events.put(("pubmsg", (event.source.nick, event.arguments[0])))
        conn.quit("done")

    connection.add_global_handler("welcome", on_welcome)
    connection.add_global_handler("join", on_join)
    connection.add_global_handler("pubmsg", on_pubmsg)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            reactor.process_once(0.05)

    loop = threading.Thread(target=run, name="irc-lib reactor")
    loop.start()
    try:
        assert events.get(timeout=TIMEOUT_S)[0] == "welcome"
        assert events.get(timeout=TIMEOUT_S) == ("join", "ircbot")
        assert text.expect("<ircbot>") == "<ircbot> hello from a library"
        text.send("hi bot\n")
        assert events.get(timeout=TIMEOUT_S) == ("pubmsg", ("alice", "hi bot"))
        assert text.expect("*** ircbot left") == "*** ircbot left (quit: done)"
    finally:
        stop.set()
        loop.join(TIMEOUT_S)
        connection.close()
