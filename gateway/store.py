"""The gateway's durable state in SQLite: assistants created over the API, call records, and each call's
event log (what ``GET /call``, ``GET /call/{id}/logs`` and ``voicegw logs calls`` read after a restart).

Tables are prefixed ``store_`` (the webhook outbox shares the file). Every statement runs on one worker
thread that owns the connection, so the event loop never waits on the disk: writes from call observers are
queued (fire and forget, in order) and the worker commits what queued up over ``COMMIT_DELAY`` in one
transaction (a group commit: at 150 call setups a second, one autocommitted statement per status change and
event was a quarter of the gateway's CPU), reads are awaited and see every write queued before them. Assistants are also kept in memory, because
``CallManager.assistant_for`` looks them up synchronously on the loop (:meth:`Store.get_assistant`).

Times are integer microseconds since the Unix epoch: the API's cursors (``createdAtLt`` with the last
item's ``createdAt``) compare exactly, with no float rounding between what a client saw and what is stored.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from gateway.observability.logging import get_logger

__all__ = ["AssistantRecord", "CallQuery", "Store", "StoreError", "iso_to_us", "us_to_iso"]

SCHEMA_VERSION = 1
MAX_PENDING_WRITES = 10_000  # queued event-log writes beyond this are dropped (call records never are)
COMMIT_DELAY = 0.05  # seconds a queued write waits for others to share its transaction

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS store_assistants (
    id TEXT PRIMARY KEY,
    name TEXT,
    body TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS store_calls (
    id TEXT PRIMARY KEY,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    status TEXT NOT NULL,
    assistant_id TEXT,
    phone_number_id TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS store_calls_created ON store_calls (created_us DESC, id DESC);
CREATE TABLE IF NOT EXISTS store_call_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS store_call_events_call ON store_call_events (call_id, seq);
"""

T = TypeVar("T")


class StoreError(Exception):
    """The database could not be opened or used (path not writable, corrupt file, newer schema)."""


def dt_to_us(moment: datetime) -> int:
    """Microseconds since the epoch, exactly; a naive datetime is UTC (as Vapi's API reads one)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return (moment - _EPOCH) // timedelta(microseconds=1)
    except OverflowError:  # a UTC offset pushed it past year 1 or 9999
        return -(2**62) if moment.year < 1970 else 2**62


def iso_to_us(text: str) -> int:
    """Vapi's ISO 8601 time (``2024-01-01T00:00:00.000Z``) → microseconds since the epoch."""
    return dt_to_us(datetime.fromisoformat(text.replace("Z", "+00:00")))


def us_to_iso(us: int) -> str:
    """Microseconds → ISO 8601 UTC with milliseconds and ``Z`` (the format of ``call_record.iso_time``)."""
    moment = _EPOCH + timedelta(microseconds=us)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True, kw_only=True)
class AssistantRecord:
    """An assistant created over the API: its Vapi body as given, and the server-managed fields."""

    id: str
    body: dict[str, Any]
    created_us: int
    updated_us: int

    def to_json(self) -> dict[str, Any]:
        """Vapi's ``Assistant``: the body plus ``id``, ``orgId``, ``createdAt``, ``updatedAt``."""
        return {**copy.deepcopy(self.body), "id": self.id, "orgId": "local",
                "createdAt": us_to_iso(self.created_us), "updatedAt": us_to_iso(self.updated_us)}


@dataclass(frozen=True, slots=True, kw_only=True)
class CallQuery:
    """``GET /call`` filters (Vapi's names); bounds are microseconds since the epoch. Newest first."""

    id: str | None = None
    assistant_id: str | None = None
    phone_number_id: str | None = None
    created_gt: int | None = None
    created_lt: int | None = None
    created_ge: int | None = None
    created_le: int | None = None
    updated_gt: int | None = None
    updated_lt: int | None = None
    updated_ge: int | None = None
    updated_le: int | None = None
    limit: int = 100

    def matches(self, record: dict[str, Any]) -> bool:
        """The same test as :meth:`sql`, on a Vapi call object (for live calls not read from the table)."""
        created, updated, _, assistant_id, phone_number_id = _call_columns(record)
        checks = [
            (self.id, record.get("id")),
            (self.assistant_id, assistant_id),
            (self.phone_number_id, phone_number_id),
        ]
        if any(want is not None and want != have for want, have in checks):
            return False
        return _in_bounds(created, self.created_gt, self.created_lt, self.created_ge, self.created_le) and \
            _in_bounds(updated, self.updated_gt, self.updated_lt, self.updated_ge, self.updated_le)

    def sql(self) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        for column, text in (("id", self.id), ("assistant_id", self.assistant_id),
                             ("phone_number_id", self.phone_number_id)):
            if text is not None:
                where.append(f"{column} = ?")
                args.append(text)
        for column, op, value in (
            ("created_us", ">", self.created_gt), ("created_us", "<", self.created_lt),
            ("created_us", ">=", self.created_ge), ("created_us", "<=", self.created_le),
            ("updated_us", ">", self.updated_gt), ("updated_us", "<", self.updated_lt),
            ("updated_us", ">=", self.updated_ge), ("updated_us", "<=", self.updated_le),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        args.append(self.limit)
        return f"SELECT record FROM store_calls{clause} ORDER BY created_us DESC, id DESC LIMIT ?", args


def _in_bounds(value: int, gt: int | None, lt: int | None, ge: int | None, le: int | None) -> bool:
    return ((gt is None or value > gt) and (lt is None or value < lt)
            and (ge is None or value >= ge) and (le is None or value <= le))


def _call_columns(record: dict[str, Any]) -> tuple[int, int, str, str | None, str | None]:
    """(created_us, updated_us, status, assistantId, phoneNumberId) of a Vapi call object. The phone number
    id is ``phoneNumberId`` when the call was placed with one, else our number (DID or trunk name)."""
    created = iso_to_us(record["createdAt"])
    updated = iso_to_us(record.get("updatedAt") or record["createdAt"])
    phone = record.get("phoneNumberId")
    if phone is None and isinstance(record.get("phoneNumber"), dict):
        phone = record["phoneNumber"].get("number")
    return created, updated, str(record.get("status", "")), record.get("assistantId"), phone


class Store:
    """See the module doc. ``open()`` before use, ``close()`` at the end (both awaitable)."""

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        max_pending_writes: int = MAX_PENDING_WRITES,
        commit_delay: float = COMMIT_DELAY,
    ) -> None:
        self.path = path
        self._clock = clock
        self._new_id = new_id
        self._max_pending = max_pending_writes
        self._pending = 0  # queued writes; the worker thread decrements it
        self._pending_lock = threading.Lock()
        # queued, not yet on the worker: (what, write, key); of writes with the same key only the last one runs
        self._writes: deque[tuple[str, Callable[[], None], str | None]] = deque()
        self._drain_scheduled = False  # a _drain job is due (delayed or on the worker's queue), not started
        self._commit_delay = commit_delay
        self._delayed: asyncio.TimerHandle | None = None  # the loop timer that hands the next _drain over
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._assistants: dict[str, AssistantRecord] = {}
        self.log = get_logger("store")

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voicegw-store")
        try:
            records = await self._run(self._open_db)
        except (sqlite3.Error, OSError) as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise StoreError(f"cannot open the database {self.path!r}: {exc}") from exc
        self._assistants = {r.id: r for r in records}

    def _open_db(self) -> list[AssistantRecord]:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            if self.path != ":memory:":
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO store_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {row[0]} is newer than this gateway's "
                                            f"({SCHEMA_VERSION})")
            rows = db.execute("SELECT id, body, created_us, updated_us FROM store_assistants").fetchall()
        except BaseException:
            db.close()
            raise
        self._db = db
        return [AssistantRecord(id=r[0], body=json.loads(r[1]), created_us=r[2], updated_us=r[3]) for r in rows]

    async def close(self) -> None:
        """Finish every queued write, then close the database."""
        self._hand_over()
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, self._close_db)
        executor.shutdown(wait=False)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def flush(self) -> None:
        """Wait until every write queued so far is on disk (tests, and readers that must see them)."""
        await self._run(lambda: None)

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise StoreError("the store is not open")
        self._hand_over()  # what was queued before this read or write goes first
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _submit(self, what: str, fn: Callable[[], None], *, droppable: bool = False, key: str | None = None) -> None:
        """Queue a write without waiting; failures are logged (the caller is a call observer)."""
        if self._executor is None:
            self.log.warning("store_write_after_close", what=what)
            return
        with self._pending_lock:
            if droppable and self._pending >= self._max_pending:
                self.log.warning("store_write_dropped", what=what, pending=self._pending)
                return
            self._pending += 1
            self._writes.append((what, fn, key))
            if self._drain_scheduled:
                return  # the job already due takes this write too
            self._drain_scheduled = True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or self._commit_delay <= 0:
            self._executor.submit(self._drain)
        else:
            # Group commit: the writes of the next commit_delay seconds go in the same transaction.
            self._delayed = loop.call_later(self._commit_delay, self._hand_over)

    def _hand_over(self) -> None:
        """Give the delayed _drain to the worker now (its timer fired, or a read or close must come after it)."""
        delayed, self._delayed = self._delayed, None
        if delayed is None:
            return
        delayed.cancel()
        if self._executor is not None:
            self._executor.submit(self._drain)

    def _drain(self) -> None:
        """On the worker: every write queued so far, in order, in one transaction. The worker runs jobs in
        order, so a read queued after a write runs after the _drain that holds it."""
        with self._pending_lock:
            self._drain_scheduled = False  # a write queued from now on schedules the next _drain
            batch = list(self._writes)
            self._writes.clear()
        if not batch:
            return
        failed: list[tuple[str, BaseException]] = []
        # a record saved several times in the batch (a short call's queued, ringing, in-progress, ended) is
        # written once, as it was last saved
        last = {key: i for i, (_, _, key) in enumerate(batch) if key is not None}
        try:
            db = self.db
            db.execute("BEGIN")
            for i, (what, fn, key) in enumerate(batch):
                if key is not None and last[key] != i:
                    continue
                try:
                    fn()
                except Exception as exc:  # one bad write does not cost the others theirs
                    failed.append((what, exc))
            db.execute("COMMIT")
        except Exception as error:
            if self._db is not None and self._db.in_transaction:
                self._db.rollback()
            failed = [(what, error) for what, _, _ in batch]
        finally:
            with self._pending_lock:
                self._pending -= len(batch)
        for what, problem in failed:
            self.log.error("store_write_failed", what=what, error=repr(problem))

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    # ------------------------------------------------------------------ assistants

    def get_assistant(self, assistant_id: str) -> dict[str, Any] | None:
        """``AssistantLookup``: the body of a stored assistant (a copy), None when unknown."""
        record = self._assistants.get(assistant_id)
        return copy.deepcopy(record.body) if record is not None else None

    def assistant(self, assistant_id: str) -> AssistantRecord | None:
        return self._assistants.get(assistant_id)

    def list_assistants(self, *, limit: int = 100, created_gt: int | None = None, created_lt: int | None = None,
                        created_ge: int | None = None, created_le: int | None = None) -> list[AssistantRecord]:
        """Newest first."""
        found = [r for r in self._assistants.values()
                 if _in_bounds(r.created_us, created_gt, created_lt, created_ge, created_le)]
        found.sort(key=lambda r: (r.created_us, r.id), reverse=True)
        return found[:limit]

    async def create_assistant(self, body: dict[str, Any]) -> AssistantRecord:
        now = dt_to_us(datetime.fromtimestamp(self._clock(), UTC))
        record = AssistantRecord(id=self._new_id(), body=copy.deepcopy(body), created_us=now, updated_us=now)
        await self._run(lambda: self._put_assistant(record))
        self._assistants[record.id] = record
        return record

    async def replace_assistant(self, assistant_id: str, body: dict[str, Any]) -> AssistantRecord | None:
        old = self._assistants.get(assistant_id)
        if old is None:
            return None
        now = max(old.created_us, dt_to_us(datetime.fromtimestamp(self._clock(), UTC)))
        record = AssistantRecord(id=old.id, body=copy.deepcopy(body), created_us=old.created_us, updated_us=now)
        await self._run(lambda: self._put_assistant(record))
        self._assistants[record.id] = record
        return record

    async def delete_assistant(self, assistant_id: str) -> AssistantRecord | None:
        record = self._assistants.get(assistant_id)
        if record is None:
            return None
        await self._run(lambda: self.db.execute("DELETE FROM store_assistants WHERE id = ?", (assistant_id,)))
        self._assistants.pop(assistant_id, None)
        return record

    def _put_assistant(self, r: AssistantRecord) -> None:
        name = r.body.get("name")
        self.db.execute(
            "INSERT OR REPLACE INTO store_assistants VALUES (?, ?, ?, ?, ?)",
            (r.id, name if isinstance(name, str) else None, json.dumps(r.body), r.created_us, r.updated_us),
        )

    # ------------------------------------------------------------------ calls

    def save_call(self, record: dict[str, Any]) -> None:
        """Insert or replace a Vapi call object (queued; never dropped)."""
        created, updated, status, assistant_id, phone = _call_columns(record)
        text = json.dumps(record, default=str)
        row = (record["id"], created, updated, status, assistant_id, phone, text)
        self._submit("call", lambda: self._put_call(row), key=f"call:{row[0]}")

    def _put_call(self, row: tuple[Any, ...]) -> None:
        self.db.execute("INSERT OR REPLACE INTO store_calls VALUES (?, ?, ?, ?, ?, ?, ?)", row)

    def append_event(self, call_id: str, kind: str, data: dict[str, Any], *, at: float | None = None) -> None:
        """Add one line to a call's event log (queued; dropped, and logged, only when the queue is full)."""
        at_us = dt_to_us(datetime.fromtimestamp(self._clock() if at is None else at, UTC))
        text = json.dumps(data, default=str)
        self._submit(
            "call_event",
            lambda: self._put_event(call_id, at_us, kind, text),
            droppable=True,
        )

    def _put_event(self, call_id: str, at_us: int, kind: str, text: str) -> None:
        self.db.execute("INSERT INTO store_call_events (call_id, at_us, type, data) VALUES (?, ?, ?, ?)",
                        (call_id, at_us, kind, text))

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            row = self.db.execute("SELECT record FROM store_calls WHERE id = ?", (call_id,)).fetchone()
            return json.loads(row[0]) if row is not None else None

        return await self._run(read)

    async def list_calls(self, query: CallQuery) -> list[dict[str, Any]]:
        sql, args = query.sql()
        return await self._run(lambda: [json.loads(r[0]) for r in self.db.execute(sql, args).fetchall()])

    async def call_events(self, call_id: str) -> list[dict[str, Any]]:
        """The call's event log, oldest first: ``{time, type, ...data}``."""
        def read() -> list[dict[str, Any]]:
            rows = self.db.execute(
                "SELECT at_us, type, data FROM store_call_events WHERE call_id = ? ORDER BY seq", (call_id,)
            ).fetchall()
            return [{**json.loads(data), "time": us_to_iso(at), "type": kind} for at, kind, data in rows]

        return await self._run(read)

    async def delete_call(self, call_id: str) -> dict[str, Any] | None:
        """Remove a call's record and its event log; returns the record, None when there was none."""
        def delete() -> dict[str, Any] | None:
            row = self.db.execute("SELECT record FROM store_calls WHERE id = ?", (call_id,)).fetchone()
            if row is None:
                return None
            self.db.execute("BEGIN")
            try:
                self.db.execute("DELETE FROM store_calls WHERE id = ?", (call_id,))
                self.db.execute("DELETE FROM store_call_events WHERE call_id = ?", (call_id,))
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            return dict(json.loads(row[0]))

        return await self._run(delete)
