"""SIP URI parsing, serialisation and comparison (RFC 3261 §19.1, RFC 5118)."""

from __future__ import annotations

import pytest

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.uri import AbsoluteUri, SipUri, parse_uri, uri_equal


def test_components() -> None:
    uri = parse_uri(
        "sips:alice:secret@Example.COM:5071;transport=TCP;lr;maddr=10.0.0.1?subject=hi&priority=urgent"
    )
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "Example.COM",
        5071,
    )
    assert uri.params == {"transport": "TCP", "lr": None, "maddr": "10.0.0.1"}
    assert uri.transport == "tcp"
    assert uri.headers == "subject=hi&priority=urgent"
    assert (
        str(uri)
        == "sips:alice:secret@Example.COM:5071;transport=TCP;lr;maddr=10.0.0.1?subject=hi&priority=urgent"
    )


def test_scheme_is_lower_cased_and_params_keys_too() -> None:
    uri = parse_uri("SIP:bob@host;Transport=udp")
    assert isinstance(uri, SipUri)
    assert uri.scheme == "sip" and uri.params == {"transport": "udp"}
    assert str(uri) == "sip:bob@host;transport=udp"


def test_ipv6_keeps_brackets() -> None:
    uri = parse_uri("sip:alice@[2001:db8::1]:5060")
    assert isinstance(uri, SipUri)
    assert (uri.host, uri.port) == ("[2001:db8::1]", 5060)
    assert str(uri) == "sip:alice@[2001:db8::1]:5060"


def test_copy_is_independent() -> None:
    uri = parse_uri("sip:a@b;x=1")
    assert isinstance(uri, SipUri)
    dup = uri.copy()
    dup.params["x"] = "2"
    assert uri.params["x"] == "1"


@pytest.mark.parametrize(
    "text", ["tel:+15551234567;phone-context=example.com", "urn:service:sos", "mailto:a@b.c"]
)
def test_other_schemes_are_opaque(text: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, AbsoluteUri)
    assert str(uri) == text.split(":", 1)[0].lower() + ":" + text.split(":", 1)[1]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nocolon",
        "sip:",
        "sip:@host",
        "sip:user@",
        "sip:user@host:port",
        "sip:user@host:99999",
        "sip:2001:db8::10",
        "sip:user@[2001:db8::1",
        "sip:user@[zz::1]",
        "sip:user@host;;lr",
        "sip:us er@host",
        "sip:user@ho st",
        "sip:user@host>",
        "1sip:user@host",
        "tel:",
    ],
)
def test_malformed_uris_raise_400(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_uri(text)
    assert info.value.status_code == 400


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # RFC 3261 §19.1.4 examples of equivalent URIs
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
         "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
        ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
         "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    ],
)  # fmt: skip
def test_equal_per_rfc3261(a: str, b: str) -> None:
    assert uri_equal(parse_uri(a), parse_uri(b))
    assert uri_equal(parse_uri(b), parse_uri(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # RFC 3261 §19.1.4 examples of non-equivalent URIs
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:a@b", "sips:a@b"),
        ("sip:a@b;x=1", "sip:a@b;x=2"),
        ("sip:a@b", "tel:+1555"),
    ],
)
def test_not_equal_per_rfc3261(a: str, b: str) -> None:
    assert not uri_equal(parse_uri(a), parse_uri(b))


def test_unescape_exactly_once() -> None:
    # value%2541 is "value%41" after one unescape; it is not "valueA" (RFC 4475 §3.1.1.3).
    escaped = parse_uri("sip:host;name=value%2541")
    assert uri_equal(escaped, parse_uri("sip:host;name=value%2541"))
    assert not uri_equal(escaped, parse_uri("sip:host;name=valueA"))
    assert uri_equal(parse_uri("sip:%41@host"), parse_uri("sip:A@host"))
    # userinfo is case-sensitive
    assert not uri_equal(parse_uri("sip:alice@host"), parse_uri("sip:ALICE@host"))


def test_absolute_uri_equality() -> None:
    assert uri_equal(parse_uri("TEL:+1555"), parse_uri("tel:+1555"))
    assert not uri_equal(parse_uri("tel:+1555"), parse_uri("tel:+1556"))
