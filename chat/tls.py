"""TLS: the server's certificate (loaded, checked, reloaded) and one connection's TLS state.

A ChatServer imports this (and `ssl`) only when a TLS port is configured; chat-server imports
it for its error type.

A TLS connection is read by its reader thread and written by the sender thread, and an OpenSSL
connection object must never be used by two threads at once. So the socket is never wrapped in
an `ssl.SSLSocket`; each connection has an `ssl.SSLObject` over two memory buffers
(`ssl.MemoryBIO`): TLS is computation on bytes in memory, done under a small per-connection lock,
and every socket call happens outside that lock, by the thread that already does it for
plaintext (the reader receives, the sender sends). See docs/tls.md and docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable

log = logging.getLogger("chat.tls")

# A handshake must be over by the registration deadline; with that turned off
# (--register-timeout 0) it still has this long, so a stalled handshake cannot hold a thread.
HANDSHAKE_TIMEOUT_S = 30.0
# Plaintext taken from the TLS buffers at a time (a TLS record is at most 16 KiB).
READ_BYTES = 64 * 1024


class TlsConfigError(Exception):
    """The certificate or key cannot be used; `message` is one line for the person starting
    the server."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer, the standard library's defaults otherwise, no
    client-initiated renegotiation (a TLS 1.2 CPU-exhaustion vector; TLS 1.3 has none).

    Raises:
        TlsConfigError: a file is missing or unreadable, or the key does not match.
    """
    for option, path in (("--tls-cert", cert_file), ("--tls-key", key_file)):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            raise TlsConfigError(
                f"cannot read {option} {path}: {error.strerror or error}"
            ) from error
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    # No TLS 1.3 session tickets: our clients never resume a session, and each ticket costs the
    # server an encryption per handshake and the client bytes it never uses.
    context.num_tickets = 0
    try:
        # A password callback that refuses: OpenSSL would otherwise ask for an encrypted key's
        # pass phrase on the terminal, and the server (or its reload on SIGHUP) would hang.
        context.load_cert_chain(cert_file, key_file, password=_no_pass_phrase)
    except ssl.SSLError as error:
        reason = error.reason or str(error)
        if "KEY_VALUES_MISMATCH" in reason.upper():
            what = f"--tls-key {key_file} is not the key of --tls-cert {cert_file}"
        else:
            what = _which_file_is_wrong(cert_file, key_file) or (
                f"--tls-cert {cert_file} / --tls-key {key_file} cannot be used ({reason})"
            )
        raise TlsConfigError(what) from error
    except ValueError as error:  # e.g. an encrypted key (no password can be given)
        raise TlsConfigError(f"--tls-key {key_file} cannot be used ({error})") from error
    return context


def _which_file_is_wrong(cert_file: str, key_file: str) -> str | None:
    """Which file is not what its option asks for, in words (OpenSSL only says "PEM lib"), or
    None when both look right. The files were readable a moment ago; they are small."""

    def holds(path: str, marker: bytes) -> bool:
        try:
            with open(path, "rb") as file:
                return marker in file.read()
        except OSError:
            return True  # not ours to explain: OpenSSL's reason stands

    cert_ok = holds(cert_file, b"-----BEGIN CERTIFICATE-----")
    key_ok = holds(key_file, b"PRIVATE KEY-----")
    if not cert_ok and not key_ok and holds(cert_file, b"PRIVATE KEY-----"):
        return (
            f"--tls-cert {cert_file} holds a key and --tls-key {key_file} no key: are they swapped?"
        )
    if not cert_ok:
        return f"--tls-cert {cert_file} holds no certificate (no -----BEGIN CERTIFICATE-----)"
    if not key_ok:
        return f"--tls-key {key_file} holds no private key (no -----BEGIN ... PRIVATE KEY-----)"
    return None


def _no_pass_phrase() -> str:
    raise ValueError("the key is encrypted: give chat-server an unencrypted key")


def fingerprint(cert_file: str) -> str:
    """The SHA-256 fingerprint of the first certificate in a PEM file, as clients show it
    (AB:CD:...)."""
    with open(cert_file, encoding="ascii", errors="replace") as file:
        pem = file.read()
    end = "-----END CERTIFICATE-----"
    first = pem[: pem.index(end) + len(end)] if end in pem else pem
    return colon_hex(hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).digest())


def colon_hex(digest: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in digest)


class ServerTls:
    """The server's certificate: the context new connections get, swapped on reload.

    Thread safety: `context` is replaced by one assignment (`reload()`, from the main thread on
    SIGHUP) and read by the accept thread when it admits a connection; a connection keeps the
    context it was made with, so a reload drops nobody and changes nothing under a handshake.
    """

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = server_context(cert_file, key_file)
        self.fingerprint = fingerprint(cert_file)

    def reload(self) -> str:
        """Loads the files again; the new certificate serves new connections. Returns its
        fingerprint. Raises TlsConfigError (and keeps the old one) if they cannot be used."""
        context = server_context(self.cert_file, self.key_file)
        new_fingerprint = fingerprint(self.cert_file)
        self.context, self.fingerprint = context, new_fingerprint
        return new_fingerprint

    def session(self, timeout_s: float | None) -> TlsSession:
        """A new connection's TLS state; the handshake must be over within `timeout_s` (the
        registration timeout; None: HANDSHAKE_TIMEOUT_S)."""
        return TlsSession(self.context, timeout_s or HANDSHAKE_TIMEOUT_S)


class TlsSession:
    """One connection's TLS state: an `SSLObject` between two memory buffers.

    The reader thread `feed()`s what it received and gets plaintext; the sender thread
    `seal()`s plaintext and sends what `outgoing()` holds. Neither calls the socket under the
    lock.

    Thread safety: `_lock` (a leaf lock) guards the `SSLObject`, both memory buffers,
    `established` and `_closed`; it is held for computation on bytes in memory, never for a
    system call. `established` goes from False to True once, set by the reader under the lock;
    the sender reads it without the lock (a stale False only delays a send until the reader's
    next `ready()`, which always follows the handshake). `_wire` (ciphertext taken out of the
    buffer and not yet accepted by the socket) belongs to the sender thread alone, so records
    reach the socket in the order OpenSSL made them: only the sender drains the buffer. The
    reader waits for the sender to send everything (its close_notify) with `wait_sent()`.
    """

    __slots__ = (
        "_closed",
        "_incoming",
        "_lock",
        "_object",
        "_outgoing",
        "_sent",
        "_wire",
        "deadline",
        "established",
    )

    def __init__(self, context: ssl.SSLContext, timeout_s: float) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._lock = threading.Lock()
        self._wire = bytearray()  # the sender's: ciphertext the socket has not taken yet
        self._sent: threading.Condition | None = None  # made for a reader that waits
        self._closed = False
        self.established = False
        self.deadline = time.monotonic() + timeout_s

    # -- the reader thread ----------------------------------------------------------------

    def feed(self, data: bytes, label: Callable[[], str]) -> tuple[bytes, bool, bool]:
        """Takes ciphertext the reader received.

        Returns:
            (plaintext, ended, output): the plaintext that is complete now; whether the client
            said close_notify; whether TLS has something to send (handshake messages, a
            KeyUpdate answer): the reader then has the sender send it.

        Raises:
            ConnectionError: not TLS, or TLS gone wrong (logged at debug level, no traceback).
        """
        plaintext: list[bytes] = []
        ended = just_established = False
        with self._lock:
            self._incoming.write(data)
            try:
                if not self.established:
                    try:
                        self._object.do_handshake()
                    except ssl.SSLWantReadError:
                        return b"", False, self._outgoing.pending > 0
                    self.established = just_established = True
                    log.debug(
                        "%s: TLS established (%s, %s)",
                        label(),
                        self._object.version(),
                        (self._object.cipher() or ("?",))[0],
                    )
                while True:
                    chunk = self._object.read(READ_BYTES)
                    if not chunk:
                        ended = True
                        break
                    plaintext.append(chunk)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                ended = True
            except ssl.SSLError as error:
                what = "handshake" if not self.established else "TLS"
                log.debug("%s: %s failed: %s", label(), what, error.reason or error)
                raise ConnectionError(f"TLS: {error.reason or error}") from None
            # Just established: the greeting queued meanwhile may go now.
            output = just_established or self._outgoing.pending > 0
        return b"".join(plaintext), ended, output

    def close_notify(self) -> None:
        """Puts a close_notify alert in the outgoing buffer (once): the client learns the end
        is the end and not a cut. Any thread; the sender sends it."""
        with self._lock:
            if self._closed or not self.established:
                return
            self._closed = True
            # Want-read: ours is said, and theirs is not needed.
            with contextlib.suppress(ssl.SSLError):
                self._object.unwrap()

    def wait_sent(self, timeout: float) -> bool:
        """Waits (the reader, at the end) until the sender has sent everything TLS made."""
        with self._lock:
            if self._sent is None:
                self._sent = threading.Condition(self._lock)
            return self._sent.wait_for(
                lambda: not self._wire and not self._outgoing.pending, timeout
            )

    # -- the sender thread ----------------------------------------------------------------

    def seal(self, plaintext: bytes) -> None:
        """Encrypts plaintext into the outgoing buffer (after the handshake)."""
        with self._lock:
            if not self._closed:
                self._object.write(plaintext)

    def outgoing(self) -> bytearray:
        """Everything waiting to be sent (moved out of the TLS buffer): the sender's to send.
        Only the sender calls this."""
        with self._lock:
            if self._outgoing.pending:
                self._wire += self._outgoing.read()
        return self._wire

    def discard(self) -> None:
        """Forgets unsent ciphertext: the socket is cut. The sender's."""
        with self._lock:
            self._wire.clear()
            if self._outgoing.pending:
                self._outgoing.read()
            if self._sent is not None:
                self._sent.notify_all()

    def sent(self, count: int) -> bool:
        """The socket took `count` bytes of `outgoing()`; True if some are left."""
        with self._lock:
            del self._wire[:count]
            left = bool(self._wire)
            if not left and self._sent is not None and not self._outgoing.pending:
                self._sent.notify_all()
        return left
