"""The durable outbox of server messages: SQLite (WAL) in the gateway's storage file.

Delivery is at-least-once: a message leaves the outbox only after its server answered 2xx (or it was given
up after ``webhooks.max_age_seconds``, and then it is kept in ``outbox_given_up`` for inspection). Messages of
one call are handed out strictly in order: only the oldest undelivered message of a call is ever due, so
message n+1 is never POSTed before message n succeeded; different calls never wait for each other.

Writes come two ways: :meth:`Outbox.add` buffers a message in memory (no I/O; :meth:`Outbox.flush`, run by the
delivery worker at least every 100 ms, commits the buffer), and :meth:`Outbox.add_durable` commits at once
together with whatever is buffered (the end-of-call report: it is on disk before the call's release
completes). Both keep the order in which messages were added, because the buffer is swapped and written under
the same lock as every other write.

Time is a parameter: every method that needs the time takes ``now`` (Unix seconds); nothing here reads a
clock or sleeps. The class is thread-safe: the delivery worker runs it in one dedicated thread, the event loop
only calls :meth:`add` (a list append) and :meth:`add_durable`.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Outbox", "OutboxEntry", "OutboxMessage", "RetryPolicy", "RetryVerdict"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    type TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT,
    headers TEXT NOT NULL DEFAULT '{}',
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_messages_call ON outbox_messages (call_id, id);
CREATE TABLE IF NOT EXISTS outbox_given_up (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    type TEXT NOT NULL,
    url TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    given_up_at REAL NOT NULL
);
"""

_COLUMNS = "id, call_id, type, url, secret, headers, body, created_at, attempts, next_attempt_at, last_error"


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxEntry:
    """A message to queue: where it goes, how it is signed, and the exact body (``{"message": {...}}``)."""

    call_id: str
    type: str
    url: str
    secret: str | None
    body: bytes
    created_at: float
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxMessage:
    """A queued message as stored; ``attempts`` counts the failed deliveries so far."""

    id: int
    call_id: str
    type: str
    url: str
    secret: str | None
    headers: dict[str, str]
    body: bytes
    created_at: float
    attempts: int
    next_attempt_at: float
    last_error: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryVerdict:
    """After a failed attempt: retry at ``next_attempt_at``, or give up (``next_attempt_at`` is None)."""

    next_attempt_at: float | None

    @property
    def give_up(self) -> bool:
        return self.next_attempt_at is None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Exponential back-off: ``initial`` doubling per failure up to ``maximum``, each delay scaled by a random
    factor in ``[1 - jitter, 1 + jitter]`` (so many calls failing together do not retry in lockstep). A message
    is tried for ``max_age`` seconds from its creation: the last attempt is made at that deadline, a failure
    after it gives the message up."""

    initial: float
    maximum: float
    max_age: float
    jitter: float = 0.2

    def delay(self, attempts: int, rng: random.Random) -> float:
        """The wait after the ``attempts``-th failure (1 = the first)."""
        base = min(self.maximum, self.initial * 2.0 ** min(max(attempts - 1, 0), 60))
        factor = 1.0 + self.jitter * (2.0 * rng.random() - 1.0)
        return min(self.maximum, base * factor)

    def after_failure(self, *, created_at: float, attempts: int, now: float, rng: random.Random) -> RetryVerdict:
        deadline = created_at + self.max_age
        if now >= deadline:
            return RetryVerdict(next_attempt_at=None)
        return RetryVerdict(next_attempt_at=min(deadline, now + self.delay(attempts, rng)))


class Outbox:
    """The SQLite outbox (see module doc). ``path`` may be ``":memory:"``."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        target = str(path)
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        # One connection, used from the worker thread and (for add_durable) the loop thread, never at the
        # same time: every use holds _db_lock.
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None, timeout=5.0)
        self._db_lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._pending: list[OutboxEntry] = []
        with self._db_lock:
            if target != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: in WAL mode every commit is fsynced, so an end-of-call report survives a power cut too.
            self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
            (stored,) = self._db.execute("SELECT COUNT(*) FROM outbox_messages").fetchone()
        self._depth = int(stored)

    # ------------------------------------------------------------------ writes

    def add(self, entry: OutboxEntry) -> None:
        """Buffer ``entry`` in memory; it reaches the disk at the next :meth:`flush` (or :meth:`add_durable`)."""
        with self._pending_lock:
            self._pending.append(entry)
            self._depth += 1

    def add_durable(self, entry: OutboxEntry) -> int:
        """Commit ``entry`` now, after everything buffered before it; returns its id."""
        with self._pending_lock:
            self._depth += 1
        with self._db_lock:
            batch = self._take_pending()
            ids = self._insert([*batch, entry])
        return ids[-1]

    def flush(self) -> int:
        """Commit the buffered messages; returns how many were written."""
        with self._db_lock:
            batch = self._take_pending()
            if batch:
                self._insert(batch)
        return len(batch)

    @property
    def pending(self) -> int:
        """Messages buffered in memory, not yet on disk."""
        with self._pending_lock:
            return len(self._pending)

    @property
    def depth(self) -> int:
        """Messages waiting for delivery (buffered or stored)."""
        with self._pending_lock:
            return self._depth

    def _take_pending(self) -> list[OutboxEntry]:
        with self._pending_lock:
            batch, self._pending = self._pending, []
        return batch

    def _insert(self, entries: Iterable[OutboxEntry]) -> list[int]:
        ids: list[int] = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for e in entries:
                cursor = self._db.execute(
                    "INSERT INTO outbox_messages (call_id, type, url, secret, headers, body, created_at, "
                    "attempts, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
                    (e.call_id, e.type, e.url, e.secret, json.dumps(dict(e.headers)), e.body, e.created_at,
                     e.created_at),
                )
                ids.append(int(cursor.lastrowid or 0))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return ids

    # ------------------------------------------------------------------ delivery

    def due(self, now: float, *, limit: int, busy_calls: Iterable[str] = ()) -> list[OutboxMessage]:
        """Up to ``limit`` messages to POST now: the oldest message of each call not in ``busy_calls`` (calls
        with a delivery in flight), when its next attempt time has come; earliest first."""
        busy = set(busy_calls)
        if limit <= 0:
            return []
        with self._db_lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox_messages WHERE id IN "
                "(SELECT MIN(id) FROM outbox_messages GROUP BY call_id) AND next_attempt_at <= ? "
                "ORDER BY next_attempt_at, id",
                (now,),
            ).fetchall()
        out = []
        for row in rows:
            message = _message(row)
            if message.call_id in busy:
                continue
            out.append(message)
            if len(out) >= limit:
                break
        return out

    def next_due_at(self, *, busy_calls: Iterable[str] = ()) -> float | None:
        """When the next message (of a call not in ``busy_calls``) becomes due; None: nothing is waiting."""
        busy = set(busy_calls)
        with self._db_lock:
            rows = self._db.execute(
                "SELECT call_id, next_attempt_at FROM outbox_messages WHERE id IN "
                "(SELECT MIN(id) FROM outbox_messages GROUP BY call_id) ORDER BY next_attempt_at",
            ).fetchall()
        return next((float(at) for call_id, at in rows if call_id not in busy), None)

    def delivered(self, message_id: int) -> None:
        """A 2xx came back: the message leaves the outbox."""
        with self._db_lock:
            cursor = self._db.execute("DELETE FROM outbox_messages WHERE id = ?", (message_id,))
        if cursor.rowcount:
            with self._pending_lock:
                self._depth -= 1

    def retry(self, message_id: int, *, next_attempt_at: float, error: str) -> None:
        """The attempt failed: count it, remember why, try again at ``next_attempt_at``."""
        with self._db_lock:
            self._db.execute(
                "UPDATE outbox_messages SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
                "WHERE id = ?",
                (error, next_attempt_at, message_id),
            )

    def give_up(self, message_id: int, *, now: float, error: str) -> None:
        """Too old to retry: move the message to ``outbox_given_up``, which unblocks the call's next one."""
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO outbox_given_up (id, call_id, type, url, body, created_at, attempts, "
                    "last_error, given_up_at) SELECT id, call_id, type, url, body, created_at, attempts + 1, ?, ? "
                    "FROM outbox_messages WHERE id = ?",
                    (error, now, message_id),
                )
                cursor = self._db.execute("DELETE FROM outbox_messages WHERE id = ?", (message_id,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        if cursor.rowcount:
            with self._pending_lock:
                self._depth -= 1

    def reschedule_all(self, now: float) -> int:
        """Make every stored message due at ``now`` at the latest (a restart: try what was left at once)."""
        with self._db_lock:
            cursor = self._db.execute(
                "UPDATE outbox_messages SET next_attempt_at = ? WHERE next_attempt_at > ?", (now, now)
            )
        return int(cursor.rowcount)

    # ------------------------------------------------------------------ inspection

    def stored(self, call_id: str | None = None) -> list[OutboxMessage]:
        """Stored messages (of one call, or all), in delivery order."""
        with self._db_lock:
            if call_id is None:
                rows = self._db.execute(f"SELECT {_COLUMNS} FROM outbox_messages ORDER BY id").fetchall()
            else:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM outbox_messages WHERE call_id = ? ORDER BY id", (call_id,)
                ).fetchall()
        return [_message(row) for row in rows]

    def given_up(self) -> list[tuple[int, str, str, int, str | None]]:
        """``(id, call_id, type, attempts, last_error)`` of every message given up."""
        with self._db_lock:
            rows = self._db.execute(
                "SELECT id, call_id, type, attempts, last_error FROM outbox_given_up ORDER BY id"
            ).fetchall()
        return [(int(r[0]), str(r[1]), str(r[2]), int(r[3]), r[4]) for r in rows]

    def close(self) -> None:
        """Write what is buffered and close the database."""
        self.flush()
        with self._db_lock:
            self._db.close()


def _message(row: tuple[object, ...]) -> OutboxMessage:
    (id_, call_id, type_, url, secret, headers, body, created_at, attempts, next_at, error) = row
    try:
        parsed = json.loads(str(headers))
    except ValueError:
        parsed = {}
    return OutboxMessage(
        id=int(str(id_)),
        call_id=str(call_id),
        type=str(type_),
        url=str(url),
        secret=None if secret is None else str(secret),
        headers={str(k): str(v) for k, v in parsed.items()} if isinstance(parsed, dict) else {},
        body=bytes(body) if isinstance(body, (bytes, bytearray, memoryview)) else str(body).encode(),
        created_at=float(str(created_at)),
        attempts=int(str(attempts)),
        next_attempt_at=float(str(next_at)),
        last_error=None if error is None else str(error),
    )
