"""parse_message, StreamFramer, serialisation and response construction (RFC 3261 §7, §8.2, §18.3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.headers import Headers
from gateway.sip.message import REASON_PHRASES, Request, Response, make_response, make_response_from_error
from gateway.sip.parser import ParserLimits, StreamFramer, parse_message
from gateway.sip.uri import SipUri

CAPTURED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sip" / "captured"

INVITE = (
    "INVITE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Alice" <sip:alice@example.com>;tag=a1\r\n'
    "To: <sip:bob@example.com>\r\n"
    "Call-ID: call-1@192.0.2.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@192.0.2.1:5060>\r\n"
    "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 4\r\n"
    "\r\n"
    "v=0\n"
)


def _parse_request(text: str | bytes) -> Request:
    message = parse_message(text.encode() if isinstance(text, str) else text)
    assert isinstance(message, Request)
    return message


def _reject(data: bytes) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data)
    return info.value


def test_typed_views() -> None:
    req = _parse_request(INVITE)
    assert req.method == "INVITE" and isinstance(req.uri, SipUri) and req.uri.user == "bob"
    assert req.call_id == "call-1@192.0.2.1"
    assert (req.cseq.seq, req.cseq.method) == (1, "INVITE")
    assert req.from_.display_name == "Alice" and req.from_.tag == "a1"
    assert req.to.tag is None
    assert req.top_via.branch == "z9hG4bKabc" and req.top_via.rport == ""
    assert req.max_forwards == 70
    assert [str(r.uri) for r in req.record_routes] == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert req.routes == []
    assert req.content_type == "application/sdp"
    assert req.body == b"v=0\n"


def test_views_follow_header_changes_and_are_copies() -> None:
    req = _parse_request(INVITE)
    req.from_.params["tag"] = "mutated"
    req.top_via.params["received"] = "x"
    assert req.from_.tag == "a1"
    assert req.top_via.received is None
    req.headers.set("From", "<sip:carol@example.com>;tag=c3")
    assert req.from_.tag == "c3"
    req.headers.set("CSeq", "7 INVITE")
    assert req.cseq.seq == 7
    req.headers.set("Contact", "*")
    assert req.contacts == []
    req.headers.remove("Call-ID")
    with pytest.raises(RemoteProtocolError, match="Missing Call-ID header"):
        _ = req.call_id


def test_bare_lf_and_compact_forms() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\nv: SIP/2.0/TCP h;branch=z9hG4bK1\nf: <sip:c@d>;tag=1\nt: sip:a@b\n"
        b"i: 1@h\nCSeq: 2 OPTIONS\nl: 0\nk: timer, 100rel\n\n"
    )
    req = _parse_request(data)
    assert req.headers.get("Supported") == "timer, 100rel"
    assert req.headers.get_list("k") == ["timer", "100rel"]
    assert b"Via: SIP/2.0/TCP h;branch=z9hG4bK1\r\n" in req.serialize()


def test_leading_crlf_ignored_and_folding() -> None:
    req = _parse_request("\r\n\r\n" + INVITE.replace("Max-Forwards: 70", "Max-Forwards:\r\n  70"))
    assert req.max_forwards == 70


def test_udp_framing() -> None:
    # No Content-Length on UDP: the body is the rest of the datagram.
    no_length = INVITE.replace("Content-Length: 4\r\n", "").encode() + b"\x00tail"
    assert _parse_request(no_length).body == b"v=0\n\x00tail"
    # Bytes after Content-Length are ignored.
    assert _parse_request(INVITE.encode() + b"garbage").body == b"v=0\n"
    # Binary body with NULs framed by length.
    binary = INVITE.replace("Content-Length: 4", "Content-Length: 6").encode()[:-4] + b"\x00\r\n\r\n\x00"
    assert _parse_request(binary).body == b"\x00\r\n\r\n\x00"


@pytest.mark.parametrize(
    ("replacement", "reason"),
    [
        ("Content-Length: 400", "larger than"),
        ("Content-Length: -1", "Invalid Content-Length"),
        ("Content-Length: 4x", "Invalid Content-Length"),
        ("Content-Length: 4\r\nl: 4", "Multiple Content-Length headers"),
        ("Content-Length: 99999999999999999999", "Invalid Content-Length"),
    ],
)
def test_bad_content_length(replacement: str, reason: str) -> None:
    err = _reject(INVITE.replace("Content-Length: 4", replacement).encode())
    assert err.status_code == 400 and reason in err.reason
    assert err.headers is not None and err.headers.get("Call-ID") == "call-1@192.0.2.1"


@pytest.mark.parametrize(
    ("old", "new", "status", "reason"),
    [
        ("SIP/2.0\r\nVia", "SIP/3.0\r\nVia", 505, "Version Not Supported"),
        ("SIP/2.0\r\nVia", "HTTP/1.1\r\nVia", 400, "Invalid SIP-Version"),
        ("INVITE sip:bob@example.com SIP", "INVITE <sip:bob@example.com> SIP", 400, "enclosed in <>"),
        (
            "INVITE sip:bob@example.com SIP",
            "INVITE sip:bob@example.com; lr SIP",
            400,
            "Malformed Request-Line",
        ),
        ("INVITE sip:bob@example.com SIP", "INV<ITE sip:bob@example.com SIP", 400, "Invalid method"),
        ("Call-ID: call-1@192.0.2.1\r\n", "", 400, "Missing Call-ID header"),
        ("To: <sip:bob@example.com>\r\n", "", 400, "Missing To header"),
        ("CSeq: 1 INVITE\r\n", "", 400, "Missing CSeq header"),
        ("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport\r\n", "", 400, "Missing Via header"),
        ("CSeq: 1 INVITE", "CSeq: 1 BYE", 400, "CSeq method does not match request method"),
        ("CSeq: 1 INVITE", "CSeq: 2147483648 INVITE", 400, "Invalid CSeq"),
        ("Max-Forwards: 70", "Max-Forwards: 70\r\nMax-Forwards: 69", 400, "Multiple Max-Forwards headers"),
        ("Max-Forwards: 70", "Max-Forwards: seventy", 400, "Invalid Max-Forwards"),
        (
            "Content-Type: application/sdp",
            "Content-Type: a/b\r\nc: a/b",
            400,
            "Multiple Content-Type headers",
        ),
        (
            "To: <sip:bob@example.com>",
            "To: <sip:bob@example.com>\r\nt: <sip:x@y>",
            400,
            "Multiple To headers",
        ),
        ("To: <sip:bob@example.com>", "To: <sip:bob@example.com>, <sip:x@y>", 400, "Invalid To header"),
        (
            "Contact: <sip:alice@192.0.2.1:5060>",
            "Contact: <sip:alice@192.0.2.1:5060>;;",
            400,
            "Invalid Contact header",
        ),
        (
            "Record-Route: <sip:p2.example.com;lr>",
            "Record-Route: <sip:p2 .example.com;lr>",
            400,
            "Invalid Record-Route header",
        ),
        ("Call-ID: call-1@192.0.2.1", "Call-ID:", 400, "Empty Call-ID"),
        ("Max-Forwards: 70", "Max Forwards: 70", 400, "Invalid header name"),
        ("Max-Forwards: 70", "Max-Forwards 70", 400, "Malformed header line"),
    ],
)
def test_request_validation(old: str, new: str, status: int, reason: str) -> None:
    assert old in INVITE
    err = _reject(INVITE.replace(old, new, 1).encode())
    assert (err.status_code, err.is_response) == (status, False)
    assert reason in err.reason
    assert err.headers is not None and len(err.headers) > 0


def test_max_forwards_is_optional() -> None:
    assert _parse_request(INVITE.replace("Max-Forwards: 70\r\n", "")).max_forwards is None


def test_invalid_utf8_header_rejected() -> None:
    err = _reject(INVITE.replace("Alice", "Al\udcffice").encode("utf-8", "surrogateescape"))
    assert err.status_code == 400 and "UTF-8" in err.reason


def test_limits() -> None:
    limits = ParserLimits(max_message_size=2000, max_header_count=12, max_line_length=200, max_body_size=3)
    # Within the default limits the trailing bytes are simply ignored ...
    assert _parse_request(INVITE.encode() + b" " * 2000).body == b"v=0\n"
    # ... but a datagram over the size limit is refused before any work is done.
    err = _reject_with(INVITE.encode() + b" " * 2000, limits)
    assert err.status_code == 513
    err = _reject_with(INVITE.replace("Max-Forwards: 70", "X-Long: " + "a" * 300).encode(), limits)
    assert err.status_code == 513 and "too long" in err.reason
    many = INVITE.replace("Max-Forwards: 70", "\r\n".join(f"X-{i}: v" for i in range(20)))
    err = _reject_with(many.encode(), limits)
    assert "Too many header fields" in err.reason
    err = _reject_with(INVITE.encode(), limits)
    assert err.status_code == 413


def _reject_with(data: bytes, limits: ParserLimits) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(data, limits=limits)
    return info.value


@pytest.mark.parametrize(
    ("status_line", "reason"),
    [
        ("SIP/2.0 99 Low", "Invalid status code"),
        ("SIP/2.0 700 High", "Status code out of range"),
        ("SIP/2.0 2OO OK", "Invalid status code"),
        ("SIP/3.0 200 OK", "Version Not Supported"),
    ],
)
def test_malformed_responses_are_flagged(status_line: str, reason: str) -> None:
    data = f"{status_line}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n"
    err = _reject(data.encode())
    assert err.is_response and reason in err.reason
    assert make_response_from_error(err) is None


def test_response_without_reason_phrase_and_with_utf8() -> None:
    base = "\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n"
    for line, reason in (
        ("SIP/2.0 180", ""),
        ("SIP/2.0 180 ", ""),
        ("SIP/2.0 486 Occupé  ici", "Occupé  ici"),
    ):
        message = parse_message((line + base).encode())
        assert (
            isinstance(message, Response) and message.status_code in (180, 486) and message.reason == reason
        )


def test_serialize_writes_canonical_names_and_true_length() -> None:
    req = _parse_request(INVITE.replace("Content-Length: 4", "l: 4").replace("Call-ID:", "i:"))
    req.body = b"longer body"
    wire = req.serialize()
    assert wire.startswith(b"INVITE sip:bob@example.com SIP/2.0\r\n")
    assert b"\r\nCall-ID: call-1@192.0.2.1\r\n" in wire
    assert wire.endswith(b"\r\nContent-Length: 11\r\n\r\nlonger body")
    assert wire.count(b"Content-Length") == 1


def test_make_response() -> None:
    req = _parse_request(
        INVITE.replace("Via:", "Via: SIP/2.0/UDP proxy;branch=z9hG4bKp\r\nVia:").replace(
            "CSeq: 1 INVITE", "CSeq: 1 INVITE\r\nTimestamp: 54"
        )
    )
    ok = make_response(
        req,
        200,
        to_tag="t1",
        body=b"v=0\r\n",
        content_type="application/sdp",
        headers=[("Contact", "<sip:gw@h>")],
    )
    assert ok.reason == "OK"
    assert ok.headers.get_all("Via") == req.headers.get_all("Via")
    assert ok.headers.get("From") == req.headers.get("From")
    assert ok.headers.get("To") == "<sip:bob@example.com>;tag=t1"
    assert ok.headers.get("Call-ID") == req.call_id and ok.cseq == req.cseq
    assert ok.headers.get_all("Record-Route") == req.headers.get_all("Record-Route")
    assert ok.content_type == "application/sdp" and ok.body == b"v=0\r\n"
    assert "Timestamp" not in ok.headers
    again = parse_message(ok.serialize())
    assert isinstance(again, Response) and again.to.tag == "t1"
    trying = make_response(req, 100)
    assert trying.reason == "Trying" and trying.to.tag is None and trying.headers.get("Timestamp") == "54"
    busy = make_response(req, 486, "Busy Here Now", to_tag="t1")
    assert busy.reason == "Busy Here Now" and "Record-Route" not in busy.headers
    options = _parse_request(INVITE.replace("INVITE", "OPTIONS"))
    assert "Record-Route" not in make_response(options, 200, to_tag="z").headers
    tagged = _parse_request(INVITE.replace("To: <sip:bob@example.com>", "To: <sip:bob@example.com>;tag=old"))
    assert make_response(tagged, 200, to_tag="new").to.tag == "old"
    assert REASON_PHRASES[481] == "Call/Transaction Does Not Exist"
    assert make_response(req, 299).reason == "OK"


def test_make_response_from_error() -> None:
    err = _reject(INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE").encode())
    response = make_response_from_error(err)
    assert response is not None
    assert (response.status_code, response.reason) == (400, "CSeq method does not match request method")
    assert response.headers.get("CSeq") == "1 BYE"
    first_tag = response.to.tag
    assert first_tag
    # A retransmission of the same bad request gets the same To tag.
    second = make_response_from_error(_reject(INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE").encode()))
    assert second is not None and second.to.tag == first_tag
    assert parse_message(response.serialize()).status_code == 400  # type: ignore[union-attr]
    err.extra_headers = (("Unsupported", "foo"),)
    with_extra = make_response_from_error(err)
    assert with_extra is not None and with_extra.headers.get("Unsupported") == "foo"
    # A Via we cannot parse is copied back as received (the edge answers at the packet's source).
    bad_via = _reject(INVITE.replace(";rport", ";;").encode())
    answered = make_response_from_error(bad_via)
    assert answered is not None and answered.status_code == 400
    assert answered.headers.get_all("Via") == bad_via.headers.get_all("Via")  # type: ignore[union-attr]
    assert make_response_from_error(RemoteProtocolError("x", headers=Headers())) is None


class TestStreamFramer:
    def test_frames_by_content_length_across_chunks(self) -> None:
        framer = StreamFramer()
        wire = INVITE.encode()
        stream = b"\r\n\r\n" + wire + b"\r\n" + wire
        for byte in stream[:-1]:
            framer.feed(bytes([byte]))
        framer.feed(stream[-1:])
        assert framer.next_message() == wire
        assert framer.next_message() == wire
        assert framer.next_message() is None

    def test_waits_for_a_short_body(self) -> None:
        framer = StreamFramer()
        wire = INVITE.encode()
        framer.feed(wire[:-2])
        assert framer.next_message() is None
        framer.feed(wire[-2:])
        assert framer.next_message() == wire

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (INVITE.replace("Content-Length: 4\r\n", "").encode(), "Missing Content-Length"),
            (
                INVITE.replace("Content-Length: 4", "Content-Length: 4\r\nl: 4").encode(),
                "Multiple Content-Length",
            ),
            (INVITE.replace("Content-Length: 4", "Content-Length: -4").encode(), "Invalid Content-Length"),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not a SIP start line"),
            (b"\x16\x03\x01\x02\x00\x01\x00", "Unframeable"),
        ],
    )
    def test_unframeable_input_raises_and_stays_broken(self, data: bytes, reason: str) -> None:
        framer = StreamFramer()
        framer.feed(data)
        with pytest.raises(RemoteProtocolError, match=reason):
            framer.next_message()
        framer.feed(INVITE.encode())
        with pytest.raises(RemoteProtocolError):
            framer.next_message()

    def test_bounded_sizes(self) -> None:
        framer = StreamFramer(max_header_bytes=100)
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: " + b"a" * 200)
        with pytest.raises(RemoteProtocolError, match="Header section too large"):
            framer.next_message()
        framer = StreamFramer(max_message_size=1000)
        framer.feed(INVITE.replace("Content-Length: 4", "Content-Length: 5000").encode())
        with pytest.raises(RemoteProtocolError, match="Message too large"):
            framer.next_message()

    def test_folded_content_length(self) -> None:
        framer = StreamFramer()
        wire = INVITE.replace("Content-Length: 4", "Content-Length:\r\n 4").encode()
        framer.feed(wire)
        assert framer.next_message() == wire


@pytest.mark.parametrize("name", sorted(p.name for p in CAPTURED.glob("*.dat")))
def test_captured_messages_parse(name: str) -> None:
    data = (CAPTURED / name).read_bytes()
    message = parse_message(data)
    assert message.content_type == "application/sdp"
    assert message.body.startswith(b"v=0")
    assert len(message.body) == int(message.headers.get("Content-Length") or "-1")
    assert message.top_via.branch is not None and message.top_via.branch.startswith("z9hG4bK")
    assert message.cseq.method == "INVITE"
    if name.startswith("invite"):
        assert isinstance(message, Request) and message.method == "INVITE"
        assert message.from_.tag
    else:
        assert isinstance(message, Response) and message.status_code == 200
        assert message.to.tag and message.from_.tag


def test_captured_details() -> None:
    pj = _parse_request((CAPTURED / "invite-pjsip-2.15.dat").read_bytes())
    assert pj.headers.get_list("Supported") == ["replaces", "100rel", "timer", "norefersub"]
    assert pj.headers.get("Session-Expires") == "1800"
    assert pj.top_via.rport == "" and pj.top_via.sent_by() == ("127.0.0.1", 41941)
    assert pj.contacts[0].uri == SipUri(host="127.0.0.1", user="pjcall", port=41941, params={"ob": None})
    baresip = _parse_request((CAPTURED / "invite-baresip-1.0.dat").read_bytes())
    assert baresip.headers.get("Supported") == "" and baresip.headers.get_list("Supported") == []
    sipp = _parse_request((CAPTURED / "invite-sipp-3.6-uac.dat").read_bytes())
    assert sipp.from_.display_name == "sipp" and sipp.to.display_name == "100"
    assert isinstance(sipp.contacts[0].uri, SipUri) and sipp.contacts[0].uri.port == 5598
    answer = parse_message((CAPTURED / "ok200-baresip-1.0.dat").read_bytes())
    assert isinstance(answer, Response) and answer.reason == "Answering"
    assert answer.top_via.received == "127.0.0.1" and answer.top_via.rport == "34781"
