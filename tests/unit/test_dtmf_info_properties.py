"""Property tests of the SIP INFO DTMF body parser (application/dtmf-relay, application/dtmf; hypothesis).

Any body gives a digit and a bounded duration or raises DtmfInfoError, nothing else.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.util.dtmf_info import DtmfInfoError, parse_dtmf_info

CONTENT_TYPES = [
    "application/dtmf-relay",
    "application/dtmf",
    "Application/DTMF-Relay; charset=x",
    "text/plain",
    "",
]
BODIES = [
    b"Signal=5\r\nDuration=160\r\n",
    b"signal= 11\nduration=0\n",
    b"#",
    b"Signal=A\r\nDuration=60000\r\n",
]


def _parse_or_reject(content_type: str, body: bytes) -> None:
    try:
        digit, duration = parse_dtmf_info(content_type, body)
    except DtmfInfoError as err:
        assert err.reason in {
            "unsupported_content_type",
            "bad_encoding",
            "empty_body",
            "missing_signal",
            "bad_signal",
            "bad_duration",
        }
        return
    assert len(digit) == 1 and digit in "0123456789*#ABCD"
    assert 0 < duration <= 60_000


@settings(max_examples=300)
@given(st.sampled_from(CONTENT_TYPES), st.binary(max_size=200))
def test_arbitrary_bodies_give_a_digit_or_dtmf_info_error(content_type: str, body: bytes) -> None:
    _parse_or_reject(content_type, body)


@settings(max_examples=300)
@given(
    st.sampled_from(CONTENT_TYPES),
    st.sampled_from(BODIES),
    st.integers(0, 100),
    st.sampled_from([b"=", b"\n", b"9", b"\xff", b" ", b"Duration=", b"9" * 5000]),
    st.integers(1, 50),
)
def test_mutated_bodies_give_a_digit_or_dtmf_info_error(
    content_type: str, body: bytes, pos: int, chunk: bytes, times: int
) -> None:
    i = pos % (len(body) + 1)
    _parse_or_reject(content_type, body[:i] + chunk * times + body[i:])


def test_a_duration_of_thousands_of_digits_is_a_bad_duration() -> None:
    # int() refuses strings of more than 4300 digits with a bare ValueError: the parser must say why.
    try:
        parse_dtmf_info("application/dtmf-relay", b"Signal=5\r\nDuration=" + b"9" * 5000 + b"\r\n")
    except DtmfInfoError as err:
        assert err.reason == "bad_duration"
    else:
        raise AssertionError("accepted")
