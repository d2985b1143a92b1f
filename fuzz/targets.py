"""One fuzz target per parser family: each takes raw bytes and enforces the parser contract.

The contract (docs/ARCHITECTURE.md, rule 5): a parser returns a value or raises its own protocol error
(``RemoteProtocolError``, ``SdpError``, ``RtpParseError``, ``RtcpParseError``, ``DtmfInfoError``), never
anything else. A target lets exactly that error pass and lets every other exception escape, which the
fuzzing engine reports as a crash. Whatever a parser accepts must also serialise and parse again.

The targets are plain functions of ``bytes`` so the same code runs under atheris (``fuzz/run.py``), in the
regression tests (``tests/unit/test_fuzz_targets.py``) and when replaying a saved crash.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.rtp import rtcp
from gateway.rtp.packet import RtpPacket, RtpParseError
from gateway.sdp import SdpError, parse_sdp, serialize_sdp
from gateway.sip.auth import DigestServer, parse_auth_params
from gateway.sip.errors import RemoteProtocolError
from gateway.sip.message import Request, make_response_from_error
from gateway.sip.parser import StreamFramer, parse_message
from gateway.util.dtmf_info import DtmfInfoError, parse_dtmf_info

Target = Callable[[bytes], None]

REPO = Path(__file__).resolve().parents[1]
SHARED_SIP = REPO / ".." / "shared" / "data" / "sip"

# A well-formed request the amplifying target grows by repeating a fuzzed line inside it.
_BASE_INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"From: <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
)


def _check_sip(data: bytes) -> None:
    try:
        message = parse_message(data)
    except RemoteProtocolError as err:
        assert 100 <= err.status_code <= 699, err.status_code
        # The edge answers a rejected request statelessly from the headers read so far (§8.2).
        if not err.is_response:
            response = make_response_from_error(err)
            if response is not None:
                response.serialize()
        return
    # Everything the user agent reads lazily must also parse or raise the protocol error.
    try:
        _ = message.contacts, message.routes, message.record_routes, message.max_forwards
        _ = message.content_type, message.vias
    except RemoteProtocolError:
        return
    again = parse_message(message.serialize())
    assert type(again) is type(message)
    if isinstance(message, Request):
        assert isinstance(again, Request) and again.method == message.method


def sip(data: bytes) -> None:
    """parse_message on one datagram."""
    _check_sip(data)


def sip_amplified(data: bytes) -> None:
    """A fuzzed line repeated up to 4095 times inside a valid INVITE: the header-count, line-length
    and message-size limits must answer before any unbounded work."""
    if len(data) < 2:
        return
    count = int.from_bytes(data[:2], "big") & 0x0FFF
    line = data[2:]
    body_split = line.find(b"\x00")
    body = b""
    if body_split >= 0:
        line, body = line[:body_split], line[body_split + 1 :]
    message = _BASE_INVITE + line * count + b"Content-Length: %d\r\n\r\n" % len(body) + body
    _check_sip(message)


def stream(data: bytes) -> None:
    """StreamFramer (TCP framing) fed in pieces whose sizes the input's first byte chooses."""
    if not data:
        return
    step = data[0] % 64 + 1
    framer = StreamFramer()
    payload = data[1:]
    buffered = 0
    for i in range(0, len(payload), step):
        framer.feed(payload[i : i + step])
        buffered += step
        while True:
            try:
                message = framer.next_message()
            except RemoteProtocolError:
                return  # the connection is closed: nothing further is read
            if message is None:
                break
            assert message, "the framer never yields an empty message"
            _check_sip(message)


def sdp(data: bytes) -> None:
    """parse_sdp on one body; an accepted body round-trips."""
    try:
        description = parse_sdp(data)
    except SdpError:
        return
    assert parse_sdp(serialize_sdp(description)) == description


def rtp(data: bytes) -> None:
    """RtpPacket.parse on one datagram; an accepted packet round-trips."""
    try:
        packet = RtpPacket.parse(data)
    except RtpParseError:
        return
    assert RtpPacket.parse(packet.serialize()) == packet


def rtcp_compound(data: bytes) -> None:
    """rtcp.parse_compound on one datagram."""
    try:
        packets = rtcp.parse_compound(data)
    except rtcp.RtcpParseError:
        return
    assert isinstance(packets, list)


def _lookup_password(username: str, realm: str) -> str | None:
    return "secret" if username == "alice" else None


def digest(data: bytes) -> None:
    """parse_auth_params, and DigestServer.verify, on one Authorization header value."""
    value = data.decode("utf-8", errors="replace")
    try:
        parse_auth_params(value)
    except RemoteProtocolError:
        pass
    server = DigestServer("example.com", b"0123456789abcdef")
    try:
        server.verify("INVITE", value, now=1.0, lookup_password=_lookup_password)
    except RemoteProtocolError:
        pass


def dtmf_info(data: bytes) -> None:
    """parse_dtmf_info on an INFO body; the first line is the Content-Type."""
    head, _, body = data.partition(b"\n")
    content_type = head.decode("latin-1")
    try:
        digit, duration = parse_dtmf_info(content_type, body)
    except DtmfInfoError:
        return
    assert digit in "0123456789*#ABCD" and len(digit) == 1 and duration > 0


TARGETS: dict[str, Target] = {
    "sip": sip,
    "sip_amplified": sip_amplified,
    "stream": stream,
    "sdp": sdp,
    "rtp": rtp,
    "rtcp": rtcp_compound,
    "digest": digest,
    "dtmf_info": dtmf_info,
}


def _sip_files() -> list[Path]:
    return [
        p
        for folder in ("rfc4475", "rfc5118", "captured")
        for p in sorted((SHARED_SIP / folder).glob("*.dat"))
    ]


def _bodies(message: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        _head, found, body = message.partition(sep)
        if found:
            return body
    return b""


def seeds(target: str) -> list[bytes]:
    """Seed inputs: the RFC 4475 / RFC 5118 torture messages and captured messages, cut to what each
    parser reads (a body for SDP, a header value for digest, ...)."""
    messages = [p.read_bytes() for p in _sip_files()]
    match target:
        case "sip":
            return messages
        case "sip_amplified":
            return [
                b"\x00\x10X-Pad: " + b"a" * 40 + b"\r\n",
                b"\x01\x00Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n",
            ]
        case "stream":
            out = []
            for m in messages:
                length = len(_bodies(m))
                if b"Content-Length" not in m and b"\nl:" not in m:
                    head, _, _ = m.partition(b"\r\n\r\n")
                    m = head + b"\r\nContent-Length: 0\r\n\r\n"
                    length = 0
                out.append(bytes([length % 64]) + m + b"\r\n\r\n" + m)
            return out
        case "sdp":
            return [b for b in (_bodies(m) for m in messages) if b.startswith(b"v=")]
        case "rtp":
            return [
                RtpPacket(
                    payload_type=0, sequence_number=1, timestamp=160, ssrc=0x1234, payload=b"\xff" * 160
                ).serialize(),
                RtpPacket(
                    payload_type=101,
                    sequence_number=65535,
                    timestamp=1,
                    ssrc=7,
                    marker=True,
                    csrc=(1, 2),
                    extension_profile=0xBEDE,
                    extension_data=b"\x10\xaa\x00\x00",
                    padding_size=4,
                    payload=b"\x05\x0a\x00\xa0",
                ).serialize(),
            ]
        case "rtcp":
            block = rtcp.ReportBlock(
                ssrc=2, fraction_lost=3, cumulative_lost=-1, highest_sequence=70000, jitter=5, lsr=6, dlsr=7
            )
            return [
                rtcp.serialize_compound(
                    [
                        rtcp.RtcpSenderReport(
                            ssrc=1,
                            ntp_timestamp=2,
                            rtp_timestamp=3,
                            packet_count=4,
                            octet_count=5,
                            reports=(block,),
                        ),
                        rtcp.RtcpSourceDescription(
                            chunks=(rtcp.SdesChunk(ssrc=1, items=((1, b"alice@example.com"),)),)
                        ),
                        rtcp.RtcpBye(sources=(1,), reason="bye"),
                    ]
                ),
                rtcp.serialize_compound([rtcp.RtcpReceiverReport(ssrc=9, reports=(block, block))]),
            ]
        case "digest":
            server = DigestServer("example.com", b"0123456789abcdef")
            return [v.encode() for v in server.challenge(1.0)] + [
                b'Digest username="alice", realm="example.com", nonce="abc", uri="sip:bob@example.com", '
                b'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, qop=auth, nc=00000001, cnonce="0a4f113b"',
                b"Basic dXNlcjpwYXNz",
            ]
        case "dtmf_info":
            return [
                b"application/dtmf-relay\nSignal=5\r\nDuration=160\r\n",
                b"application/dtmf\n#",
                b"application/dtmf-relay; charset=x\nsignal= 11\nduration=0\n",
            ]
        case _:
            raise KeyError(target)
