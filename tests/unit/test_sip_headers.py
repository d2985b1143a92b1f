"""Header multimap and typed header values (RFC 3261 §7.3, §20, RFC 3581)."""

from __future__ import annotations

import pytest

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.headers import (
    CSeq,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    parse_cseq,
    parse_name_addr,
    parse_name_addr_list,
    parse_params,
    parse_via,
    split_header_list,
)
from gateway.sip.uri import AbsoluteUri, SipUri, parse_uri


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("v", "Via"), ("i", "Call-ID"), ("call-id", "Call-ID"), ("cseq", "CSeq"), ("WWW-AUTHENTICATE", "WWW-Authenticate"),
     ("m", "Contact"), ("e", "Content-Encoding"), ("l", "Content-Length"), ("c", "Content-Type"), ("f", "From"),
     ("s", "Subject"), ("k", "Supported"), ("t", "To"), ("o", "Event"), ("r", "Refer-To"), ("b", "Referred-By"),
     ("x", "Session-Expires"), ("u", "Allow-Events"), ("max-forwards", "Max-Forwards"), ("X-Customer-Id", "X-Customer-Id")],
)  # fmt: skip
def test_canonical_name(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


def test_headers_multimap() -> None:
    h = Headers(
        [
            ("v", "SIP/2.0/UDP a"),
            ("Via", "SIP/2.0/UDP b"),
            ("i", "x@y"),
            ("Allow", "INVITE, ACK"),
            ("allow", "BYE"),
        ]
    )
    assert h.get("VIA") == "SIP/2.0/UDP a"
    assert h.get_all("v") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b"]
    assert h.get_list("Allow") == ["INVITE", "ACK", "BYE"]
    assert "call-id" in h and "Route" not in h and 5 not in h
    h.prepend("Via", "SIP/2.0/UDP top")
    assert h.get_all("Via")[0] == "SIP/2.0/UDP top"
    h.set("Allow", "OPTIONS")
    assert h.get_all("Allow") == ["OPTIONS"]
    h.remove("via")
    assert h.get("Via") is None
    h.prepend("Record-Route", "<sip:p1;lr>")  # no existing field: appended
    assert list(h) == [("Call-ID", "x@y"), ("Allow", "OPTIONS"), ("Record-Route", "<sip:p1;lr>")]
    dup = h.copy()
    dup.add("Subject", "hi")
    assert "Subject" not in h and dup != h
    assert h.get("Missing") is None and h.get_all("Missing") == [] and h.get_list("Missing") == []


def test_split_header_list_honours_quotes_and_brackets() -> None:
    value = '"Doe, John" <sip:j@a;x=1,2>;q=0.5, <sip:b@c>,,  sip:d@e'
    assert split_header_list(value) == ['"Doe, John" <sip:j@a;x=1,2>;q=0.5', "<sip:b@c>", "sip:d@e"]
    assert split_header_list("") == []


def test_parse_params() -> None:
    assert parse_params(' ; Tag = abc ;lr; q="0.5;x"') == {"tag": "abc", "lr": None, "q": '"0.5;x"'}
    assert parse_params("") == {}
    for bad in (";;", ";a=", "x", ";a b", ';a="open'):
        with pytest.raises(RemoteProtocolError):
            parse_params(bad)


def test_name_addr_forms() -> None:
    quoted = parse_name_addr('"Alice \\"A\\" Smith" <sip:alice@example.com;transport=tcp>;tag=1928')
    assert quoted.display_name == 'Alice "A" Smith'
    assert quoted.tag == "1928"
    assert isinstance(quoted.uri, SipUri) and quoted.uri.params == {"transport": "tcp"}
    assert str(quoted) == '"Alice \\"A\\" Smith" <sip:alice@example.com;transport=tcp>;tag=1928'
    tokens = parse_name_addr("Bob  Jones <sip:bob@b>")
    assert tokens.display_name == "Bob Jones"
    spec = parse_name_addr("sip:carol@c;user=phone;tag=9")
    # addr-spec form: parameters belong to the header, not the URI (§20.10)
    assert (
        isinstance(spec.uri, SipUri)
        and spec.uri.params == {}
        and spec.params == {"user": "phone", "tag": "9"}
    )
    assert str(spec) == "<sip:carol@c>;user=phone;tag=9"
    utf8 = parse_name_addr('"Ünïcødé 名前" <sip:u@h>')
    assert utf8.display_name == "Ünïcødé 名前"
    absolute = parse_name_addr("<tel:+1555>")
    assert absolute.uri == AbsoluteUri("tel", "+1555")
    instance = parse_name_addr('sip:d@h;+sip.instance="<urn:uuid:1>"')
    assert instance.params == {"+sip.instance": '"<urn:uuid:1>"'}


def test_with_tag_copies() -> None:
    to = parse_name_addr("<sip:a@b>")
    tagged = to.with_tag("xyz")
    assert tagged.tag == "xyz" and to.tag is None
    assert str(tagged) == "<sip:a@b>;tag=xyz"
    assert NameAddr(uri=parse_uri("sip:a@b"), display_name="A").tag is None


@pytest.mark.parametrize(
    "text",
    [
        '"unterminated <sip:a@b>',
        "Bell, Alexander <sip:a@b>",
        "< sip:a@b >",
        "<sip:a@b",
        "sip:a@b?Route=x",
        '"A" sip:a@b',
        "<sip:a@b>;;",
        "<sip:a@b> junk",
        "",
    ],
)
def test_malformed_name_addr(text: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_name_addr(text)
    assert info.value.status_code == 400


def test_name_addr_list() -> None:
    items = parse_name_addr_list('"A, B" <sip:a@x>;q=1, <sip:b@y>')
    assert [i.display_name for i in items] == ["A, B", None]
    with pytest.raises(RemoteProtocolError):
        parse_name_addr_list("<sip:a@x>,,<sip:b@y>")


def test_via() -> None:
    vias = parse_via(
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport, SIP / 2.0 / tcp [2001:db8::1];received=10.0.0.1;rport=5070"
    )
    assert [(v.transport, v.sent_by()) for v in vias] == [
        ("UDP", ("192.0.2.1", 5060)),
        ("TCP", ("[2001:db8::1]", None)),
    ]
    assert vias[0].branch == "z9hG4bK1" and vias[0].rport == "" and vias[0].received is None
    assert vias[1].rport == "5070" and vias[1].received == "10.0.0.1" and vias[1].branch is None
    assert str(vias[0]) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport"
    assert (
        str(Via(host="h", port=None, transport="TLS", params={"branch": "z9hG4bKx"}))
        == "SIP/2.0/TLS h;branch=z9hG4bKx"
    )
    assert Via(host="h").rport is None


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP",
        "SIP/2.0 host",
        "HTTP/1.1/TCP host",
        "SIP/2.0/UDP host;;",
        "SIP/2.0/UDP host,",
        "SIP/2.0/UDP host:abc",
        "SIP/2.0/UDPhost",
    ],
)
def test_malformed_via(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_via(text)


def test_cseq() -> None:
    assert parse_cseq("0009 \t INVITE") == CSeq(seq=9, method="INVITE")
    assert str(CSeq(seq=2**31 - 1, method="BYE")) == "2147483647 BYE"
    for bad in (
        "2147483648 INVITE",
        "-1 INVITE",
        "1",
        "1 INVITE extra",
        "x INVITE",
        "1 IN<VITE",
        "9" * 5000 + " INVITE",
    ):
        with pytest.raises(RemoteProtocolError) as info:
            parse_cseq(bad)
        assert info.value.reason.startswith("Invalid CSeq")
