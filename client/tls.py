"""The client's TLS: which certificates it trusts, trust on first use, and a TLS stream that a
reading thread and a writing thread can share. No UI.

Trust, in this order (docs/tls.md):

1. `--tls-ca FILE`: the server's certificate must chain to that CA and name the host. Nothing
   else is accepted.
2. Otherwise the system's trust store, as a browser does (a public host with a real certificate).
3. A certificate the system does not know (self-signed: a classroom, a LAN) is trusted on first
   use, like ssh's known_hosts: the first connection shows its SHA-256 fingerprint and asks;
   the answer is kept in the client's data directory; later connections check it and refuse
   loudly if it changed. Nothing is ever accepted without a question (no "insecure" mode).

An expired certificate, or one for another host name, from a CA the system trusts is refused:
it is not "unknown", it is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from client.paths import data_home

RECV_BYTES = 64 * 1024
# OpenSSL's verify codes that mean "I do not know who issued this", the only failures that trust
# on first use may answer (expired, wrong host and the like are refused outright).
_UNKNOWN_ISSUER = {
    18,  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    19,  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    20,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21,  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
}

# Asked on first use: (server "host:port", its SHA-256 fingerprint) -> trust it?
AskTrust = Callable[[str, str], bool]


class TrustError(ssl.SSLError):
    """The server's certificate is not trusted; the message says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def default_known_hosts() -> Path:
    """$CHAT_CLIENT_KNOWN_HOSTS, else $XDG_DATA_HOME (~/.local/share)/chat-client/known_hosts."""
    explicit = os.environ.get("CHAT_CLIENT_KNOWN_HOSTS")
    if explicit:
        return Path(explicit)
    return data_home() / "chat-client" / "known_hosts"


def fingerprint(der: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


class KnownHosts:
    """The fingerprints trusted on first use, one `host:port SHA256 fingerprint` line each."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, server: str) -> str | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            fields = line.split()
            if len(fields) == 3 and fields[0] == server and fields[1] == "SHA256":
                return fields[2]
        return None

    def add(self, server: str, value: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as file:
            file.write(f"{server} SHA256 {value}\n")


@dataclass(frozen=True)
class TlsSettings:
    """How the client trusts a server: `ca_file` (only that CA), else the system's store and
    trust on first use through `known_hosts` (asking `ask`; None: refuse an unknown one)."""

    ca_file: str | None = None
    known_hosts: Path | None = None
    ask: AskTrust | None = None

    def connect(
        self, host: str, port: int, timeout: float, ask: AskTrust | None = None
    ) -> TlsStream:
        """Opens a TCP connection and makes it TLS, trusted as above; `ask` is asked about a
        certificate seen for the first time (None: it is refused).

        Raises:
            TrustError: the certificate is not trusted (changed, refused, wrong, unknown).
            OSError: connecting failed (ssl.SSLError included).
        """
        server = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        known = KnownHosts(self.known_hosts or default_known_hosts())
        pinned = None if self.ca_file else known.get(server)
        if pinned is None:
            context = ssl.create_default_context(cafile=self.ca_file)
            try:
                return _open(host, port, timeout, context)
            except ssl.SSLCertVerificationError as error:
                if self.ca_file or error.verify_code not in _UNKNOWN_ISSUER:
                    raise TrustError(
                        f"the certificate of {server} is not valid: {error.verify_message}"
                        + (f" (checked against --tls-ca {self.ca_file})" if self.ca_file else "")
                    ) from error
        # Trust on first use: take whatever certificate comes, then compare its fingerprint.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        stream = _open(host, port, timeout, context)
        try:
            seen = fingerprint(stream.peer_certificate())
            if pinned is not None and seen != pinned:
                raise TrustError(
                    f"WARNING: THE CERTIFICATE OF {server} HAS CHANGED! It was {pinned}, it is"
                    f" now {seen}. Someone may be listening in, or the server has a new"
                    f" certificate: ask its owner. If it is expected, delete the line for"
                    f" {server} from {known.path}."
                )
            if pinned is None:
                if ask is None:
                    raise TrustError(
                        f"the certificate of {server} is not signed by an authority this system"
                        f" trusts (SHA-256 {seen}); connect once on a terminal to check and"
                        f" trust it, or give its CA with --tls-ca"
                    )
                if not ask(server, seen):
                    raise TrustError(f"the certificate of {server} was not trusted")
                known.add(server, seen)
        except BaseException:
            stream.close()
            raise
        return stream


def _open(host: str, port: int, timeout: float, context: ssl.SSLContext) -> TlsStream:
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        return TlsStream(sock, context, host)
    except BaseException:
        sock.close()
        raise


class TlsStream:
    """A TLS connection over a blocking socket that one thread reads and another writes.

    It looks like the socket to the client's connection (`recv`, `sendall`, `settimeout`,
    `setsockopt`, `shutdown`, `close`). An OpenSSL connection must not be used by two threads
    at once, so the TLS state is an `SSLObject` between two memory buffers.

    Thread safety: `_lock` guards the SSLObject and both buffers, held only for computation in
    memory. `_send_lock` is taken before `_lock` by whoever moves ciphertext to the socket (the
    writer's `sendall`, the reader when a read made TLS output, e.g. a KeyUpdate answer) and
    held across that send, so records reach the socket in the order they were made. The
    reader's `recv` from the socket holds neither.
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, host: str) -> None:
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(self._incoming, self._outgoing, server_hostname=host)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        while True:  # the handshake, in the thread that connects
            with self._lock:
                try:
                    self._object.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
            self._flush()
            if done:
                return
            data = sock.recv(RECV_BYTES)
            if not data:
                raise ConnectionError("the server closed the connection during the TLS handshake")
            with self._lock:
                self._incoming.write(data)

    def peer_certificate(self) -> bytes:
        certificate = self._object.getpeercert(binary_form=True)
        if not certificate:
            raise TrustError("the server sent no certificate")
        return certificate

    @property
    def version(self) -> str | None:
        return self._object.version()

    def recv(self, size: int) -> bytes:
        """Plaintext, b"" at the end; blocks as the socket does (settimeout)."""
        while True:
            with self._lock:
                try:
                    data: bytes | None = self._object.read(size)
                except ssl.SSLWantReadError:
                    data = None
                except ssl.SSLZeroReturnError:  # close_notify
                    data = b""
                output = self._outgoing.pending > 0
            if output:
                self._flush()
            if data is not None:
                return data
            raw = self._sock.recv(RECV_BYTES)
            if not raw:
                return b""
            with self._lock:
                self._incoming.write(raw)

    def sendall(self, data: bytes) -> None:
        with self._send_lock:
            with self._lock:
                self._object.write(data)
                wire = self._outgoing.read()
            self._sock.sendall(wire)

    def _flush(self) -> None:
        with self._send_lock:
            with self._lock:
                wire = self._outgoing.read()
            if wire:
                self._sock.sendall(wire)

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self._sock.setsockopt(level, option, value)

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        """Says close_notify if nobody is sending (never waits for it), then closes."""
        if self._send_lock.acquire(blocking=False):
            try:
                with self._lock:
                    with contextlib.suppress(ssl.SSLError):
                        self._object.unwrap()
                    wire = self._outgoing.read()
                with contextlib.suppress(OSError):
                    self._sock.setblocking(False)
                    self._sock.send(wire)
            finally:
                self._send_lock.release()
        self._sock.close()
