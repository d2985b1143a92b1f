"""The API against its own OpenAPI document: the document is valid OpenAPI, and schemathesis sends every
operation generated requests (valid and invalid bodies, parameters and ids) and checks that each answer has
a documented status and shape, and that none is a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from gateway.api import CallRecorder, create_app
from gateway.config import GatewayConfig
from gateway.observability.metrics import Metrics
from gateway.store import Store
from tests.helpers.api_app import CONFIG, FakeCalls, FakeClock

KEY = "contract-key"


@pytest.fixture(scope="module")
def app() -> Iterator[FastAPI]:
    clock = FakeClock()
    store = Store(":memory:", clock=clock)
    asyncio.run(store.open())
    calls = FakeCalls(GatewayConfig.model_validate(CONFIG), clock)
    calls.assistant_store = store
    recorder = CallRecorder(store)
    calls.observers.append(recorder)
    yield create_app(calls, store, metrics=Metrics(), recorder=recorder, api_key=KEY)
    asyncio.run(store.close())


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_openapi_document_is_valid(app: FastAPI) -> None:
    document = app.openapi()
    validate(document)
    assert {"/call", "/call/{id}", "/call/{id}/control", "/call/{id}/logs", "/assistant", "/assistant/{id}",
            "/healthz", "/readyz", "/metrics"} <= set(document["paths"])


def operations() -> list[str]:
    return sorted(f"{m.upper()} {p}" for p, item in create_app(FakeCalls(GatewayConfig.model_validate(CONFIG),
                  FakeClock()), Store(":memory:"), metrics=Metrics()).openapi()["paths"].items() for m in item)


# schemathesis' own pytest plugin does not load under this pytest: each operation is driven by hypothesis here.
# Not checked: that every schema-valid request is accepted, and that every schema-violating one is refused.
# The schema cannot say everything the API checks (E.164 when numberE164CheckEnabled is on, that an
# assistantId exists, an assistant's provider rules): such requests are 422s, documented answers. And unknown
# query parameters are ignored, as Vapi's API ignores them. Checked: the status is documented, the body has
# the documented shape and content type, and nothing is a 5xx.
LENIENT = [positive_data_acceptance, negative_data_rejection]
PARAMETERLESS = {"GET /healthz", "GET /readyz", "GET /metrics"}  # nothing to make invalid


@pytest.mark.parametrize(
    ("operation", "mode"),
    [(op, mode) for op in operations() for mode in GenerationMode
     if not (mode is GenerationMode.NEGATIVE and op in PARAMETERLESS)],
)
def test_every_generated_request_gets_a_documented_answer(api_schema: Any, operation: str,
                                                          mode: GenerationMode) -> None:
    method, path = operation.split(" ", 1)
    found = api_schema[path][method]

    @given(case=found.as_strategy(mode))
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, excluded_checks=LENIENT)

    check()
