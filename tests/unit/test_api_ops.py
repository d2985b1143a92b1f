"""Bearer-token auth, health and readiness, Prometheus metrics and the per-route request counter."""

from __future__ import annotations

import pytest

from tests.helpers.api_app import api, run

KEY = "s3cret-key"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/call"), ("POST", "/call"), ("GET", "/call/x"), ("DELETE", "/call/x"), ("GET", "/call/x/logs"),
     ("POST", "/call/x/control"), ("GET", "/assistant"), ("POST", "/assistant"), ("GET", "/assistant/x"),
     ("PATCH", "/assistant/x"), ("DELETE", "/assistant/x")],
)
def test_every_api_route_demands_the_key(method: str, path: str) -> None:
    async def go() -> None:
        async with api(api_key=KEY) as a:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                            {"Authorization": f"Bearer {KEY}x"}):
                r = await a.client.request(method, path, headers=headers, json={})
                assert r.status_code == 401, (headers, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
            r = await a.client.request(method, path, headers={"Authorization": f"Bearer {KEY}"}, json={})
            assert r.status_code != 401

    run(go())


def test_health_metrics_and_openapi_stay_open() -> None:
    async def go() -> None:
        async with api(api_key=KEY) as a:
            for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
                assert (await a.client.get(path)).status_code == 200, path
            spec = (await a.client.get("/openapi.json")).json()
            assert "401" in spec["paths"]["/call"]["post"]["responses"]
            assert "401" not in spec["paths"]["/healthz"]["get"]["responses"]

    run(go())


def test_readyz_is_503_while_draining() -> None:
    async def go() -> None:
        async with api() as a:
            assert (await a.client.get("/readyz")).json() == {"status": "ready"}
            a.state.update(ready=False, draining=True)
            r = await a.client.get("/readyz")
            assert r.status_code == 503 and r.json() == {"status": "draining"}
            assert (await a.client.get("/healthz")).status_code == 200

    run(go())


def test_requests_are_counted_by_route_template_never_by_id() -> None:
    async def go() -> None:
        async with api() as a:
            await a.client.get("/call/abc")
            await a.client.get("/call/def")
            await a.client.post("/assistant", json={})
            await a.client.get("/no/such/route")
            text = (await a.client.get("/metrics")).text
            assert 'voicegw_api_requests_total{route="/call/{id}",status_class="4xx"} 2.0' in text
            assert 'voicegw_api_requests_total{route="/assistant",status_class="2xx"} 1.0' in text
            assert 'route="unmatched",status_class="4xx"' in text
            assert "abc" not in text

    run(go())
