"""Config reload of trunk registrations (`Registrations.reconfigure`): a removed or changed trunk's binding is
removed with Expires: 0, a new or changed trunk registers, an unchanged one keeps its binding and sends nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.config import GatewayConfig
from gateway.observability.metrics import Metrics
from gateway.registration import Registrations
from gateway.sip.headers import NameAddr, Via
from gateway.sip.message import Request, make_response
from gateway.sip.uri import SipUri


class _Sip:
    user_agent = "voicegw-test"


class _Config:
    sip = _Sip()


class FakeUA:
    """Answers every REGISTER 200 at once, granting what was asked, and records (trunk host, port, Expires)."""

    config = _Config()

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, int]] = []
        self._n = 0

    def new_call_id(self) -> str:
        self._n += 1
        return f"call-{self._n}"

    def new_tag(self) -> str:
        return "tag"

    def make_via(self, transport: str) -> Via:
        self._n += 1
        return Via(host="192.0.2.10", port=5060, transport=transport.upper(), params={"branch": f"z9hG4bK{self._n}"})

    def contact(self, transport: str, user: str | None = None) -> NameAddr:
        return NameAddr(uri=SipUri(host="192.0.2.10", port=5060, user=user))

    def send_request(self, request: Request, destination: tuple[str, int], transport: str, owner: Any) -> None:
        expires = int(request.headers.get("Expires") or "-1")
        self.sent.append((destination[0], destination[1], expires))
        response = make_response(request, 200)
        response.headers.set("Expires", str(expires))
        asyncio.get_running_loop().call_soon(owner.on_response, None, response)


def _config(*trunks: dict[str, Any]) -> GatewayConfig:
    return GatewayConfig.model_validate({"trunks": list(trunks)})


def _trunk(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "host": "127.0.0.1", "port": port, "username": name, "register": True, **extra}


async def _settle(ua: FakeUA, count: int, regs: Registrations) -> None:
    """Until ``count`` REGISTERs went out and every binding's answer was taken in (the trunk host is resolved
    in the loop's resolver thread, so this takes real time; bounded at 10 s)."""
    for _ in range(1000):
        if len(ua.sent) >= count and all(item.registered for item in regs.items):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} REGISTERs, saw {ua.sent}")


def test_reload_unregisters_removed_and_changed_trunks_registers_new_ones_keeps_the_rest() -> None:
    async def scenario() -> None:
        ua = FakeUA()
        async with asyncio.TaskGroup() as tasks:
            regs = Registrations(
                _config(_trunk("keep", 5071), _trunk("drop", 5072), _trunk("change", 5073)),
                ua,  # type: ignore[arg-type]
                Metrics(),
                tasks,
            )
            regs.start()
            await _settle(ua, 3, regs)
            assert sorted(ua.sent) == [("127.0.0.1", 5071, 3600), ("127.0.0.1", 5072, 3600), ("127.0.0.1", 5073, 3600)]
            kept = next(item for item in regs.items if item.trunk.name == "keep")
            ua.sent.clear()

            result = await regs.reconfigure(
                _config(_trunk("keep", 5071), _trunk("change", 5073, expires=600), _trunk("new", 5074))
            )
            await _settle(ua, 4, regs)

            assert result == (2, 2, 1)  # added: change + new; removed: drop + old change; kept: keep
            assert sorted(ua.sent) == [
                ("127.0.0.1", 5072, 0),  # the dropped trunk's binding is removed
                ("127.0.0.1", 5073, 0),  # the changed trunk's old binding is removed ...
                ("127.0.0.1", 5073, 600),  # ... and registered again with its new settings
                ("127.0.0.1", 5074, 3600),  # the new trunk registers
            ]
            # The unchanged trunk keeps its binding object (and so its refresh schedule and Call-ID).
            assert kept in regs.items and kept.registered
            assert sorted(item.trunk.name for item in regs.items) == ["change", "keep", "new"]
            await regs.stop()

    asyncio.run(scenario())
