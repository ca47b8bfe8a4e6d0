"""Every command of docs/classroom.md, run as a student would, so the guide cannot rot.

Each `console` block is one experiment: its `chat-server` line is started in the background with
port 0 instead of 8888 (the system picks a free port, read back from the log, so there is no
race with other programs for a port), the other `$ ` lines run in order through bash with a
time limit (`PID` becomes the server's process id, a trailing `&` runs a command in the
background), and at the end the server gets SIGINT, as from Ctrl-C. The exit code of each
command must be the one the guide announces (`# exits N`, else 0), and the server's audit must
agree with the mode it ran in.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "classroom.md"
COMMAND_TIMEOUT_S = 20.0
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_EXITS = re.compile(r"#\s*exits\s+([\d\sor]+)$")


@dataclass
class Command:
    line: str
    exits: set[int] = field(default_factory=lambda: {0})
    background: bool = False


def _blocks() -> list[list[Command]]:
    blocks = re.findall(r"```console\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    parsed = []
    for block in blocks:
        commands = []
        for raw in block.splitlines():
            if not raw.startswith("$ "):
                continue
            line = raw[2:].strip()
            command = Command(line)
            if (match := _EXITS.search(line)) is not None:
                command.exits = {int(n) for n in re.findall(r"\d+", match.group(1))}
                line = line[: match.start()].strip()
            if line.endswith("&"):
                command.background = True
                line = line[:-1].strip()
            command.line = line
            commands.append(command)
        parsed.append(commands)
    return parsed


BLOCKS = _blocks()


def _slow(block: list[Command]) -> bool:
    """Experiments that take seconds by design (a paced run with a slow client, a sleep)."""
    return any("--slow-clients" in c.line or c.line.startswith("sleep ") for c in block)


def _wait_for(path: Path, pattern: str, timeout: float) -> re.Match[str]:
    """Polls the server's log file until `pattern` matches, bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, path.read_text(errors="replace"))
        if match is not None:
            return match
        time.sleep(0.05)
    pytest.fail(f"{pattern!r} not in the server log within {timeout} s:\n{path.read_text()}")


def test_the_guide_has_experiments():
    assert len(BLOCKS) >= 8
    assert all(block and block[0].line.startswith("chat-server ") for block in BLOCKS)


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(b, marks=[pytest.mark.stress, pytest.mark.timeout(120)] if _slow(b) else [])
        for b in BLOCKS
    ],
    ids=[f"{i}:{' '.join(b[0].line.split()[3:]) or 'default'}" for i, b in enumerate(BLOCKS)],
)
def test_every_command_of_the_guide_works(block, tmp_path):
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    server_command = block[0].line.replace("8888", "0")
    server_log = tmp_path / "server.log"
    with server_log.open("w") as log_file:
        server = subprocess.Popen(
            ["bash", "-c", f"exec {server_command}"], stdout=log_file, stderr=log_file, env=env
        )
    background: list[tuple[Command, subprocess.Popen[str]]] = []
    try:
        port = _wait_for(server_log, r"listening on \S+:(\d+)\n", START_TIMEOUT_S).group(1)
        for command in block[1:]:
            line = command.line.replace("8888", port).replace("PID", str(server.pid))
            if command.background:
                background.append(
                    (
                        command,
                        subprocess.Popen(
                            ["bash", "-c", line],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            text=True,
                            env=env,
                        ),
                    )
                )
                continue
            done = subprocess.run(
                ["bash", "-c", line],
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                env=env,
            )
            assert done.returncode in command.exits, (line, done.stdout, done.stderr)
            assert "Traceback" not in done.stderr, done.stderr
        for command, job in background:
            output, _ = job.communicate(timeout=COMMAND_TIMEOUT_S)
            assert job.returncode in command.exits, (command.line, output)
    finally:
        for _, job in background:
            if job.poll() is None:
                job.kill()
                job.wait(STOP_TIMEOUT_S)
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
        try:
            server.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(STOP_TIMEOUT_S)
            pytest.fail(f"the server did not stop on SIGINT:\n{server_log.read_text()}")
    log = server_log.read_text(errors="replace")
    assert server.returncode == 0, log
    if "--unsafe-registry" in server_command:
        assert "VIOLATION" in log
        assert "invariant violation(s)" in log
    else:
        assert "audit: 0 invariant violations" in log, log
    if any("kill -USR1" in command.line for command in block):
        assert "most recent call first" in log, log
        assert "_send_blocking" in log, log
