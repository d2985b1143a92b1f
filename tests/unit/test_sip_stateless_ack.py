"""§17: an ACK never generates a response — not even a stateless 400 to a malformed one."""

from __future__ import annotations

import pytest

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.message import make_response_from_error
from gateway.sip.parser import parse_message

BROKEN = (
    "{method} sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKx\r\n"
    "From: <sip:b@127.0.0.1>;tag=1\r\nTo: <sip:a@127.0.0.1>;tag=2\r\nCall-ID: x@y\r\nCSeq: 1 {method}\r\n"
    "Max-Forwards: 70\r\nContent-Length: 40\r\n\r\n"  # longer than the body: a framing error
)


@pytest.mark.parametrize(("method", "answered"), [("ACK", False), ("BYE", True)])
def test_malformed_ack_gets_no_stateless_answer(method: str, answered: bool) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_message(BROKEN.format(method=method).encode())
    response = make_response_from_error(info.value)
    assert (response is not None) is answered
    if response is not None:
        assert response.status_code == 400
