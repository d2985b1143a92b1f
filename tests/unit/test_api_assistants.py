"""``/assistant`` routes: create, read, list (newest first, paginated), Vapi's PATCH merge, delete; every
invalid assistant is a 422 naming the field; stored assistants survive a restart and reach calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.call_types import CallTarget
from tests.helpers.api_app import api, run

BODY = {"name": "front-desk", "firstMessage": "Hello", "model": {"provider": "rules", "rules": []}}


def test_create_get_list_update_delete() -> None:
    async def go() -> None:
        async with api() as a:
            r = await a.client.post("/assistant", json=BODY)
            assert r.status_code == 201
            created = r.json()
            assert created["name"] == "front-desk" and created["orgId"] == "local"
            assert created["createdAt"] == created["updatedAt"]
            aid = created["id"]
            assert (await a.client.get(f"/assistant/{aid}")).json() == created

            a.clock.advance(5)
            r = await a.client.patch(f"/assistant/{aid}", json={"firstMessage": "Hi there", "name": None,
                                                                 "id": "ignored", "updatedAt": "ignored"})
            assert r.status_code == 200
            updated = r.json()
            assert updated["firstMessage"] == "Hi there" and "name" not in updated
            assert updated["model"] == BODY["model"]  # untouched fields stay
            assert updated["id"] == aid and updated["createdAt"] == created["createdAt"]
            assert updated["updatedAt"] > created["updatedAt"]

            r = await a.client.delete(f"/assistant/{aid}")
            assert r.status_code == 200 and r.json()["firstMessage"] == "Hi there"
            for method in ("get", "patch", "delete"):
                kwargs: dict[str, Any] = {"json": {}} if method == "patch" else {}
                r = await a.client.request(method.upper(), f"/assistant/{aid}", **kwargs)
                assert r.status_code == 404, method
            assert a.store.get_assistant(aid) is None

    run(go())


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"voice": {"provider": "nope"}}, ["body", "voice", "provider"]),
        ({"silenceTimeoutSeconds": 1}, ["body", "silenceTimeoutSeconds"]),
        ({"model": {"provider": "rules", "tools": [{"type": "function"}]}}, ["body", "model", "tools", 0]),
        ({"firstMessage": "Hello {{ name"}, ["body", "firstMessage"]),
    ],
)
def test_invalid_assistants_are_422_with_the_path(body: dict[str, Any], loc: list[Any]) -> None:
    async def go() -> None:
        async with api() as a:
            r = await a.client.post("/assistant", json=body)
            assert r.status_code == 422, r.text
            found = [d["loc"] for d in r.json()["detail"]]
            assert any(f[: len(loc)] == loc for f in found), found
            assert (await a.client.get("/assistant")).json() == []
            aid = (await a.client.post("/assistant", json=BODY)).json()["id"]
            r = await a.client.patch(f"/assistant/{aid}", json=body)
            assert r.status_code == 422
            assert (await a.client.get(f"/assistant/{aid}")).json()["firstMessage"] == "Hello"  # unchanged

    run(go())


@pytest.mark.parametrize("body", [[1, 2], "text", 3, None])
def test_a_body_that_is_not_an_object_is_422(body: Any) -> None:
    async def go() -> None:
        async with api() as a:
            r = await a.client.post("/assistant", json=body)
            assert r.status_code == 422
            r = await a.client.post("/assistant", content=b"{not json", headers={"content-type": "application/json"})
            assert r.status_code == 422

    run(go())


def test_list_is_newest_first_and_pages_by_created_at() -> None:
    async def go() -> None:
        async with api() as a:
            ids = []
            for i in range(4):
                ids.append((await a.client.post("/assistant", json={**BODY, "name": f"a{i}"})).json()["id"])
                a.clock.advance(1)
            page = (await a.client.get("/assistant", params={"limit": 2})).json()
            assert [x["id"] for x in page] == [ids[3], ids[2]]
            page = (await a.client.get("/assistant", params={"limit": 2, "createdAtLt": page[-1]["createdAt"]})).json()
            assert [x["id"] for x in page] == [ids[1], ids[0]]

    run(go())


def test_stored_assistants_survive_a_restart_and_reach_calls(tmp_path: Path) -> None:
    db = str(tmp_path / "var" / "gw.sqlite3")

    async def go() -> None:
        async with api(store_path=db) as a:
            aid = (await a.client.post("/assistant", json=BODY)).json()["id"]
        async with api(store_path=db) as a:
            assert (await a.client.get(f"/assistant/{aid}")).json()["name"] == "front-desk"
            assistant = a.calls.assistant_for(CallTarget("assistant", aid))
            assert assistant is not None and assistant.first_message == "Hello"

    run(go())
