"""Every command of docs/classroom.md, run as a student would, so the guide cannot rot.

Each `console` block is one experiment: its `chat-server` lines are started in the background
with port 0 instead of 8888 (or 8889: the system picks a free port, read back from the log, so
there is no race with other programs for a port, and later lines get it in place of the
guide's), the other `$ ` lines run in order through bash with a time limit (`PID` becomes the
first server's process id, a trailing `&` runs a command in the background, `wait` collects the
background commands, `export NAME=VALUE` sets a variable for the commands after it), and at the
end every server gets SIGINT, as from Ctrl-C. An experiment with a `redis://` URL (the cluster,
step 8) gets a real Valkey of its own (tests/valkey.py), whose URL replaces the guide's.

What is checked, as the guide's "How to read the commands" says:
* the exit code of each command is the one the guide announces (`# exits N`, else 0);
* the lines the guide shows after a command are printed by it, in that order (`...` stands for
  lines left out, or for a part of a line). Numbers on the timing lines (latency, delivery
  rate, elapsed) may differ; in the experiments that race or get stuck (`--unsafe-registry`,
  `--send-timeout 0`) every count may differ too, but must not be 0;
* each line of a `log` block after an experiment is in that server's log (where in the log
  does not matter: threads interleave); there every number may differ (ports, counts);
* every server stops on Ctrl-C with exit code 0, and its audit agrees with the mode it ran in.
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

from tests.valkey import Valkey

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "classroom.md"
COMMAND_TIMEOUT_S = 20.0
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
_EXITS = re.compile(r"#\s*exits\s+([\d\sor]+)$")
# Lines whose numbers are timings: they differ from run to run on any server.
_TIMING_LINES = ("latency ", "delivery rate ", "elapsed ")
# Experiments whose counts differ from run to run: races, and a server stuck on purpose.
_RACY_SERVERS = ("--unsafe-registry", "--send-timeout 0", "--racy-cluster-claims")
GUIDE_REDIS_URL = "redis://127.0.0.1:6379/0"
_GUIDE_PORT = re.compile(r"--port (\d+)")
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
_TOKENS = re.compile(r"(\.\.\.|0x[0-9a-f]+|\d[\d,.]*\d|\d)")
_ANY_NUMBER = r"\d[\d,.]*"
_NONZERO = r"0*[1-9][\d,]*"


@dataclass
class Command:
    line: str
    exits: set[int] = field(default_factory=lambda: {0})
    background: bool = False
    output: list[str] = field(default_factory=list)  # the lines the guide shows after it


@dataclass
class Experiment:
    commands: list[Command]
    server_log: list[str] = field(default_factory=list)  # lines of the `log` blocks after it

    @property
    def servers(self) -> list[str]:
        return [c.line for c in self.commands if c.line.startswith("chat-server ")]

    @property
    def server(self) -> str:
        return self.servers[0]

    @property
    def racy(self) -> bool:
        return any(flag in server for server in self.servers for flag in _RACY_SERVERS)

    @property
    def clustered(self) -> bool:
        return any(GUIDE_REDIS_URL in c.line for c in self.commands)


def _parse_command(raw: str) -> Command:
    line = raw[2:].strip()
    command = Command(line)
    if (match := _EXITS.search(line)) is not None:
        command.exits = {int(n) for n in re.findall(r"\d+", match.group(1))}
        line = line[: match.start()].strip()
    if line.endswith("&"):
        command.background = True
        line = line[:-1].strip()
    command.line = line
    return command


def _experiments(text: str) -> list[Experiment]:
    experiments: list[Experiment] = []
    for kind, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.DOTALL):
        if kind == "console":
            commands: list[Command] = []
            for raw in body.splitlines():
                if raw.startswith("$ "):
                    commands.append(_parse_command(raw))
                elif commands and raw.strip() not in ("", "..."):
                    commands[-1].output.append(raw.rstrip())
            experiments.append(Experiment(commands))
        elif kind == "log":
            assert experiments, "a log block belongs to the experiment before it"
            lines = [raw.strip() for raw in body.splitlines()]
            experiments[-1].server_log += [line for line in lines if line not in ("", "...")]
    return experiments


EXPERIMENTS = _experiments(GUIDE.read_text())


def _pattern(expected: str, number: str | None) -> re.Pattern[str]:
    """`expected` as a regex: `...` matches anything; a number matches `number` (None: itself)."""
    parts = _TOKENS.split(expected.strip())
    regex = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            regex.append(re.escape(part))
        elif part == "...":
            regex.append(".*")
        elif part.startswith("0x"):
            regex.append("0x[0-9a-f]+")  # a thread id
        else:
            regex.append(re.escape(part) if number is None else number)
    return re.compile("".join(regex))


def _output_pattern(expected: str, racy: bool) -> re.Pattern[str]:
    if expected.startswith(_TIMING_LINES):
        return _pattern(expected, _ANY_NUMBER)
    return _pattern(expected, _NONZERO if racy else None)


def _first_missing(expected: list[str], printed: str, racy: bool) -> str | None:
    """The first expected line that is not printed after the ones before it, if any."""
    lines = [line.strip() for line in printed.splitlines()]
    at = 0
    for line in expected:
        pattern = _output_pattern(line, racy)
        while at < len(lines) and pattern.fullmatch(lines[at]) is None:
            at += 1
        if at == len(lines):
            return line
        at += 1
    return None


def _not_in_log(expected: list[str], log: str) -> list[str]:
    lines = [_LOG_PREFIX.sub("", line).strip() for line in log.splitlines()]
    return [
        line
        for line in expected
        if not any(_pattern(line, _ANY_NUMBER).fullmatch(have) for have in lines)
    ]


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
    assert len(EXPERIMENTS) >= 9
    assert all(e.commands and e.servers for e in EXPERIMENTS)
    assert all(e.commands[0].line == e.server for e in EXPERIMENTS if not e.clustered)
    # Step 8: two servers on one Valkey, with and without the racy claims.
    assert [len(e.servers) for e in EXPERIMENTS if e.clustered] == [2, 2]
    # Output is checked, not only exit codes: most experiments show what their commands print.
    shown = [e for e in EXPERIMENTS if any(c.output for c in e.commands)]
    assert len(shown) >= 7
    assert sum(1 for e in EXPERIMENTS if e.server_log) >= 3


def test_the_matching_rules():
    assert _first_missing(["a 1", "c 3"], "a 1\nb 2\nc 3\n", racy=False) is None
    assert _first_missing(["c 3", "a 1"], "a 1\nb 2\nc 3\n", racy=False) == "a 1"  # order
    assert _first_missing(["x 10 of 20"], "x 10 of 20", racy=False) is None
    assert _first_missing(["x 10 of 20"], "x 0 of 20", racy=False) == "x 10 of 20"
    assert _first_missing(["x 10 of 20"], "x 7 of 20", racy=True) is None
    assert _first_missing(["x 10 of 20"], "x 0 of 20", racy=True) == "x 10 of 20"
    assert _first_missing(["elapsed 1.28 s"], "elapsed 0.05 s", racy=False) is None
    assert _first_missing(["a ... z"], "a b c z", racy=False) is None
    log = "2026-01-01 00:00:00,000 WARNING seen 127.0.0.1:5 'twin3'\n"
    log += '  File "/x/chat/a.py", line 9\n'
    assert _not_in_log(["WARNING seen 127.0.0.1:80 'twin0'"], log) == []
    assert _not_in_log(['File ".../chat/a.py", line ...'], log) == []
    assert _not_in_log(["WARNING unseen"], log) == ["WARNING unseen"]


def _slow(experiment: Experiment) -> bool:
    """Experiments that take seconds by design (a paced run with a slow client, a sleep)."""
    return any(
        "--slow-clients" in c.line or c.line.startswith("sleep ") for c in experiment.commands
    )


@pytest.mark.parametrize(
    "experiment",
    [
        pytest.param(e, marks=[pytest.mark.stress, pytest.mark.timeout(120)] if _slow(e) else [])
        for e in EXPERIMENTS
    ],
    ids=[
        f"{i}:{'cluster ' if e.clustered else ''}{' '.join(e.server.split()[3:]) or 'default'}"
        for i, e in enumerate(EXPERIMENTS)
    ],
)
def test_every_command_of_the_guide_works(experiment, tmp_path):
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    valkey = Valkey(tmp_path).start() if experiment.clustered else None
    servers: list[tuple[str, subprocess.Popen[bytes], Path]] = []  # (command, process, log)
    ports: dict[str, str] = {}  # the guide's port -> the server's
    background: list[tuple[Command, subprocess.Popen[str]]] = []

    def substitute(line: str) -> str:
        if valkey is not None:
            line = line.replace(GUIDE_REDIS_URL, valkey.url)
        for guide_port, port in ports.items():
            line = line.replace(guide_port, port)
        return line.replace("PID", str(servers[0][1].pid)) if servers else line

    def start(command: str) -> None:
        guide_port = _GUIDE_PORT.search(command)
        server_log = tmp_path / f"server{len(servers)}.log"
        with server_log.open("w") as log_file:
            server = subprocess.Popen(
                ["bash", "-c", f"exec {_GUIDE_PORT.sub('--port 0', substitute(command))}"],
                stdout=log_file,
                stderr=log_file,
                env=env,
            )
        servers.append((command, server, server_log))
        port = _wait_for(server_log, r"listening on \S+:(\d+)\n", START_TIMEOUT_S).group(1)
        if guide_port is not None:
            ports[guide_port.group(1)] = port

    def collect() -> str:
        """Waits for the background commands; their output, in the order they were started."""
        outputs = []
        for command, job in background:
            output, _ = job.communicate(timeout=COMMAND_TIMEOUT_S)
            assert job.returncode in command.exits, (command.line, output)
            outputs.append(output)
        background.clear()
        return "".join(outputs)

    try:
        for command in experiment.commands:
            line = substitute(command.line)
            if command.line.startswith("chat-server "):
                start(command.line)
                continue
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                env[name] = value
                continue
            if line == "wait":
                printed = collect()
            elif command.background:
                job = subprocess.Popen(
                    ["bash", "-c", line],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=env,
                )
                background.append((command, job))
                continue
            else:
                done = subprocess.run(
                    ["bash", "-c", line],
                    capture_output=True,
                    text=True,
                    timeout=COMMAND_TIMEOUT_S,
                    env=env,
                )
                assert done.returncode in command.exits, (line, done.stdout, done.stderr)
                assert "Traceback" not in done.stderr, done.stderr
                printed = done.stdout
            missing = _first_missing(command.output, printed, experiment.racy)
            assert missing is None, f"{line!r} did not print {missing!r}; it printed:\n{printed}"
        collect()
    finally:
        for _, job in background:
            if job.poll() is None:
                job.kill()
                job.wait(STOP_TIMEOUT_S)
        for _, server, _ in servers:
            if server.poll() is None:
                server.send_signal(signal.SIGINT)
        stuck = []
        for _, server, server_log in servers:
            try:
                server.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(STOP_TIMEOUT_S)
                stuck.append(server_log.read_text())
        if valkey is not None:
            valkey.stop()
        if stuck:
            pytest.fail(f"a server did not stop on SIGINT:\n{stuck[0]}")
    logs = ""
    for command, server, server_log in servers:
        log = server_log.read_text(errors="replace")
        logs += log
        assert server.returncode == 0, log
        if "--unsafe-registry" in command:
            assert "VIOLATION" in log
            assert "invariant violation(s)" in log
        else:
            assert "audit: 0 invariant violations" in log, log
    assert _not_in_log(experiment.server_log, logs) == [], logs
