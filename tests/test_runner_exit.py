"""Issue #14, the burst: a reader thread's start does not go through CPython 3.11's scan of every
non-daemon thread (`threading._shutdown_locks`), yet readers stay non-daemon threads: `stop()`
joins each, and an interpreter that exits without `stop()` still waits for every reader, as it
waits for any non-daemon thread (chat/runner.py `_join_readers_at_exit`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from chat import runner as runner_module
from tests.peers import TextPeer

lean_start_only = pytest.mark.skipif(
    not runner_module._LEAN_START, reason="this CPython's threading has no _shutdown_locks scan"
)


@lean_start_only
def test_readers_stay_out_of_threadings_shutdown_set_and_stop_joins_them(
    make_server: Any,
) -> None:
    shutdown_locks = threading._shutdown_locks  # type: ignore[attr-defined]
    before = len(shutdown_locks)
    server = make_server()
    peers = [TextPeer(server.address, f"p{n}") for n in range(20)]
    readers = [t for t in threading.enumerate() if t.name.startswith("reader ")]
    assert len(readers) == 20
    assert all(not t.daemon for t in readers)  # non-daemon in name ...
    # ... but not one lock each in the set every thread start and join scans (the server's own
    # few threads are; a stock Thread's lock would be there 20 times).
    assert len(shutdown_locks) < before + 20
    assert not any(t._tstate_lock in shutdown_locks for t in readers)  # type: ignore[attr-defined]
    runner = server._runner
    assert runner in runner_module._RUNNERS  # listed for the interpreter's exit meanwhile
    for peer in peers:
        peer.close()
    server.stop()
    assert not any(t.is_alive() for t in readers)  # every reader joined by stop()
    assert runner not in runner_module._RUNNERS


def test_a_runner_is_listed_for_the_exit_only_while_it_has_threads_not_joined() -> None:
    runner = runner_module.ThreadPerConnection()
    assert runner not in runner_module._RUNNERS
    release = threading.Event()

    def serve() -> None:
        release.wait(10)

    for key in ("a", "b"):
        runner.run(key, serve, f"reader test:{key}")
    assert runner in runner_module._RUNNERS
    release.set()
    runner.reap("a")
    assert runner in runner_module._RUNNERS  # "b" is not joined yet
    runner.reap("b")
    assert runner not in runner_module._RUNNERS  # nothing left for the exit to wait for
    runner.run("c", serve, "reader test:c")
    assert runner in runner_module._RUNNERS
    runner.close()
    assert runner not in runner_module._RUNNERS


CHILD = textwrap.dedent(
    """
    import socket, sys
    from chat.runner import ThreadPerConnection

    sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
    runner = ThreadPerConnection()

    def serve():  # a reader still busy with its client when the main thread ends
        data = sock.recv(100)
        sock.sendall(b"reader saw " + data)
        sock.close()

    runner.run("client", serve, "reader 127.0.0.1:1")
    print("main thread ends without stop()", flush=True)
    """
)


@lean_start_only
def test_an_interpreter_exiting_without_stop_still_waits_for_its_readers(tmp_path: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(Path(runner_module.__file__).resolve().parents[1])}
    child = subprocess.Popen(
        [sys.executable, str(script), str(listener.getsockname()[1])],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        listener.settimeout(10)
        conn, _ = listener.accept()
        conn.settimeout(10)
        assert child.stdout is not None
        assert child.stdout.readline() == "main thread ends without stop()\n"
        # The child's main thread has ended; its interpreter is exiting. A reader left out of
        # threading's shutdown set without the runner's exit hook would be cut off by now.
        conn.sendall(b"bye")
        answer = b""
        while chunk := conn.recv(100):
            answer += chunk
        assert answer == b"reader saw bye"
        assert child.wait(10) == 0
        conn.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
        listener.close()
