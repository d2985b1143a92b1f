"""The YAML config: env expansion, validation messages that name the key, routing order, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, load_config_text, parse_host_port

REPO = Path(__file__).resolve().parents[2]


def test_embedded_default_config_loads_offline() -> None:
    config = load_config(None, env={})
    assert config.sip.listen_addr == ("127.0.0.1", 5060)
    assert config.sip.public_address is None  # ${VOICEGW_PUBLIC_ADDRESS:-} empty means unset
    assert config.route_for("echo") is not None and config.route_for("echo").echo
    assert config.route_for("+15551234567").assistant == "demo"
    assert config.providers.openai.api_key is None


def test_example_config_and_assistant_file_load() -> None:
    config = load_config(REPO / "config" / "voicegw.example.yaml", env={"TRUNK_USER": "alice"})
    assert config.assistants["support"]["name"] == "Support"
    assert config.trunks[0].username == "alice"
    assert config.route_for("+15550001111").assistant == "demo"
    assert config.route_for("+15559999999").assistant == "demo"  # prefix pattern +1555*
    assert config.route_for("+4420").server is not None  # catch-all to assistant-request


def test_env_expansion_with_and_without_default() -> None:
    text = 'sip: {listen: "${HOST:-127.0.0.2}:${PORT}"}'
    assert load_config_text(text, env={"PORT": "5080"}).sip.listen_addr == ("127.0.0.2", 5080)
    with pytest.raises(ConfigError, match=r"sip\.listen: environment variable PORT is not set"):
        load_config_text(text, env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('sip: {listen: "1.2.3.4:99999"}', r"sip\.listen: .*port 99999 out of range"),
        ("rtp: {port_min: 30000, port_max: 20000}", r"rtp: .*port_min 30000 is greater than port_max 20000"),
        ("numbers: [{number: '1', assistant: ghost}]", r"numbers\.0\.assistant: unknown assistant 'ghost'"),
        ("numbers: [{number: '1', echo: true, assistant: a}]\nassistants: {a: {}}", r"exactly one of"),
        ("numbers: [{number: '1', server: {url: 'ftp://x'}}]", r"numbers\.0\.server\.url: .*http"),
        ("trunks: [{name: t, host: h, register: true}]", r"trunks\.0: .*register: true but no username"),
        ("sip: {lisen: '1.2.3.4'}", r"sip\.lisen: Extra inputs are not permitted"),
        ("- just a list", r"mapping at the top level"),
        ("sip: [unclosed", r"not valid YAML"),
    ],
)
def test_invalid_config_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config_text(text, env={})


def test_assistant_file_that_is_missing_names_the_assistant(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("assistants: {sales: sales.json}\n")
    with pytest.raises(ConfigError, match=r"assistants\.sales: cannot read .*sales\.json"):
        load_config(cfg)


def test_routing_is_first_match_wins() -> None:
    config = load_config_text(
        "assistants: {a: {}, b: {}}\n"
        "numbers: [{number: '+1555*', assistant: a}, {number: '+15550001111', assistant: b}, {number: '*', echo: true}]",
        env={},
    )
    assert config.route_for("+15550001111").assistant == "a"
    assert config.route_for("+4420").echo


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10.0.0.1:5080", ("10.0.0.1", 5080)), ("[::1]:5070", ("::1", 5070)), ("[::1]", ("::1", 5060)),
     ("example.com", ("example.com", 5060)), ("::1", ("::1", 5060))],
)
def test_host_port_forms(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, default_port=5060) == expected


def test_public_address_is_announced_separately_from_the_bound_one() -> None:
    config = load_config_text('sip: {listen: "0.0.0.0:5060", public_address: "203.0.113.7"}', env={})
    assert config.sip.listen_addr == ("0.0.0.0", 5060)
    assert config.sip.announced_addr == ("203.0.113.7", 5060)
