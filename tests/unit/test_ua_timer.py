"""The UA's one SIP timer under uvloop: a transaction deadline already in the past when the timer is armed (a
loaded loop) must neither crash nor be lost. uvloop's ``call_at`` returns a plain Handle without ``when()`` for
such a deadline; re-arming once compared against ``handle.when()`` and raised, failing the INVITE's 200 OK."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from gateway.config import load_config_text
from gateway.observability.metrics import Metrics
from gateway.ua import UserAgent

uvloop = pytest.importorskip("uvloop")


def test_a_past_deadline_is_armed_rearmed_and_fires() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        ua = UserAgent(load_config_text('sip: {listen: "127.0.0.1:5060"}', env={}), Metrics(), cast(Any, None))
        fired: list[float] = []
        past = loop.time() - 1.0
        ua.layer.get_timer = lambda: past  # type: ignore[method-assign]
        ua.layer.handle_timer = fired.append  # type: ignore[method-assign]
        ua._arm_timer()
        ua._arm_timer()  # same deadline again: kept, not compared through handle.when()
        ua.layer.get_timer = lambda: None  # type: ignore[method-assign]
        await asyncio.sleep(0.01)
        return len(fired)

    assert uvloop.run(main()) == 1
