"""The HTTP API (FastAPI, served in the gateway's event loop): Vapi-shaped ``/call`` and ``/assistant``,
``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json``."""

from gateway.api.app import create_app
from gateway.api.recorder import CallRecorder
from gateway.api.server import ApiServer

__all__ = ["ApiServer", "CallRecorder", "create_app"]
