"""Property tests of the Digest header parser (RFC 7235 §2.1, RFC 7616 §3.3-3.4, hypothesis).

parse_auth_params and DigestServer.verify on arbitrary and mutated header values return a value or
raise RemoteProtocolError, nothing else; what the client formats, the parser reads back.
"""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.auth import AuthResult, DigestServer, format_auth_params, parse_auth_params
from gateway.sip.errors import RemoteProtocolError

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SERVER = DigestServer("example.com", b"0123456789abcdef")
CREDENTIALS = [
    'Digest username="alice", realm="example.com", nonce="abc", uri="sip:bob@example.com", '
    'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, qop=auth, nc=00000001, cnonce="0a4f113b"',
    'Digest username="a\\"b", realm="example.com", nonce="x", uri="sip:b@h", response="00", opaque=""',
    "Basic dXNlcjpwYXNz",
    *SERVER.challenge(1.0),
]


def _lookup(username: str, realm: str) -> str | None:
    return "secret" if username == "alice" else None


def _parse_or_reject(value: str) -> None:
    try:
        scheme, params = parse_auth_params(value)
    except RemoteProtocolError as err:
        assert err.status_code == 400 and err.reason
    else:
        assert scheme and all(name == name.lower() for name in params)
    try:
        result = SERVER.verify("INVITE", value, now=2.0, lookup_password=_lookup)
    except RemoteProtocolError as err:
        assert err.status_code == 400
    else:
        assert isinstance(result, AuthResult)


@PROPERTY
@given(st.text(max_size=300))
def test_arbitrary_text_parses_or_is_rejected(value: str) -> None:
    _parse_or_reject(value)


@PROPERTY
@given(
    st.sampled_from(CREDENTIALS),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "truncate", "repeat"]),
            st.integers(0, 10**6),
            st.sampled_from([*list('",=\\ \t;\x00é'), "qop=auth", 'nonce="', "algorithm=SHA-256", ", "]),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_mutated_credentials_parse_or_are_rejected(value: str, edits: list[tuple[str, int, str]]) -> None:
    for kind, pos, chunk in edits:
        i = pos % (len(value) + 1)
        if kind == "flip":
            value = value[:i] + chunk + value[i + 1 :]
        elif kind == "insert":
            value = value[:i] + chunk + value[i:]
        elif kind == "truncate":
            value = value[:i]
        else:
            value = value[:i] + value[i : i + 30] * 200 + value[i:]
    _parse_or_reject(value)


_NAME = st.text(alphabet=string.ascii_lowercase + "-", min_size=1, max_size=10)
_VALUE = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)


@PROPERTY
@given(st.dictionaries(_NAME, _VALUE, min_size=1, max_size=6))
def test_formatted_quoted_params_read_back(params: dict[str, str]) -> None:
    value = format_auth_params("Digest", [(name, text, True) for name, text in params.items()])
    assert parse_auth_params(value) == ("Digest", params)
