"""ServerConfig: every option of a chat server in one immutable object, with its default.

`chat-server`'s options (chat/__main__.py) fill one in; tests and embedders build one directly:

    ChatServer(ServerConfig(port=0, flood_rate=0))

What each limit means to a user is in docs/protocol.md; why each default has its size is said
next to it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from chat.hub import (
    DEFAULT_MAX_ROOMS,
    DEFAULT_QUIET_ROOM_SIZE,
    DEFAULT_ROOM,
    DEFAULT_ROOMS_PER_USER,
)

DEFAULT_PORT = 8888
# A thread per client: 500 clients are 500 threads, which a laptop handles easily; far beyond that
# the thread-per-client design is the wrong tool and admission says "server full" instead.
DEFAULT_MAX_CLIENTS = 500
# Enough for a family behind one NAT; a script opening hundreds of sockets is stopped.
DEFAULT_MAX_PER_ADDRESS = 20


def default_history_path() -> str:
    """chat-server's history file: $XDG_STATE_HOME/threadroom/history.sqlite3 (XDG's default
    for XDG_STATE_HOME is ~/.local/state, also used when it is relative: the XDG Base Directory
    spec says a relative path there is invalid and must be ignored)."""
    state = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):
        state = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "threadroom", "history.sqlite3")


@dataclass(frozen=True)
class ServerConfig:
    """The options of one server. Seconds are floats; None (or 0 on the command line) is "off"."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    irc_port: int | None = None  # None: no IRC listener
    room: str = DEFAULT_ROOM  # the default room, where text and JSON users land
    max_clients: int = DEFAULT_MAX_CLIENTS
    max_per_address: int = DEFAULT_MAX_PER_ADDRESS
    limit_loopback: bool = False  # apply max_per_address to 127.0.0.1 / ::1 too
    rooms_per_user: int = DEFAULT_ROOMS_PER_USER
    max_rooms: int = DEFAULT_MAX_ROOMS
    # Rooms with more members than this announce joins, parts and quits only to the user
    # concerned (chat/hub.py DEFAULT_QUIET_ROOM_SIZE); 0: every room announces them to all.
    quiet_room_size: int = DEFAULT_QUIET_ROOM_SIZE
    # Output that may wait for one client (its SendQ) before it is disconnected as too slow.
    sendq_bytes: int = 256 * 1024
    flood_rate: float = 10.0  # lines per second on average; 0: no flood control
    flood_burst: int = 20  # lines at once
    # A new connection must have registered (chosen a nickname) this long after it connected,
    # whatever it sends meanwhile: a deadline, so that trickling bytes cannot hold a slot.
    register_timeout_s: float | None = 60.0
    idle_timeout_s: float | None = None  # text/JSON users silent this long are disconnected
    password: str | None = None  # the server password; None: none
    # IRC liveness, as in ergo: PING a client silent for irc_ping_s, drop it when it has been
    # silent for irc_timeout_s in all.
    irc_ping_s: float = 90.0
    irc_timeout_s: float = 150.0
    server_name: str = "threadroom"
    # TLS (docs/tls.md): the certificate chain and key files (PEM), and the ports that speak
    # TLS; tls_only: the plaintext ports (port, irc_port) are not opened at all.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_port: int | None = None
    irc_tls_port: int | None = None
    tls_only: bool = False
    # -- history (#11, docs/history.md) --
    # Where messages and rooms are kept: a SQLite file, ":memory:", or None: no history. None
    # by default here, so tests and embedders never write to the user's state directory;
    # chat-server's --history-db defaults to default_history_path() instead. With cluster_url,
    # anything but None turns history on, kept in the cluster's Redis (the path is not used).
    history_db: str | None = None
    history_replay: int = 50  # messages replayed to a user joining a room (0: none)
    history_days: float | None = None  # delete messages older than this (None: keep)
    history_max: int | None = None  # keep at most this many messages per room (None: all)
    history_private: bool = False  # store private messages too (off: never written anywhere)
    # -- cluster (#12, chat/cluster, docs/cluster.md) --
    # redis://[:PASSWORD@]HOST:PORT/DB (rediss:// for TLS): several servers form one chat.
    # None: this process alone (chat/cluster and redis are never imported). Not in repr():
    # it may hold a password, and configs get logged.
    cluster_url: str | None = field(default=None, repr=False)
    # A node refreshes its liveness key this often; one silent for ~5 of them is gone.
    cluster_heartbeat_s: float = 1.5
    # The classroom's demo: nicknames claimed with a separate check then set (never for users)
    cluster_racy_claims: bool = False
    # --workers: several processes listen on one port (SO_REUSEPORT); the kernel spreads clients
    reuse_port: bool = False
    # -- end of cluster (#12) --

    def __post_init__(self) -> None:
        # 0 means "no limit", as on the command line (a socket timeout of 0 would mean
        # non-blocking, which is not what anyone asking for 0 s wants).
        if not self.register_timeout_s:
            object.__setattr__(self, "register_timeout_s", None)
        if not self.idle_timeout_s:
            object.__setattr__(self, "idle_timeout_s", None)
        if not self.password:
            object.__setattr__(self, "password", None)
        if not self.history_days:
            object.__setattr__(self, "history_days", None)
        if not self.history_max:
            object.__setattr__(self, "history_max", None)
