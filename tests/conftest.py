"""Fixtures: a real in-process server on a loopback port, and a check that no thread leaks."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Hypothesis keeps its example database and caches (which name paths of the machine) outside the
# checkout, so a test run leaves nothing in the repository's folder. An explicit setting wins.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "threadroom-hypothesis")
)

from chat.config import ServerConfig
from chat.server import ChatServer
from tests.valkey import Valkey

# ChatServer's parts (everything else given to make_server is a ServerConfig field).
_PARTS = ("hub", "runner", "output", "audit", "store")


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Every test must end with the threads it started gone (the server joins all of its)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        extra = [t for t in threading.enumerate() if t not in before and not t.daemon]
        if not extra or time.monotonic() > deadline:
            break
        extra[0].join(0.1)
    assert not extra, f"threads left behind: {extra}"


@pytest.fixture(autouse=True)
def no_real_state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chat-server keeps history in the user's state directory by default (#11): the
    chat-server processes a test starts use a fresh temporary one instead (ServerConfig keeps
    none by default)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Makes the interpreter switch threads as often as it can, so races get every chance."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.fixture
def make_server() -> Iterator[Any]:
    """Starts servers with the given options on 127.0.0.1, port 0; stops them after the test."""
    servers: list[ChatServer] = []

    def start(**options: Any) -> ChatServer:
        parts = {name: options.pop(name) for name in _PARTS if name in options}
        config = ServerConfig(**{"host": "127.0.0.1", "port": 0, "room": "#lobby", **options})
        server = ChatServer(config, **parts).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Any) -> ChatServer:
    return make_server()  # type: ignore[no-any-return]


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[Valkey]:
    """A real valkey-server (tests/valkey.py) on a free loopback port, empty, no persistence;
    ask for it before `make_server` so that it is torn down after the servers using it."""
    server = Valkey(tmp_path).start()
    yield server
    server.stop()
