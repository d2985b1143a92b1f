"""Config reload (gateway.reload) and the announced address guessed for a wildcard listen (gateway.ua)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import structlog

from gateway.app import Gateway
from gateway.config import GatewayConfig, ProvidersConfig, load_config, load_config_text
from gateway.reload import Reloader, plan_reload
from gateway.ua import AnnouncedAddressError, default_route_address

BASE = """
sip: {listen: "127.0.0.1:5070"}
rtp: {port_min: 30000, port_max: 30100}
http: {listen: "127.0.0.1:8090"}
storage: {path: ":memory:"}
assistants:
  demo: {firstMessage: "Hello", model: {provider: rules}}
numbers:
  - {number: "echo", echo: true}
"""

ADDED = BASE + """  - {number: "+15550009999", assistant: demo}
"""


def test_plan_keeps_restart_only_keys_and_takes_everything_else() -> None:
    old = load_config_text(BASE, env={})
    new = load_config_text(
        ADDED.replace("127.0.0.1:5070", "127.0.0.1:5080").replace("port_max: 30100", "port_max: 30200")
        + "transfers: {allow: ['+1555*']}\n",
        env={},
    )
    plan = plan_reload(old, new)
    assert plan.restart_needed == ("sip.listen", "rtp.port_max")
    assert plan.config.sip.listen == "127.0.0.1:5070"
    assert plan.config.rtp.port_max == 30100
    assert plan.config.route_for("+15550009999") is not None
    assert plan.config.transfers.allows("+15551234567")
    # The assistants parsed at load survive the copy.
    assert plan.config.assistant("demo").first_message == "Hello"


def test_plan_of_an_unchanged_restart_section_needs_no_restart() -> None:
    old = load_config_text(BASE, env={})
    plan = plan_reload(old, load_config_text(ADDED, env={}))
    assert plan.restart_needed == ()
    assert plan.config.route_for("+15550009999") is not None


# ---------------------------------------------------------------- Reloader against stand-ins of the running parts


@dataclass
class _Ua:
    config: GatewayConfig
    draining: bool = False


@dataclass
class _Providers:
    updates: list[ProvidersConfig] = field(default_factory=list)

    def update(self, config: ProvidersConfig) -> None:
        self.updates.append(config)


@dataclass
class _Calls:
    config: GatewayConfig
    providers: _Providers = field(default_factory=_Providers)
    calls: dict[str, object] = field(default_factory=dict)


@dataclass
class _Registrations:
    seen: list[GatewayConfig] = field(default_factory=list)

    async def reconfigure(self, config: GatewayConfig) -> tuple[int, int, int]:
        self.seen.append(config)
        return (len(config.trunks), 0, 0)


@dataclass
class _Gateway:
    config: GatewayConfig
    ua: _Ua
    calls: _Calls
    registrations: _Registrations = field(default_factory=_Registrations)
    webhooks: None = None


def _gateway(config: GatewayConfig) -> _Gateway:
    return _Gateway(config=config, ua=_Ua(config), calls=_Calls(config))


def _reload(gw: _Gateway, path: Path | None) -> tuple[bool, list[MutableMapping[str, Any]]]:
    reloader = Reloader(cast(Gateway, gw), path)
    with structlog.testing.capture_logs() as logs:
        applied = asyncio.run(reloader.reload())
    return applied, logs


def test_reload_swaps_routes_everywhere_and_logs_counts(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(BASE)
    gw = _gateway(load_config(path, env={}))
    path.write_text(ADDED + "providers: {openai: {api_key: sk-new}}\n")
    applied, logs = _reload(gw, path)
    assert applied
    for holder in (gw, gw.ua, gw.calls):
        assert holder.config.route_for("+15550009999") is not None
    assert gw.calls.providers.updates[-1].openai.api_key == "sk-new"
    assert gw.registrations.seen == [gw.config]
    done = next(line for line in logs if line["event"] == "config_reloaded")
    assert (done["numbers"], done["assistants"], done["source"]) == (2, 1, str(path))


def test_broken_file_keeps_the_old_config_and_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(BASE)
    old = load_config(path, env={})
    gw = _gateway(old)
    path.write_text(BASE + "  - {number: '+1555', assistant: nobody}\n")
    applied, logs = _reload(gw, path)
    assert not applied
    assert gw.config is old and gw.calls.config is old and gw.ua.config is old
    failed = next(line for line in logs if line["event"] == "config_reload_failed")
    assert "numbers.1.assistant" in failed["error"]
    assert not any(line["event"] == "config_reloaded" for line in logs)


def test_restart_only_change_is_logged_and_not_applied(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(BASE)
    gw = _gateway(load_config(path, env={}))
    path.write_text(ADDED.replace("127.0.0.1:8090", "127.0.0.1:8091"))
    applied, logs = _reload(gw, path)
    assert applied
    assert gw.config.http.listen == "127.0.0.1:8090"
    assert gw.config.route_for("+15550009999") is not None
    restart = next(line for line in logs if line["event"] == "config_reload_restart_needed")
    assert restart["keys"] == ["http.listen"]


def test_without_a_file_the_embedded_default_is_reloaded() -> None:
    default = load_config(None)
    gw = _gateway(default)
    applied, logs = _reload(gw, None)
    assert applied
    assert gw.config is not default and gw.config.numbers == default.numbers
    assert next(line for line in logs if line["event"] == "config_reloaded")["source"] == "embedded default"


def test_no_reload_while_draining(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(ADDED)
    gw = _gateway(load_config_text(BASE, env={}))
    gw.ua.draining = True
    applied, _ = _reload(gw, path)
    assert not applied and gw.config.route_for("+15550009999") is None


# ---------------------------------------------------------------- the address announced for a wildcard listen


class _ProbeSocket:
    def __init__(self, local: str | None, family: int) -> None:
        self.local, self.family, self.connected_to = local, family, None
        self.sent = 0

    def __enter__(self) -> _ProbeSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def connect(self, addr: tuple[str, int]) -> None:
        if self.local is None:
            raise OSError(101, "Network is unreachable")
        self.connected_to = addr  # type: ignore[assignment]

    def getsockname(self) -> tuple[str, int]:
        assert self.local is not None
        return (self.local, 40000)


def _factory(local: str | None, made: list[_ProbeSocket]) -> Any:
    def make(family: int, kind: int) -> _ProbeSocket:
        assert kind == socket.SOCK_DGRAM  # a UDP connect() sends nothing
        sock = _ProbeSocket(local, family)
        made.append(sock)
        return sock

    return make


def test_wildcard_listen_announces_the_default_route_address() -> None:
    made: list[_ProbeSocket] = []
    assert default_route_address("0.0.0.0", socket_factory=_factory("10.1.2.3", made)) == "10.1.2.3"
    assert made[0].family == socket.AF_INET and made[0].connected_to is not None
    made.clear()
    assert default_route_address("::", socket_factory=_factory("2001:db8::5", made)) == "2001:db8::5"
    assert made[0].family == socket.AF_INET6


@pytest.mark.parametrize("local", [None, "0.0.0.0"])
def test_no_default_route_refuses_with_advice(local: str | None) -> None:
    with pytest.raises(AnnouncedAddressError, match=r"set sip\.public_address"):
        default_route_address("0.0.0.0", socket_factory=_factory(local, []))


def _start_ua(probe: Any) -> tuple[tuple[str, int], str, str]:
    """Start a UserAgent on 0.0.0.0 with ``probe`` as the default-route lookup; (announced, Contact, SDP host)."""
    from gateway.calls import CallManager
    from gateway.observability.metrics import Metrics
    from gateway.ua import UserAgent

    config = load_config_text('sip: {listen: "0.0.0.0:0"}\nstorage: {path: ":memory:"}', env={})

    async def main() -> tuple[tuple[str, int], str, str]:
        async with asyncio.TaskGroup() as tasks:
            metrics = Metrics()
            ua = UserAgent(config, metrics, tasks, address_probe=probe)
            calls = CallManager(config, ua, metrics, tasks)
            try:
                await ua.start()
                return ua.announced, str(ua.contact("udp")), calls.sdp_address
            finally:
                await ua.close()

    return asyncio.run(main())


def test_user_agent_on_a_wildcard_announces_the_guess_never_the_wildcard() -> None:
    announced, contact, sdp_host = _start_ua(lambda host: "10.9.8.7")
    assert announced[0] == "10.9.8.7" and announced[1] > 0
    assert "10.9.8.7" in contact and "0.0.0.0" not in contact
    assert sdp_host == "10.9.8.7"


def test_user_agent_refuses_to_start_without_an_address_to_announce() -> None:
    def no_route(host: str) -> str:
        raise AnnouncedAddressError("no default route; set sip.public_address")

    with pytest.raises(ExceptionGroup) as caught:
        _start_ua(no_route)
    assert caught.group_contains(AnnouncedAddressError)
