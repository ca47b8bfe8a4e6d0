"""SqliteStore: history and room records in one SQLite file, written by one thread in batches.

The hub offers events under its lock; `offer_event` appends them to a bounded queue and returns
at once. One writer thread takes everything queued, writes it in one transaction, commits, and
goes back for more: the busier the chat, the bigger the batch, and nothing ever waits to fill
one. The file is in WAL mode with `synchronous=NORMAL`: a commit survives the process being
killed (it is in the WAL, in the operating system's hands), only a power cut may lose the last
commits, and the file is never corrupt. So `kill -9` loses at most what was queued and not yet
committed: the events of the last batch window (docs/history.md gives the measured figure).

Readers (users asking for history) use connections of their own from a small pool, never the
writer's, and see the events still in the queue too, so an answer never has a hole where the
writer has not caught up yet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from chat.protocol import clean_text, room_key
from chat.store import (
    MAX_HISTORY_LIMIT,
    HistoryEvent,
    HistoryQuery,
    RoomRecord,
    StoreError,
    StoreStats,
    fields,
    from_fields,
    select,
    target_of,
)

log = logging.getLogger("chat.store")

# Events (and room records) that may wait for the writer. A commit of a few thousand rows takes
# a few milliseconds, so the queue only fills if the disk stalls; then history is dropped
# (counted, logged) rather than slowing the chat. 20,000 events of ~300 bytes are ~6 MB.
DEFAULT_QUEUE_EVENTS = 20_000
# The most rows in one transaction: bounds how long one commit holds the write lock, and what a
# stop()'s deadline may have to wait for.
MAX_BATCH = 5_000
# How long start() waits for a lock held by someone else before saying the file is locked.
START_BUSY_S = 1.0
# Reader connections: users asking for history at the same moment share these; more would
# only compete for the same disk.
READERS = 4
# Rows per INSERT statement within a batch's transaction (see _write).
INSERT_SLICE = 200
# Retention by age is applied this often by the writer (and once at start).
RETENTION_EVERY_S = 60.0

SCHEMA_VERSION = 2


def _v1(db: sqlite3.Connection) -> None:
    """The first schema: events by id (the hub's id is the rowid), rooms by key."""
    db.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, target TEXT NOT NULL, ts REAL NOT NULL,"
        " kind INTEGER NOT NULL, room TEXT NOT NULL, sender TEXT NOT NULL,"
        " recipient TEXT NOT NULL, userhost TEXT NOT NULL, text TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX events_by_target ON events (target, id)")
    db.execute(
        "CREATE TABLE rooms (key TEXT PRIMARY KEY, name TEXT NOT NULL, topic TEXT NOT NULL,"
        " topic_by TEXT NOT NULL, topic_ts REAL NOT NULL, room_key TEXT NOT NULL,"
        " secret INTEGER NOT NULL, creator TEXT NOT NULL, created_ts REAL NOT NULL)"
    )


def _v2(db: sqlite3.Connection) -> None:
    """`/history since 09:58` and `CHATHISTORY ... timestamp=`: find a time without a scan."""
    db.execute("CREATE INDEX events_by_time ON events (target, ts)")


# MIGRATIONS[n] takes a file of version n to version n + 1; a new file runs them all.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2)
assert len(MIGRATIONS) == SCHEMA_VERSION


def _row(event: HistoryEvent, target: str | None = None) -> tuple[Any, ...]:
    """The events table's row: the event's `fields()` with its target after the id (the kind
    column holds chat.store's kind codes)."""
    event_id, *rest = fields(event)
    return (event_id, target_of(event) if target is None else target, *rest)


_COLUMNS = "id, ts, kind, room, sender, recipient, userhost, text"
_BULK_INSERT = (
    "INSERT OR REPLACE INTO events SELECT "
    + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(9))
    + " FROM json_each(?)"
)


def _explain(path: str, error: BaseException) -> str:
    """One line for the operator: what is wrong with the file, and what to do."""
    text = str(error)
    lowered = text.lower()
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        what = "is corrupt or not a SQLite database"
        advice = "move it away (a new one is made) or pass another --history-db"
    elif "locked" in lowered or "busy" in lowered:
        what = "is locked by another program"
        advice = "stop the other program or pass another --history-db"
    elif "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        what = "cannot be written"
        advice = "check its permissions and its directory's, or pass another --history-db"
    elif "full" in lowered:
        what = "cannot grow: the disk is full"
        advice = "free some space, or pass --history-days/--history-max or another --history-db"
    else:
        what = "cannot be used"
        advice = "pass another --history-db, or --no-history"
    return f"history database {path} {what} ({text}); {advice}"


class SqliteStore:
    """The default HistoryStore (chat/store/__init__.py), on the standard library's sqlite3.

    Thread safety: `_lock` (a leaf lock) guards `_queue` (what the writer has yet to take: a
    list it swaps for an empty one in one step), `_unwritten` (target -> events offered and not
    yet committed, oldest first, for readers; the writer trims each list with one `del`),
    `_queued` (their count), the counters and `_stopping`. `offer_event` and `offer_room` run
    under the hub lock and only append under `_lock`; `_wake` (a Condition on `_lock`) wakes
    the writer. The writer thread alone uses the writer connection; readers take a connection
    from `_readers` (a pool of at most READERS, each used by one thread at a time), copy their
    conversation's `_unwritten` events first and read the file second (an event committed and
    forgotten in between is then in the file; duplicates by id count once), and never hold
    `_lock` while reading the file. Lock
    order: hub lock -> `_lock`; nothing else is nested.
    """

    def __init__(
        self,
        path: str,
        *,
        queue_events: int = DEFAULT_QUEUE_EVENTS,
        retention_days: float | None = None,
        max_per_target: int | None = None,
        max_page_count: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._memory = path == ":memory:"
        # A shared in-memory database: every connection of this store sees the same data.
        self._uri = (
            f"file:threadroom-{uuid.uuid4().hex}?mode=memory&cache=shared" if self._memory else None
        )
        self._queue_events = queue_events
        self._retention_s = retention_days * 86400 if retention_days else None
        self._max_per_target = max_per_target or None
        self._max_page_count = max_page_count  # tests: a tiny file that fills up (disk full)
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: list[tuple[str, HistoryEvent] | RoomRecord] = []
        self._unwritten: dict[str, list[HistoryEvent]] = {}
        self._bulk_json = True  # one INSERT ... FROM json_each(?) per batch (else executemany)
        self._queued = 0
        self._stopping = False
        self._deadline: float | None = None  # stop(): give up writing after this
        self._written = self._dropped = self._failed = 0
        self._drop_told = self._failure_told = False
        self._writer_db: sqlite3.Connection | None = None
        self._writer: threading.Thread | None = None
        self._readers: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._reader_count = 0
        self._all_readers: list[sqlite3.Connection] = []
        self._lock_file: int | None = None
        self._last_id = 0
        self._rooms: list[RoomRecord] = []
        self._stopped = False

    @property
    def description(self) -> str:
        return "memory (:memory:, lost at exit)" if self._memory else self.path

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._take_lock_file()
            db = self._connect(START_BUSY_S)
            try:
                self._prepare(db)
            except BaseException:
                db.close()
                raise
        except (sqlite3.Error, OSError) as error:
            self._release_lock_file()
            raise StoreError(_explain(self.path, error)) from None
        except StoreError:
            self._release_lock_file()
            raise
        self._writer_db = db
        self._writer = threading.Thread(target=self._write_loop, name="history writer")
        self._writer.start()

    def _take_lock_file(self) -> None:
        """One server per file: a second chat-server on it would number events twice."""
        if self._memory:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # not POSIX: no guard
            return
        fd = os.open(self.path + "-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise sqlite3.OperationalError(
                f"database is locked: another chat-server uses it ({self.path}-lock)"
            ) from None
        self._lock_file = fd

    def _release_lock_file(self) -> None:
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def _connect(self, busy_s: float) -> sqlite3.Connection:
        if self._uri is not None:
            db = sqlite3.connect(
                self._uri, uri=True, isolation_level=None, check_same_thread=False, timeout=busy_s
            )
            db.execute("PRAGMA read_uncommitted = 1")  # shared cache: readers never wait
            return db
        return sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=busy_s
        )

    def _prepare(self, db: sqlite3.Connection) -> None:
        """WAL, the schema (created or migrated), a write probe, what the hub restores."""
        if not self._memory:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot use WAL mode (journal_mode={mode})")
            # NORMAL in WAL mode: a commit survives a crash of the process (kill -9), not
            # necessarily a power cut; FULL would fsync every batch (docs/history.md).
            db.execute("PRAGMA synchronous = NORMAL")
        if self._max_page_count is not None:
            db.execute(f"PRAGMA max_page_count = {int(self._max_page_count)}")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"history database {self.path} was written by a newer threadroom (schema"
                f" {version}, this one knows {SCHEMA_VERSION}); upgrade, or pass another"
                " --history-db"
            )
        # One transaction: the migration happens whole or not at all. It is also the write
        # probe: a read-only, locked or full file fails here, at start, not at the first message.
        db.execute("BEGIN IMMEDIATE")
        try:
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if version and version < SCHEMA_VERSION:
            log.info(
                "history: %s migrated from schema %d to %d", self.path, version, SCHEMA_VERSION
            )
        row = db.execute("SELECT max(id) FROM events").fetchone()
        self._last_id = int(row[0] or 0)
        try:
            db.execute("SELECT json_extract('[1]', '$[0]')").fetchone()
        except sqlite3.OperationalError:  # an SQLite built without JSON: a row at a time
            self._bulk_json = False
        self._rooms = [  # topics cleaned as from_fields cleans texts: written by an older version
            RoomRecord(name, clean_text(topic), by, topic_ts, key, bool(secret), creator, created)
            for name, topic, by, topic_ts, key, secret, creator, created in db.execute(
                "SELECT name, topic, topic_by, topic_ts, room_key, secret, creator, created_ts"
                " FROM rooms ORDER BY created_ts"
            )
        ]

    def last_id(self) -> int:
        return self._last_id

    def rooms(self) -> Sequence[RoomRecord]:
        return tuple(self._rooms)

    def latest(self, targets: Sequence[str], limit: int) -> dict[str, list[HistoryEvent]]:
        found: dict[str, list[HistoryEvent]] = {}
        for target in targets:
            events = self.history(HistoryQuery(target, limit=limit))
            if events:
                found[target] = events
        return found

    # -- offers (under the hub lock: never block) ----------------------------------------------

    def offer_event(self, event: HistoryEvent) -> bool:
        with self._lock:
            if self._stopping or self._queued >= self._queue_events:
                self._dropped += 1
                return False
            target = target_of(event)
            self._queue.append((target, event))
            pending = self._unwritten.get(target)
            if pending is None:
                self._unwritten[target] = [event]
            else:
                pending.append(event)
            self._queued += 1
            if self._queued == 1:
                self._wake.notify()
            return True

    def offer_room(self, record: RoomRecord) -> bool:
        with self._lock:
            if self._stopping or self._queued >= self._queue_events:
                self._dropped += 1
                return False
            self._queue.append(record)
            self._queued += 1
            if self._queued == 1:
                self._wake.notify()
            return True

    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(
                self._written, self._dropped, self._failed, bool(self._dropped or self._failed)
            )

    # -- reading (reader threads, no hub lock) -------------------------------------------------

    def history(self, query: HistoryQuery) -> list[HistoryEvent]:
        limit = max(0, min(query.limit, MAX_HISTORY_LIMIT))
        if limit == 0:
            return []
        # The unwritten events first, then the file: an event the writer commits and forgets
        # in between is in the file by the time it is read. (The other order loses it: read
        # the file, the writer commits and forgets, read the queue: in neither.)
        with self._lock:
            pending = list(self._unwritten.get(query.target, ()))
        try:
            db = self._take_reader()
        except (queue.Empty, sqlite3.Error) as error:  # every reader busy for 30 s, or no file
            log.warning("history: no reader for %s: %r", self.description, error)
            return select(pending, query)
        try:
            rows = self._query(db, query, limit)
        except sqlite3.Error as error:
            log.warning("history: reading %s failed: %s", self.path, error)
            rows = []
        finally:
            self._readers.put(db)
        return select([*rows, *pending], query)

    def _take_reader(self) -> sqlite3.Connection:
        try:
            return self._readers.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            make = self._reader_count < READERS
            if make:
                self._reader_count += 1
        if not make:
            return self._readers.get(timeout=30.0)  # another reader is querying: its turn next
        try:
            db = self._connect(5.0)
            if not self._memory:
                db.execute("PRAGMA query_only = 1")
        except sqlite3.Error:
            with self._lock:
                self._reader_count -= 1
            raise
        with self._lock:
            self._all_readers.append(db)
        return db

    def _query(self, db: sqlite3.Connection, query: HistoryQuery, limit: int) -> list[HistoryEvent]:
        """The events that may answer `query` (select() makes the final cut), by index seeks."""
        target = query.target
        lower, upper = query.after, query.before
        # A time bound becomes an id bound (ids and times grow together: the hub stamps both
        # under its lock), found through the (target, ts) index.
        if query.after_ts is not None:
            row = db.execute(
                "SELECT id FROM events WHERE target = ? AND ts > ? ORDER BY ts LIMIT 1",
                (target, query.after_ts),
            ).fetchone()
            bound = (row[0] - 1) if row else self._last_id_in(db, target)
            lower = bound if lower is None else max(lower, bound)
        if query.before_ts is not None:
            row = db.execute(
                "SELECT id FROM events WHERE target = ? AND ts < ? ORDER BY ts DESC LIMIT 1",
                (target, query.before_ts),
            ).fetchone()
            bound = (row[0] + 1) if row else 0
            upper = bound if upper is None else min(upper, bound)
        base = f"SELECT {_COLUMNS} FROM events WHERE target = ?"
        rows: list[tuple[Any, ...]] = []
        if query.around is not None:
            rows += db.execute(
                f"{base} AND id < ? ORDER BY id DESC LIMIT ?", (target, query.around, limit)
            ).fetchall()
            rows += db.execute(
                f"{base} AND id >= ? ORDER BY id LIMIT ?", (target, query.around, limit + 1)
            ).fetchall()
        else:
            where, args = base, list[Any]([target])
            if lower is not None:
                where += " AND id > ?"
                args.append(lower)
            if upper is not None:
                where += " AND id < ?"
                args.append(upper)
            order = "DESC" if query.keeps_newest() else "ASC"
            rows = db.execute(f"{where} ORDER BY id {order} LIMIT ?", (*args, limit)).fetchall()
        return [from_fields(row) for row in rows]

    @staticmethod
    def _last_id_in(db: sqlite3.Connection, target: str) -> int:
        row = db.execute("SELECT max(id) FROM events WHERE target = ?", (target,)).fetchone()
        return int(row[0] or 0)

    # -- the writer thread ---------------------------------------------------------------------

    def _write_loop(self) -> None:
        db = self._writer_db
        assert db is not None
        next_retention = 0.0
        inserted: dict[str, int] = {}  # target -> rows since its last trim by count
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if not self._queue:
                    break  # stopping, and everything is written
                if self._deadline is not None and time.monotonic() > self._deadline:
                    left = self._queued
                    self._dropped += left
                    self._queue.clear()
                    self._unwritten.clear()
                    self._queued = 0
                    log.warning("history: stop deadline: %d queued event(s) not written", left)
                    break
                if len(self._queue) <= MAX_BATCH:  # take it all, in one step
                    batch, self._queue = self._queue, []
                else:
                    batch = self._queue[:MAX_BATCH]
                    del self._queue[:MAX_BATCH]
                drops_to_tell = self._dropped if not self._drop_told and self._dropped else 0
                if drops_to_tell:
                    self._drop_told = True
            if drops_to_tell:
                log.warning(
                    "history degraded: the writer fell behind and %d event(s) were not stored"
                    " (queue of %d full); chat goes on, further drops are only counted",
                    drops_to_tell,
                    self._queue_events,
                )
            # Everything but the commit itself is done outside the lock: offers (under the hub
            # lock) never wait for more than a few dict operations.
            counts: dict[str, int] = {}
            rows: list[tuple[Any, ...]] = []
            records: list[RoomRecord] = []
            for item in batch:
                if isinstance(item, RoomRecord):
                    records.append(item)
                else:
                    target, event = item
                    counts[target] = counts.get(target, 0) + 1
                    rows.append(_row(event, target))
            error = self._write(db, rows, records)
            with self._lock:
                for target, count in counts.items():
                    pending = self._unwritten[target]
                    del pending[:count]  # the oldest of its list are this batch's
                    if not pending:
                        del self._unwritten[target]
                self._queued -= len(batch)
                if error is None:
                    self._written += len(rows)
                else:
                    self._failed += len(rows)
                tell_failure = error is not None and not self._failure_told
                if tell_failure:
                    self._failure_told = True
            if tell_failure:
                log.error(
                    "history degraded: writing %s failed (%s); %d event(s) lost, chat goes on,"
                    " further failures are only counted",
                    self.description,
                    error,
                    len(rows),
                )
            if error is None:
                for target, count in counts.items():
                    inserted[target] = inserted.get(target, 0) + count
                next_retention = self._apply_retention(db, inserted, next_retention)
        self._close_connections()

    def _write(
        self, db: sqlite3.Connection, events: list[tuple[Any, ...]], records: list[RoomRecord]
    ) -> str | None:
        """One transaction for the whole batch; the error's text if it failed (rolled back).

        The rows go in as one JSON array through `json_each`: one statement for the batch
        instead of one per row, so the writer holds the interpreter (which the reader and
        sender threads need) for a `json.dumps` instead of a Python loop of bindings.
        """
        rooms = [
            (
                room_key(r.name),
                r.name,
                r.topic,
                r.topic_by,
                r.topic_ts,
                r.key,
                int(r.secret),
                r.creator,
                r.created_ts,
            )
            for r in records
        ]
        try:
            db.execute("BEGIN")
            if self._bulk_json:
                # In slices: json.dumps holds the interpreter while it runs, and the sender
                # thread (which every delivery waits for) must not wait behind a whole batch.
                for start in range(0, len(events), INSERT_SLICE):
                    db.execute(_BULK_INSERT, (json.dumps(events[start : start + INSERT_SLICE]),))
            else:
                db.executemany("INSERT OR REPLACE INTO events VALUES (?,?,?,?,?,?,?,?,?)", events)
            db.executemany("INSERT OR REPLACE INTO rooms VALUES (?,?,?,?,?,?,?,?,?)", rooms)
            db.execute("COMMIT")
        except sqlite3.Error as error:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            return str(error)
        return None

    def _apply_retention(
        self, db: sqlite3.Connection, inserted: dict[str, int], next_age_check: float
    ) -> float:
        """Deletes by age (every RETENTION_EVERY_S) and by count per conversation (when one has
        had a tenth of its maximum since its last trim): small deletes between batches, so chat
        never waits for them. Returns when to check ages next."""
        try:
            if self._retention_s is not None and time.monotonic() >= next_age_check:
                next_age_check = time.monotonic() + RETENTION_EVERY_S
                cutoff = self._clock() - self._retention_s
                db.execute("DELETE FROM events WHERE ts < ?", (cutoff,))
            keep = self._max_per_target
            if keep is not None:
                for target, count in list(inserted.items()):
                    if count >= max(1, keep // 10):
                        del inserted[target]
                        db.execute(
                            "DELETE FROM events WHERE target = ? AND id <= (SELECT id FROM events"
                            " WHERE target = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                            (target, target, keep),
                        )
        except sqlite3.Error as error:
            log.warning("history: retention on %s failed: %s", self.description, error)
        return next_age_check

    def _close_connections(self) -> None:
        with self._lock:
            readers = list(self._all_readers)
            self._all_readers.clear()
        for db in readers:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        if self._writer_db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._writer_db.close()

    # -- stop ----------------------------------------------------------------------------------

    def stop(self, timeout_s: float) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stopping = True
            self._deadline = time.monotonic() + timeout_s
            queued = self._queued
            self._wake.notify()
        if self._writer is None:
            self._release_lock_file()
            return
        self._writer.join()  # it gives up at the deadline, after at most one batch
        stats = self.stats()
        log.info(
            "history: %d event(s) written, %d dropped, %d failed (%d were queued at stop)",
            stats.written,
            stats.dropped,
            stats.failed,
            queued,
        )
        self._release_lock_file()
