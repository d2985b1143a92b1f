"""RFC 4475 / RFC 5118 torture messages sent over UDP to a running gateway.

Each message gets the outcome ../shared/data/sip/*/expected_outcomes.csv gives it, as a UAS that routes
only its configured numbers (so a well-formed INVITE to sip:user@... is answered 404, a REGISTER 405 because the
gateway is no registrar) — and the gateway keeps serving afterwards.
"""

from __future__ import annotations

import csv
import re
import socket
import time
from pathlib import Path

import pytest

from tests.integration.harness import SHARED_SIP, GatewayProcess

DROP = None  # the message must get no answer at all (responses are never answered)

# file -> the statuses the CSV allows for our element (a UAS that is not a proxy or registrar).
EXPECTED: dict[str, set[int] | None] = {
    # RFC 4475 §3.1.1: valid messages are processed normally
    "wsinv.dat": {481},  # its To carries a tag: a request inside a dialog we do not know
    "intmeth.dat": {501},
    "esc01.dat": {404},
    "escnull.dat": {405},
    "esc02.dat": {501},
    "lwsdisp.dat": {200},
    "longreq.dat": {404},
    "dblreq.dat": {405},
    "semiuri.dat": {200},
    "transports.dat": {200},
    "mpart01.dat": {405},
    "unreason.dat": DROP,
    "noreason.dat": DROP,
    # §3.1.2: invalid messages
    "badinv01.dat": {400},
    "clerr.dat": {400},
    "ncl.dat": {400},
    "scalar02.dat": {400},
    "scalarlg.dat": DROP,
    "quotbal.dat": {400, 404},
    "ltgtruri.dat": {400},
    "lwsruri.dat": {400},
    "lwsstart.dat": {400, 404},
    "trws.dat": {400, 200},
    "escruri.dat": {400, 404},
    "baddate.dat": {400, 404},
    "regbadct.dat": {400, 405},
    "badaspec.dat": {400},
    "baddn.dat": {400, 200},
    "badvers.dat": {505},
    "mismatch01.dat": {400},
    "mismatch02.dat": {400, 501},
    "bigcode.dat": DROP,
    # §3.2 / §3.3: transaction and application semantics
    "badbranch.dat": {200, 400},
    "insuf.dat": {400, -1},
    "unkscm.dat": {416},
    "novelsc.dat": {416},
    "unksm2.dat": {405, 400},
    "bext01.dat": {420},
    "invut.dat": {415},
    "regaut01.dat": {405},
    "multi01.dat": {400},
    "mcl01.dat": {400},
    "bcast.dat": DROP,
    "zeromf.dat": {200},
    "cparam01.dat": {405},
    "cparam02.dat": {405},
    "regescrt.dat": {405},
    "sdp01.dat": {406, 400},
    "inv2543.dat": {404},
    # RFC 5118
    "rfc5118/ipv6-good.dat": {405},
    "rfc5118/ipv6-bad.dat": {400},
    "rfc5118/port-ambiguous.dat": {405},
    "rfc5118/port-unambiguous.dat": {405},
    "rfc5118/via-received-param-with-delim.dat": {481},
    "rfc5118/via-received-param-no-delim.dat": {200},
    "rfc5118/ipv6-in-sdp.dat": {404},
    "rfc5118/mult-ip-in-header.dat": {481},
    "rfc5118/mult-ip-in-sdp.dat": {404},
    "rfc5118/ipv4-mapped-ipv6.dat": {404},
    "rfc5118/ipv6-bug-abnf-3-colons.dat": {200},
    "rfc5118/ipv6-correct-abnf-2-colons.dat": {200},
}
# -1 in a set: "no answer" is also acceptable (insuf.dat lacks the headers a response must copy).
NO_ANSWER = -1


def _csv_files() -> list[str]:
    files = []
    for name in ("rfc4475", "rfc5118"):
        with (SHARED_SIP / name / "expected_outcomes.csv").open() as fh:
            files += [row["file"] for row in csv.DictReader(fh)]
    return files


def test_every_csv_message_has_an_expectation() -> None:
    assert sorted(_csv_files()) == sorted(EXPECTED)


def _path(name: str) -> Path:
    return SHARED_SIP / name if "/" in name else SHARED_SIP / "rfc4475" / name


def _exchange(sock: socket.socket, addr: tuple[str, int], data: bytes, wait: float) -> list[int]:
    """Send one datagram; collect status codes until a final response or ``wait`` seconds pass."""
    sock.sendto(data, addr)
    codes: list[int] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            reply, _ = sock.recvfrom(65535)
        except TimeoutError:
            break
        first = reply.split(b"\r\n", 1)[0].split(b" ")
        if first[0] == b"SIP/2.0" and len(first) > 1 and first[1].isdigit():
            codes.append(int(first[1]))
            if int(first[1]) >= 200:
                break
    return codes


def test_torture_messages_get_expected_outcomes(gateway: GatewayProcess) -> None:
    failures = []
    for index, (name, allowed) in enumerate(EXPECTED.items()):
        # One socket per message: retransmitted answers to an earlier message (an un-ACKed 404) must not be
        # mistaken for the answer to this one.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            # Several torture messages reuse one branch (z9hG4bKkdjuw...): to the gateway a later one is a
            # retransmission of a transaction still alive (§17.2.3). Make each branch unique; the bare
            # "z9hG4bK" of badbranch.dat and the branch-less RFC 2543 messages stay as they are.
            data = re.sub(rb"(branch=z9hG4bK)(?=[\w.!%*+`'~-])", rb"\g<1>t%d" % index, _path(name).read_bytes())
            codes = _exchange(sock, gateway.sip_addr, data, wait=0.4 if allowed is DROP else 2.0)
            finals = [c for c in codes if c >= 200]
            if allowed is DROP:
                if codes:
                    failures.append(f"{name}: expected no answer, got {codes}")
            elif not finals:
                if NO_ANSWER not in allowed:
                    failures.append(f"{name}: expected one of {sorted(allowed)}, got no final answer")
            elif finals[0] not in allowed:
                failures.append(f"{name}: expected one of {sorted(allowed)}, got {finals[0]}")
    # The gateway keeps serving: a plain OPTIONS still gets 200 and the process is alive.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        options = (
            b"OPTIONS sip:service@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKalive;rport\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:service@127.0.0.1>\r\n"
            b"Call-ID: alive@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        assert _exchange(sock, gateway.sip_addr, options, wait=2.0)[-1:] == [200]
    assert gateway.proc.poll() is None
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", ["bext01.dat", "invut.dat", "intmeth.dat"])
def test_rejections_carry_the_headers_the_rfc_demands(gateway: GatewayProcess, name: str) -> None:
    header = {
        "bext01.dat": b"\r\nUnsupported: ",
        "invut.dat": b"\r\nAccept: application/sdp",
        "intmeth.dat": b"\r\nAllow: ",
    }[name]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2.0)
        sock.sendto(_path(name).read_bytes(), gateway.sip_addr)
        reply = b""
        while not reply.startswith(b"SIP/2.0 4") and not reply.startswith(b"SIP/2.0 5"):
            reply, _ = sock.recvfrom(65535)
    assert header in reply, reply.decode(errors="replace")
