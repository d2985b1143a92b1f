"""RFC 4475 torture messages and RFC 5118 IPv6 messages: the parse-level outcome of every file.

The CSV beside the files states what a parser must do; where it leaves a choice ("may reject",
"must not crash") the choice made here is written down in CHOICES and asserted.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.headers import Headers
from gateway.sip.message import Request, Response, make_response_from_error
from gateway.sip.parser import parse_message
from gateway.sip.uri import AbsoluteUri, SipUri, parse_uri, uri_equal

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sip"


@dataclass(frozen=True)
class Outcome:
    accept: bool
    status: int = 400
    is_response: bool = False
    reason: str = ""  # a substring the error reason must contain


ACCEPT = Outcome(accept=True)

# Choices where the CSV allows either outcome.
CHOICES: dict[str, Outcome] = {
    "lwsstart.dat": ACCEPT,  # liberal; serialisation rebuilds the request line with single SPs
    "trws.dat": ACCEPT,
    "escruri.dat": ACCEPT,  # URI headers kept as raw text, never turned into header fields
    "baddate.dat": ACCEPT,  # Date is not interpreted
    "badaspec.dat": Outcome(False, reason="Invalid To header: Whitespace inside <>"),
    "badbranch.dat": ACCEPT,  # transaction layer decides about a bare magic cookie
    "insuf.dat": Outcome(False, reason="Missing From header"),
    "multi01.dat": Outcome(False, reason="Multiple From headers"),
}

# Reasons for the mandatory rejections: they name the problem.
REJECT_DETAILS: dict[str, Outcome] = {
    "badvers.dat": Outcome(False, status=505, reason="Version Not Supported"),
    "bigcode.dat": Outcome(False, is_response=True, reason="Invalid status code"),
    "scalarlg.dat": Outcome(False, is_response=True, reason="Invalid CSeq"),
    "scalar02.dat": Outcome(False, reason="Invalid CSeq"),
    "badinv01.dat": Outcome(False, reason="Invalid Via header"),
    "clerr.dat": Outcome(False, reason="Content-Length 9999 larger than"),
    "ncl.dat": Outcome(False, reason="Invalid Content-Length"),
    "mcl01.dat": Outcome(False, reason="Multiple Content-Length headers"),
    "quotbal.dat": Outcome(False, reason="Invalid To header: Unterminated quoted string"),
    "ltgtruri.dat": Outcome(False, reason="Request-URI must not be enclosed in <>"),
    "lwsruri.dat": Outcome(False, reason="Malformed Request-Line"),
    "regbadct.dat": Outcome(False, reason="Invalid Contact header"),
    "baddn.dat": Outcome(False, reason="Invalid From header: Invalid display name"),
    "mismatch01.dat": Outcome(False, reason="CSeq method does not match request method"),
    "mismatch02.dat": Outcome(False, reason="CSeq method does not match request method"),
    "ipv6-bad.dat": Outcome(False, reason="Invalid Request-URI"),
}


def _rows() -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for folder in ("rfc4475", "rfc5118"):
        with (DATA / folder / "expected_outcomes.csv").open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                name = row["file"].rsplit("/", 1)[-1]
                rows.append((folder, name, row["parser_must"]))
    return rows


ROWS = _rows()


def _expected(name: str, parser_must: str) -> Outcome:
    must = parser_must.lower()
    if name in CHOICES:
        assert not must.startswith(("accept", "reject")) or "liberal" in must or "reasonable" in must
        return CHOICES[name]
    if must.startswith("accept"):
        return ACCEPT
    assert must.startswith("reject"), f"no choice recorded for {name}: {parser_must}"
    return REJECT_DETAILS.get(name, Outcome(False))


def test_every_file_is_covered() -> None:
    listed = {(folder, name) for folder, name, _ in ROWS}
    on_disk = {
        (p.parent.name, p.name) for folder in ("rfc4475", "rfc5118") for p in (DATA / folder).glob("*.dat")
    }
    # test.dat is not an RFC 4475 case (see test_stray_test_dat_is_rejected).
    assert listed == on_disk - {("rfc4475", "test.dat")}
    assert len(ROWS) == 61


def test_stray_test_dat_is_rejected() -> None:
    # A request line without SIP-Version: malformed, answered 400.
    with pytest.raises(RemoteProtocolError) as info:
        parse_message((DATA / "rfc4475" / "test.dat").read_bytes())
    assert info.value.status_code == 400
    assert "Request-Line" in info.value.reason


@pytest.mark.parametrize(("folder", "name", "parser_must"), ROWS, ids=[r[1] for r in ROWS])
def test_parse_level_outcome(folder: str, name: str, parser_must: str) -> None:
    data = (DATA / folder / name).read_bytes()
    expected = _expected(name, parser_must)
    if expected.accept:
        message = parse_message(data)
        assert isinstance(message, Request | Response)
        # Whatever is accepted re-serialises into something that parses to the same thing.
        again = parse_message(message.serialize())
        assert again.serialize() == message.serialize()
        return
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data)
    err = info.value
    assert err.status_code == expected.status
    assert err.is_response == expected.is_response
    assert expected.reason in err.reason
    if not err.is_response:
        assert isinstance(err.headers, Headers)


def _load(folder: str, name: str) -> Request | Response:
    return parse_message((DATA / folder / name).read_bytes())


def _request(name: str, folder: str = "rfc4475") -> Request:
    message = _load(folder, name)
    assert isinstance(message, Request)
    return message


def test_wsinv_whitespace_folding_and_case() -> None:
    req = _request("wsinv.dat")
    assert req.method == "INVITE"
    assert req.to.tag == "1918181833n"
    assert req.from_.display_name == 'J Rosenberg \\"'
    assert req.from_.tag == "98asjd8"
    assert req.max_forwards == 68
    assert req.cseq.seq == 9 and req.cseq.method == "INVITE"
    assert [(v.transport, v.host) for v in req.vias] == [
        ("UDP", "192.0.2.2"),
        ("TCP", "spindle.example.com"),
        ("UDP", "192.168.255.111"),
    ]
    assert req.vias[2].branch == "z9hG4bK30239"
    contact = req.contacts[0]
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert req.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert req.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert req.headers.get("Subject") == ""
    assert req.routes[0].uri == parse_uri("sip:services.example.com;lr;unknownwith=value;unknown-no-value")
    assert len(req.body) == 150


def test_intmeth_unusual_characters() -> None:
    req = _request("intmeth.dat")
    assert req.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(req.uri, SipUri)
    assert req.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert req.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert req.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert req.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert req.from_.tag == "_token~1'+`*%!-."
    assert req.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    raw = (DATA / "rfc4475" / "intmeth.dat").read_bytes()
    line = next(x for x in raw.split(b"\r\n") if x.startswith(b"extensionHeader"))
    assert req.headers.get("extensionHeader-!.%*+_`'~") == line.split(b":", 1)[1].decode("utf-8")


def test_esc01_escapes_kept_and_compared_once() -> None:
    req = _request("esc01.dat")
    assert isinstance(req.uri, SipUri)
    assert req.uri.user == "sips%3Auser%40example.com"
    contact = req.contacts[0].uri
    assert isinstance(contact, SipUri)
    assert contact.params["n%61me"] == "v%61lue%25%34%31"
    # value%2541 unescapes once to "value%41", which is not "valueA".
    assert uri_equal(contact, parse_uri("sip:caller@host5.example.net;lr;name=value%2541"))
    assert not uri_equal(contact, parse_uri("sip:caller@host5.example.net;lr;name=valueA"))
    assert uri_equal(req.to.uri, parse_uri("sip:user@example.com"))
    from_uri = req.from_.uri
    assert isinstance(from_uri, SipUri) and from_uri.user == "I%20have%20spaces"


def test_escnull_contacts_are_distinct() -> None:
    req = _request("escnull.dat")
    first, second = (c.uri for c in req.contacts)
    assert isinstance(first, SipUri) and first.user == "%00"
    assert not uri_equal(first, second)


def test_esc02_escaped_method_and_header_name_are_not_register_and_contact() -> None:
    req = _request("esc02.dat")
    assert req.method == "RE%47IST%45R"
    assert len(req.contacts) == 2
    assert req.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_dblreq_trailing_bytes_ignored() -> None:
    req = _request("dblreq.dat")
    assert req.method == "REGISTER"
    assert req.body == b""


def test_semiuri_user_holds_semicolon() -> None:
    req = _request("semiuri.dat")
    assert isinstance(req.uri, SipUri)
    assert req.uri.user == "user;par=u%40example.net"
    assert req.uri.host == "example.com" and req.uri.params == {}
    assert len(req.headers.get_list("Accept")) == 6


def test_mpart01_binary_body_framed_by_length() -> None:
    req = _request("mpart01.dat")
    assert len(req.body) == 553
    assert b"\x00" in req.body
    assert req.content_type == "multipart/mixed"


def test_unusual_and_empty_reason_phrases() -> None:
    unreason = _load("rfc4475", "unreason.dat")
    assert isinstance(unreason, Response)
    assert unreason.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    noreason = _load("rfc4475", "noreason.dat")
    assert isinstance(noreason, Response) and noreason.status_code == 100 and noreason.reason == ""


def test_unknown_schemes_are_absolute_uris() -> None:
    assert _request("unkscm.dat").uri == AbsoluteUri("nobodyknowsthisscheme", "totallyopaquecontent")
    assert _request("novelsc.dat").uri == AbsoluteUri("soap.beep", "//192.0.2.103:3002")
    req = _request("unksm2.dat")
    assert req.to.uri == AbsoluteUri("isbn", "2983792873")
    assert req.contacts[0].uri == AbsoluteUri("name", "John_Smith")


def test_contact_param_versus_uri_param() -> None:
    c1 = _request("cparam01.dat").contacts[0]
    assert c1.params == {"unknownparam": None}
    assert isinstance(c1.uri, SipUri) and c1.uri.params == {}
    c2 = _request("cparam02.dat").contacts[0]
    assert c2.params == {}
    assert isinstance(c2.uri, SipUri) and c2.uri.params == {"unknownparam": None}


def test_regescrt_uri_headers_stay_raw() -> None:
    uri = _request("regescrt.dat").contacts[0].uri
    assert isinstance(uri, SipUri) and uri.headers == "Route=%3Csip:sip.example.com%3E"


def test_inv2543_rfc2543_request() -> None:
    req = _request("inv2543.dat")
    assert req.max_forwards is None
    assert req.top_via.branch is None
    assert req.from_.tag is None
    assert req.body.startswith(b"v=0")


def test_longreq_long_values() -> None:
    req = _request("longreq.dat")
    assert len(req.vias) == 34
    assert req.call_id.startswith("longreq.onereallyreally") and req.call_id.endswith("longcallid")
    assert len(req.to.display_name or "") > 80


def test_ipv6_references() -> None:
    good = _request("ipv6-good.dat", "rfc5118")
    assert isinstance(good.uri, SipUri) and good.uri.host == "[2001:db8::10]"
    assert good.top_via.sent_by() == ("[2001:db8::9:1]", None)
    ambiguous = _request("port-ambiguous.dat", "rfc5118").uri
    assert isinstance(ambiguous, SipUri) and (ambiguous.host, ambiguous.port) == ("[2001:db8::10:5070]", None)
    unambiguous = _request("port-unambiguous.dat", "rfc5118").uri
    assert isinstance(unambiguous, SipUri) and (unambiguous.host, unambiguous.port) == (
        "[2001:db8::10]",
        5070,
    )
    assert _request("via-received-param-no-delim.dat", "rfc5118").top_via.received == "2001:db8::9:255"
    assert _request("via-received-param-with-delim.dat", "rfc5118").top_via.received == "[2001:db8::9:255]"
    mixed = _request("mult-ip-in-header.dat", "rfc5118").vias
    assert [v.sent_by() for v in mixed] == [
        ("[2001:db8::9:1]", 6050),
        ("192.0.2.1", None),
        ("[2001:db8::9:255]", None),
    ]
    mapped = _request("ipv4-mapped-ipv6.dat", "rfc5118")
    assert mapped.contacts[0].uri == parse_uri("sip:ted@[::ffff:192.0.2.2]")


def test_rejected_requests_can_be_answered_statelessly() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message((DATA / "rfc4475" / "badvers.dat").read_bytes())
    response = make_response_from_error(info.value)
    assert response is not None and response.status_code == 505
    assert response.headers.get("Call-ID") == "badvers.31417@c.example.com"
    assert response.to.tag is not None
    with pytest.raises(RemoteProtocolError) as info:
        parse_message((DATA / "rfc4475" / "insuf.dat").read_bytes())
    assert make_response_from_error(info.value) is None  # nothing to address the answer with
    with pytest.raises(RemoteProtocolError) as info:
        parse_message((DATA / "rfc4475" / "bigcode.dat").read_bytes())
    assert make_response_from_error(info.value) is None  # responses are never answered
