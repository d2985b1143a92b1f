"""The SQLite store under the API: call records and event logs persist across reopen, deletes remove both,
a newer schema is refused, and the SQL filter and the in-memory filter used for live calls agree."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.store import CallQuery, Store, StoreError, iso_to_us, us_to_iso

BASE_US = 1_700_000_000_000_000


def record(n: int, *, created_ms: int, updated_ms: int | None = None, assistant: str | None = "demo",
           phone: str | None = "pstn", status: str = "ended") -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": f"call-{n}", "orgId": "local", "type": "outboundPhoneCall", "status": status,
        "createdAt": us_to_iso(BASE_US + created_ms * 1000),
        "updatedAt": us_to_iso(BASE_US + (created_ms if updated_ms is None else updated_ms) * 1000),
    }
    if assistant is not None:
        obj["assistantId"] = assistant
    if phone is not None:
        obj["phoneNumber"] = {"number": phone}
    return obj


def test_iso_and_microseconds_round_trip_exactly() -> None:
    for us in (0, BASE_US, BASE_US + 1_000, 253402300799999000):
        assert iso_to_us(us_to_iso(us)) == us
    assert iso_to_us("2024-01-01T00:00:00.000Z") == iso_to_us("2024-01-01T01:00:00.000+01:00")


def test_records_and_logs_persist_and_delete_together(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "dir" / "gw.sqlite3")  # parents are created

    async def go() -> None:
        store = Store(path)
        await store.open()
        store.save_call(record(1, created_ms=1, status="in-progress"))
        store.save_call(record(1, created_ms=1, status="ended"))  # replaces
        store.append_event("call-1", "status-update", {"status": "in-progress"})
        store.append_event("call-1", "call-ended", {"endedReason": "customer-ended-call"})
        store.save_call(record(2, created_ms=2))
        await store.close()

        store = Store(path)
        await store.open()
        assert (await store.get_call("call-1"))["status"] == "ended"  # type: ignore[index]
        events = await store.call_events("call-1")
        assert [(e["type"], e.get("status")) for e in events] == [("status-update", "in-progress"),
                                                                  ("call-ended", None)]
        assert [r["id"] for r in await store.list_calls(CallQuery())] == ["call-2", "call-1"]
        deleted = await store.delete_call("call-1")
        assert deleted is not None and deleted["id"] == "call-1"
        assert await store.get_call("call-1") is None and await store.call_events("call-1") == []
        assert await store.delete_call("call-1") is None
        await store.close()

    asyncio.run(go())


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite3"
    asyncio.run(_open_close(str(path)))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE store_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer"):
        asyncio.run(_open_close(str(path)))


def test_an_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError):
        asyncio.run(_open_close(str(blocker / "gw.sqlite3")))


def test_event_log_writes_beyond_the_bound_are_dropped_but_records_are_not() -> None:
    async def go() -> None:
        store = Store(":memory:", max_pending_writes=0)
        await store.open()
        store.append_event("call-1", "transcript", {"transcript": "dropped"})
        store.save_call(record(1, created_ms=1))
        await store.flush()
        assert await store.call_events("call-1") == []
        assert await store.get_call("call-1") is not None
        await store.close()

    asyncio.run(go())


def test_queued_writes_commit_together_in_order_and_a_bad_one_costs_only_itself(tmp_path: Path) -> None:
    async def go() -> None:
        store = Store(str(tmp_path / "gw.sqlite3"))
        await store.open()
        statements: list[str] = []
        store.db.set_trace_callback(statements.append)
        for n in range(200):  # queued from the loop faster than the worker commits them
            store.save_call(record(n, created_ms=n, status="queued"))
            store.append_event(f"call-{n}", "status-update", {"n": n})
        store.save_call(record(7, created_ms=7, status="ended"))  # the last write of a record wins
        store.append_event("call-1", "bad", {"not json": {1, 2}})  # json.dumps(default=str) copes...
        store._submit("call_event", lambda: store.db.execute("INSERT INTO no_such_table VALUES (1)"))
        store.append_event("call-1", "after", {"still": "written"})
        await store.flush()
        # group commits: a few transactions, every write inside one (not an autocommit per statement)
        begins = [i for i, sql in enumerate(statements) if sql == "BEGIN"]
        assert 0 < len(begins) < 20 and statements.count("COMMIT") == len(begins), statements[:5]
        assert all(sql in ("BEGIN", "COMMIT") or any(b < i for b in begins) for i, sql in enumerate(statements))
        assert len(await store.list_calls(CallQuery(limit=1000))) == 200
        assert (await store.get_call("call-7"))["status"] == "ended"
        assert [e["type"] for e in await store.call_events("call-1")] == ["status-update", "bad", "after"]
        assert store._pending == 0
        await store.close()
        reopened = Store(str(tmp_path / "gw.sqlite3"))
        await reopened.open()
        assert (await reopened.get_call("call-199"))["status"] == "queued"
        await reopened.close()

    asyncio.run(go())


async def _open_close(path: str) -> None:
    store = Store(path)
    await store.open()
    await store.close()


bounds = st.one_of(st.none(), st.integers(-1, 12).map(lambda ms: BASE_US + ms * 1000))
records = st.lists(
    st.builds(lambda created, delta, assistant, phone: (created, created + delta, assistant, phone),
              st.integers(0, 10), st.integers(0, 3), st.sampled_from([None, "demo", "other"]),
              st.sampled_from([None, "pstn", "+15550001111"])),
    max_size=8,
)
queries = st.builds(
    CallQuery,
    id=st.sampled_from([None, "call-0", "call-3"]),
    assistant_id=st.sampled_from([None, "demo", "other"]),
    phone_number_id=st.sampled_from([None, "pstn", "+15550001111"]),
    created_gt=bounds, created_lt=bounds, created_ge=bounds, created_le=bounds,
    updated_gt=bounds, updated_lt=bounds, updated_ge=bounds, updated_le=bounds,
    limit=st.integers(0, 10),
)


@settings(max_examples=150, deadline=None)
@given(rows=records, query=queries)
def test_sql_filter_and_live_filter_agree(rows: list[tuple[int, int, str | None, str | None]],
                                         query: CallQuery) -> None:
    """GET /call filters stored records in SQL and live calls in Python: both must pick the same calls."""
    objects = [record(n, created_ms=c, updated_ms=u, assistant=a, phone=p) for n, (c, u, a, p) in enumerate(rows)]

    async def go() -> list[str]:
        store = Store(":memory:")
        await store.open()
        for obj in objects:
            store.save_call(obj)
        found = [r["id"] for r in await store.list_calls(query)]
        await store.close()
        return found

    expected = sorted((o for o in objects if query.matches(o)),
                      key=lambda o: (iso_to_us(o["createdAt"]), o["id"]), reverse=True)[: query.limit]
    assert asyncio.run(go()) == [o["id"] for o in expected]
