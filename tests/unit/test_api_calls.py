"""``/call`` routes over a fake call manager: placing calls (validation, targets, errors), listing with
filters and pagination across live and stored calls, hang-up and deletion, live call control, event logs."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.call_types import CallState
from tests.helpers.api_app import Api, api, run

CALL = {"assistantId": "demo", "customer": {"number": "+15551230000"}}


async def place(a: Api, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = await a.client.post("/call", json=body or CALL)
    assert r.status_code == 201, r.text
    return dict(r.json())


def locs(response: Any) -> list[list[Any]]:
    return [d["loc"] for d in response.json()["detail"]]


def test_post_call_dials_the_number_through_the_trunk_and_returns_the_queued_call() -> None:
    async def go() -> None:
        async with api() as a:
            body = {**CALL, "phoneNumberId": "pstn", "name": "renewal",
                    "assistantOverrides": {"variableValues": {"first": "Ada"}}}
            call = await place(a, body)
            assert call["status"] == "queued" and call["type"] == "outboundPhoneCall"
            assert call["assistantId"] == "demo" and call["name"] == "renewal"
            assert call["phoneNumberId"] == "pstn" and call["customer"]["number"] == "+15551230000"
            placed = a.calls.placed[0]
            assert (placed["number"], placed["sip_uri"], placed["trunk"]) == ("+15551230000", None, "pstn")
            assert placed["target"].kind == "assistant" and placed["target"].name == "demo"
            assert placed["target"].variable_values == {"first": "Ada"}

    run(go())


def test_post_call_with_sip_uri_and_inline_assistant() -> None:
    async def go() -> None:
        async with api() as a:
            inline = {"firstMessage": "Hi {{first}}", "model": {"provider": "rules"}}
            call = await place(a, {"assistant": inline, "customer": {"sipUri": "sip:bob@192.0.2.7:5070"}})
            assert call["assistant"] == inline
            placed = a.calls.placed[0]
            assert placed["sip_uri"] == "sip:bob@192.0.2.7:5070" and placed["number"] is None
            assert placed["target"].assistant == inline

    run(go())


def test_post_call_uses_an_assistant_created_over_the_api() -> None:
    async def go() -> None:
        async with api() as a:
            created = (await a.client.post("/assistant", json={"name": "stored", "firstMessage": "Hey"})).json()
            call = await place(a, {"assistantId": created["id"], "customer": {"number": "+15551230000"}})
            assert call["assistantId"] == created["id"]

    run(go())


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"customer": {"number": "+15551230000"}}, ["body"]),  # no assistant
        ({**CALL, "assistant": {"model": {"provider": "rules"}}}, ["body"]),  # both
        ({"assistantId": "demo"}, ["body", "customer"]),
        ({"assistantId": "demo", "customer": {}}, ["body", "customer"]),
        ({"assistantId": "demo", "customer": {"number": "5551230000"}}, ["body", "customer"]),  # not E.164
        ({"assistantId": "demo", "customer": {"number": "1@evil", "numberE164CheckEnabled": False}},
         ["body", "customer"]),
        ({"assistantId": "demo", "customer": {"sipUri": "sip:a@b\r\nX-Injected: 1"}},
         ["body", "customer", "sipUri"]),
        ({"assistantId": "demo", "customer": {"sipUri": "tel:+15551230000"}}, ["body", "customer", "sipUri"]),
        ({**CALL, "squadId": "x"}, ["body", "squadId"]),
        ({"assistantId": "nobody", "customer": {"number": "+15551230000"}}, ["body", "assistantId"]),
        ({"assistant": {"voice": {"provider": "nope"}}, "customer": {"number": "+15551230000"}},
         ["body", "assistant", "voice", "provider"]),
        ({**CALL, "assistantOverrides": {"silenceTimeoutSeconds": "long"}},
         ["body", "assistantOverrides", "silenceTimeoutSeconds"]),
        ({**CALL, "assistantOverrides": {"variableValues": [1]}}, ["body", "assistantOverrides", "variableValues"]),
    ],
)
def test_post_call_rejects_bad_bodies_with_the_field_path(body: dict[str, Any], loc: list[Any]) -> None:
    async def go() -> None:
        async with api() as a:
            r = await a.client.post("/call", json=body)
            assert r.status_code == 422, r.text
            assert loc in locs(r), r.json()
            assert a.calls.placed == []

    run(go())


def test_post_call_accepts_a_dial_string_when_the_e164_check_is_off() -> None:
    async def go() -> None:
        async with api() as a:
            await place(a, {"assistantId": "demo", "customer": {"number": "1001", "numberE164CheckEnabled": False}})
            assert a.calls.placed[0]["number"] == "1001"

    run(go())


def test_post_call_errors_are_400_or_503_with_the_reason() -> None:
    async def go() -> None:
        async with api() as a:
            r = await a.client.post("/call", json={**CALL, "phoneNumberId": "nope"})
            assert r.status_code == 400 and "nope" in r.json()["detail"]
            a.state["draining"] = True
            r = await a.client.post("/call", json=CALL)
            assert r.status_code == 503 and r.headers["retry-after"]
            assert "draining" in r.json()["detail"]
            a.state["draining"] = False
            for _ in range(a.calls.ports.capacity):
                a.calls.ports.acquire()
            a.calls.fail_with = "all 4 RTP ports are in use"
            r = await a.client.post("/call", json=CALL)
            assert r.status_code == 503 and "RTP ports" in r.json()["detail"]

    run(go())


def test_get_call_live_then_stored_after_it_ended() -> None:
    async def go() -> None:
        async with api() as a:
            call = await place(a, {**CALL, "name": "follow-up"})
            live = a.calls.calls[call["id"]]
            live.answer()
            r = await a.client.get(f"/call/{call['id']}")
            assert r.status_code == 200 and r.json()["status"] == "in-progress"
            live.end("customer-ended-call")
            r = await a.client.get(f"/call/{call['id']}")
            assert r.json()["status"] == "ended" and r.json()["endedReason"] == "customer-ended-call"
            assert r.json()["name"] == "follow-up"  # the API's own fields outlive the live call
            assert "artifact" in r.json()  # the record written at release carries the artifact
            assert (await a.client.get("/call/00000000-0000-0000-0000-000000000000")).status_code == 404

    run(go())


def test_list_calls_newest_first_with_filters_and_cursor_pagination() -> None:
    async def go() -> None:
        async with api() as a:
            ids = [(await place(a))["id"] for _ in range(5)]
            other = await place(a, {"assistant": {"model": {"provider": "rules"}},
                                    "customer": {"number": "+15559990000"}})
            a.calls.calls[ids[0]].end("customer-ended-call")  # stored only
            a.calls.calls[ids[1]].end("customer-busy")
            r = await a.client.get("/call", params={"limit": 3})
            page1 = r.json()
            assert [c["id"] for c in page1] == [other["id"], ids[4], ids[3]]
            r = await a.client.get("/call", params={"limit": 3, "createdAtLt": page1[-1]["createdAt"]})
            assert [c["id"] for c in r.json()] == [ids[2], ids[1], ids[0]]
            r = await a.client.get("/call", params={"assistantId": "demo", "limit": 100})
            assert [c["id"] for c in r.json()] == ids[::-1]
            r = await a.client.get("/call", params={"id": ids[1]})
            assert [c["status"] for c in r.json()] == ["ended"]
            r = await a.client.get("/call", params={"createdAtGe": page1[1]["createdAt"],
                                                    "createdAtLe": page1[1]["createdAt"]})
            assert [c["id"] for c in r.json()] == [ids[4]]
            r = await a.client.get("/call", params={"phoneNumberId": "pstn", "limit": 0})
            assert r.json() == []

    run(go())


@pytest.mark.parametrize("params", [{"limit": -1}, {"limit": 1001}, {"limit": "x"}, {"createdAtGt": "yesterday"}])
def test_list_calls_rejects_bad_query_parameters(params: dict[str, Any]) -> None:
    async def go() -> None:
        async with api() as a:
            r = await a.client.get("/call", params=params)
            assert r.status_code == 422
            assert locs(r)[0][0] == "query"

    run(go())


def test_list_calls_survives_extreme_dates() -> None:
    async def go() -> None:
        async with api() as a:
            await place(a)
            for value in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
                r = await a.client.get("/call", params={"createdAtGt": value})
                assert r.status_code == 200

    run(go())


def test_delete_hangs_up_a_live_call_and_deletes_an_ended_record() -> None:
    async def go() -> None:
        async with api() as a:
            call = await place(a)
            live = a.calls.calls[call["id"]]
            r = await a.client.delete(f"/call/{call['id']}")
            assert r.status_code == 200 and live.hangups == ["manually-canceled"]
            live.end("manually-canceled")
            r = await a.client.delete(f"/call/{call['id']}")
            assert r.status_code == 200 and r.json()["endedReason"] == "manually-canceled"
            assert (await a.client.get(f"/call/{call['id']}")).status_code == 404
            assert (await a.client.get(f"/call/{call['id']}/logs")).status_code == 404
            assert (await a.client.delete(f"/call/{call['id']}")).status_code == 404

    run(go())


def test_control_drives_the_running_conversation() -> None:
    async def go() -> None:
        async with api() as a:
            call = await place(a)
            path = f"/call/{call['id']}/control"
            r = await a.client.post(path, json={"type": "say", "content": "One moment"})
            assert r.status_code == 409 and "conversation" in r.json()["detail"]  # not answered yet
            session = a.calls.calls[call["id"]].answer()
            assert session is not None
            r = await a.client.post(path, json={"type": "say", "content": "Bye now", "endCallAfterSpoken": True})
            assert r.status_code == 200 and r.json() == {"callId": call["id"], "type": "say", "status": "ok"}
            assert session.said == ["Bye now"]
            assert session.end_after_calls == [(1, "assistant-ended-call-after-message-spoken")]
            r = await a.client.post(path, json={"type": "add-message", "message": {"role": "system",
                                                                                    "content": "VIP caller"}})
            assert r.status_code == 200 and session.added == [("system", "VIP caller")]
            assert session.responses == 1  # triggerResponseEnabled defaults to true
            await a.client.post(path, json={"type": "add-message", "triggerResponseEnabled": False,
                                            "message": {"role": "system", "content": "quiet"}})
            assert session.responses == 1 and session.added[-1] == ("system", "quiet")
            await a.client.post(path, json={"type": "control", "control": "mute-assistant"})
            assert session.muted
            await a.client.post(path, json={"type": "control", "control": "unmute-assistant"})
            assert not session.muted
            r = await a.client.post(path, json={"type": "end-call"})
            assert r.status_code == 200 and session.ending == "manually-canceled"
            r = await a.client.post(path, json={"type": "say", "content": "again"})
            assert r.status_code == 409  # ending

    run(go())


def test_end_call_control_hangs_up_a_call_without_conversation() -> None:
    async def go() -> None:
        async with api() as a:
            call = await place(a)
            live = a.calls.calls[call["id"]]
            live.answer(conversation=False)
            r = await a.client.post(f"/call/{call['id']}/control", json={"type": "end-call"})
            assert r.status_code == 200 and live.hangups == ["manually-canceled"]
            live.end("manually-canceled")
            r = await a.client.post(f"/call/{call['id']}/control", json={"type": "end-call"})
            assert r.status_code == 409 and "ended" in r.json()["detail"]
            r = await a.client.post("/call/unknown/control", json={"type": "end-call"})
            assert r.status_code == 404

    run(go())


@pytest.mark.parametrize(
    "body",
    [
        {"type": "dance"},
        {"type": "say"},
        {"type": "say", "content": ""},
        {"type": "add-message", "message": {"role": "tool", "content": "x"}},
        {"type": "control", "control": "mute-customer"},
        {"type": "transfer", "destination": {"type": "carrier-pigeon"}},
        {"type": "transfer", "destination": {"type": "number"}},
    ],
)
def test_control_rejects_bad_messages(body: dict[str, Any]) -> None:
    async def go() -> None:
        async with api() as a:
            call = await place(a)
            session = a.calls.calls[call["id"]].answer()
            r = await a.client.post(f"/call/{call['id']}/control", json=body)
            assert r.status_code == 422, r.text
            assert locs(r)[0][0] == "body"
            assert session is not None and not session.said

    run(go())


def test_call_logs_keep_status_transcripts_and_the_end() -> None:
    async def go() -> None:
        from gateway.pipeline.events import TranscriptEvent

        async with api() as a:
            call = await place(a)
            live = a.calls.calls[call["id"]]
            live.answer()
            a.calls.notify("call_event", live, TranscriptEvent(role="user", text="hello there", final=True))
            a.calls.notify("call_event", live, TranscriptEvent(role="user", text="hel", final=False))
            a.calls.notify("call_message", live, {"type": "transfer-update", "destination": {"type": "number"}})
            live.end("customer-ended-call")
            r = await a.client.get(f"/call/{call['id']}/logs")
            assert r.status_code == 200
            events = r.json()["events"]
            assert [e["type"] for e in events] == ["status-update", "status-update", "transcript",
                                                   "transfer-update", "status-update", "call-ended"]
            assert [e.get("status") for e in events[:2]] == ["queued", "in-progress"]
            assert events[2]["transcript"] == "hello there"
            assert events[-1]["endedReason"] == "customer-ended-call"

    run(go())


def test_a_call_stays_live_in_the_list_while_its_record_is_stale() -> None:
    async def go() -> None:
        async with api() as a:
            call = await place(a)
            a.calls.calls[call["id"]].state = CallState.CONFIRMED
            a.calls.calls[call["id"]].status = "in-progress"  # changed without a notification
            r = await a.client.get("/call")
            assert [c["status"] for c in r.json()] == ["in-progress"]

    run(go())


@pytest.mark.parametrize(
    ("outcome", "status"),
    [(("completed", True), 200), (("refused-destination", False), 403), (("failed", False), 409), (None, 202)],
)
def test_transfer_control_reports_the_outcome(monkeypatch: pytest.MonkeyPatch, outcome: tuple[str, bool] | None,
                                              status: int) -> None:
    import asyncio

    from gateway.api import routes_calls
    from gateway.call_transfer import TransferResult

    started: list[tuple[dict[str, Any], str | None, str]] = []

    async def fake_transfer(call: Any, destination: dict[str, Any], *, message: str | None = None,
                            source: str = "api") -> TransferResult:
        started.append((destination, message, source))
        if outcome is None:
            await asyncio.sleep(3600)  # still ringing the destination
        assert outcome is not None
        return TransferResult(ok=outcome[1], mode="blind", result=outcome[0], detail="why")

    monkeypatch.setattr(routes_calls, "transfer", fake_transfer)
    monkeypatch.setattr(routes_calls, "TRANSFER_WAIT_SECONDS", 0.05)

    async def go() -> None:
        async with api() as a:
            call = await place(a)
            a.calls.calls[call["id"]].answer(conversation=False)  # no assistant needed to transfer
            body = {"type": "transfer", "destination": {"type": "number", "number": "+15550001234",
                                                        "transferPlan": {"mode": "blind-transfer"}},
                    "content": "Transferring you now"}
            r = await a.client.post(f"/call/{call['id']}/control", json=body)
            assert r.status_code == status, r.text
            assert started == [({"type": "number", "number": "+15550001234",
                                 "transferPlan": {"mode": "blind-transfer"}}, "Transferring you now", "api")]
            if status == 200:
                assert r.json()["transfer"] == {"result": "completed", "mode": "blind", "detail": "why"}
            if status == 202:
                assert r.json()["status"] == "pending"

    run(go())


def test_a_full_page_even_when_stored_copies_of_live_calls_no_longer_match() -> None:
    async def go() -> None:
        async with api() as a:
            ended = [(await place(a))["id"] for _ in range(2)]
            for call_id in ended:
                a.calls.calls[call_id].end("customer-ended-call")
            live = [(await place(a))["id"] for _ in range(2)]
            for call_id in live:  # moved on without a notification: their stored copies are stale
                a.calls.calls[call_id].status = "in-progress"
                a.calls.calls[call_id].answered_at = a.clock() + 60
            r = await a.client.get("/call", params={"limit": 2, "updatedAtLt": "2030-01-01T00:00:00Z",
                                                    "updatedAtLe": "2023-11-14T22:13:30Z"})
            assert [c["id"] for c in r.json()] == ended[::-1]

    run(go())
