"""Digest authentication: RFC 2617 / RFC 7616 vectors, client <-> server round trips, refusals."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip.auth import (
    AuthResult,
    DigestClient,
    DigestServer,
    compute_ha1,
    parse_auth_params,
)
from gateway.sip.errors import LocalProtocolError, RemoteProtocolError

REPO = Path(__file__).resolve().parents[2]
RFC4475 = REPO / ".." / "shared" / "data" / "sip" / "rfc4475"

PASSWORDS = {"alice": "wonderland", "Mufasa": "Circle of Life"}
SECRET = b"0123456789abcdef0123456789abcdef"


def lookup(username: str, realm: str) -> str | None:
    return PASSWORDS.get(username)


def cnonces() -> Callable[[], str]:
    counter: Iterator[int] = count(1)
    return lambda: f"cn{next(counter):04d}"


def params_of(header_value: str) -> dict[str, str]:
    return parse_auth_params(header_value)[1]


# ----------------------------------------------------------------------------- parsing


def test_parse_unescapes_quoted_strings_and_lowercases_names() -> None:
    scheme, params = parse_auth_params(
        'Digest Realm="a \\"quoted\\" realm", nonce="x,y", algorithm=SHA-256 ,qop="auth, auth-int"'
    )
    assert scheme == "Digest"
    assert params == {"realm": 'a "quoted" realm', "nonce": "x,y", "algorithm": "SHA-256", "qop": "auth, auth-int"}


def test_parse_unknown_scheme_from_rfc4475_regaut01() -> None:
    text = (RFC4475 / "regaut01.dat").read_text()
    value = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Authorization:"))
    assert parse_auth_params(value) == ("NoOneKnowsThisScheme", {"opaque-data": "here"})


def test_parse_token68_credentials() -> None:
    assert parse_auth_params("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==") == ("Basic", {"": "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="})


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   ",
        'Digest realm="unterminated',
        "Digest realm=,",
        "Digest realm=a b",
        'Digest realm="a" nonce="b"',
        'Digest realm="a", realm="b"',
        "Digest =x",
        "Dig\x00est realm=a",
    ],
)
def test_parse_garbage_is_a_remote_error(garbage: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_auth_params(garbage)
    assert info.value.status_code == 400


def test_parse_status_code_can_be_chosen() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_auth_params('Digest realm="x', status_code=401)
    assert info.value.status_code == 401


# ----------------------------------------------------------------------------- RFC vectors


def test_rfc2617_section_3_5_md5_example() -> None:
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    # RFC 2617 spells the password with a capital O (RFC 7616 does not)
    client = DigestClient("Mufasa", "Circle Of Life", cnonce_factory=lambda: "0a4f113b")
    name, value = client.authorization("GET", "/dir/index.html", [challenge])
    assert name == "Authorization"
    params = params_of(value)
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert params["nc"] == "00000001"
    assert params["qop"] == "auth"
    assert params["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert params["uri"] == "/dir/index.html"


RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


def rfc7616_challenge(algorithm: str) -> str:
    return (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm: str, expected: str) -> None:
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    _, value = client.authorization("GET", "/dir/index.html", [rfc7616_challenge(algorithm)])
    params = params_of(value)
    assert params["response"] == expected
    assert params["algorithm"] == algorithm


@pytest.mark.parametrize("order", [("SHA-256", "MD5"), ("MD5", "SHA-256")])
def test_client_picks_sha256_whatever_the_order(order: tuple[str, str]) -> None:
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    _, value = client.authorization("GET", "/dir/index.html", [rfc7616_challenge(a) for a in order])
    assert params_of(value)["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_client_skips_unusable_challenges() -> None:
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC7616_CNONCE)
    challenges = [
        'Digest realm="x", nonce="n", algorithm=SHA-512-256',
        "NoOneKnowsThisScheme opaque-data=here",
        'Digest realm="broken',
        rfc7616_challenge("MD5"),
    ]
    _, value = client.authorization("GET", "/dir/index.html", challenges)
    assert params_of(value)["response"] == "8ca523f5e9506fed4657c9700eebdbec"


def test_client_without_usable_challenge_is_a_local_error() -> None:
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    with pytest.raises(LocalProtocolError):
        client.authorization("INVITE", "sip:bob@example.com", ['Basic realm="x"', 'Digest realm="x", nonce="n", algorithm=SHA-512-256'])
    with pytest.raises(LocalProtocolError):
        client.authorization("INVITE", "sip:bob@example.com", [])


def test_client_refuses_username_that_cannot_be_quoted() -> None:
    with pytest.raises(LocalProtocolError):
        DigestClient("ali\r\nce", "pw", cnonce_factory=cnonces())


def test_client_proxy_header_name() -> None:
    server = DigestServer("example.com", SECRET)
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    name, _ = client.authorization("INVITE", "sip:bob@example.com", server.challenge(0.0), proxy=True)
    assert name == "Proxy-Authorization"


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5", "SHA-256-sess", "MD5-sess"])
def test_round_trip_for_each_algorithm(algorithm: str) -> None:
    server = DigestServer("example.com", SECRET, algorithms=(algorithm,))
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    challenges = server.challenge(10.0)
    assert len(challenges) == 1
    assert params_of(challenges[0])["algorithm"] == algorithm
    _, value = client.authorization("INVITE", "sip:bob@example.com", challenges)
    assert params_of(value)["algorithm"] == algorithm
    result = server.verify("INVITE", value, lookup_password=lookup, now=11.0)
    assert result == AuthResult(ok=True, username="alice", stale=False, reason="ok")


def test_default_server_offers_sha256_first_and_client_uses_it() -> None:
    server = DigestServer("example.com", SECRET)
    challenges = server.challenge(0.0)
    assert [params_of(c)["algorithm"] for c in challenges] == ["SHA-256", "MD5"]
    assert params_of(challenges[0])["nonce"] == params_of(challenges[1])["nonce"]
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    _, value = client.authorization("REGISTER", "sip:example.com", challenges)
    assert params_of(value)["algorithm"] == "SHA-256"
    assert server.verify("REGISTER", value, lookup_password=lookup, now=1.0).ok


def test_md5_only_client_view_still_works_against_default_server() -> None:
    server = DigestServer("example.com", SECRET)
    md5_challenge = [c for c in server.challenge(0.0) if "MD5" in c]
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    _, value = client.authorization("REGISTER", "sip:example.com", md5_challenge)
    assert server.verify("REGISTER", value, lookup_password=lookup, now=1.0).ok


@pytest.mark.parametrize("hash_name", ["SHA-256", "MD5"])
def test_verify_with_stored_ha1(hash_name: str) -> None:
    server = DigestServer("example.com", SECRET, algorithms=(hash_name, f"{hash_name}-sess"))
    asked: list[tuple[str, str, str]] = []

    def lookup_ha1(username: str, realm: str, algorithm: str) -> str | None:
        asked.append((username, realm, algorithm))
        return compute_ha1(algorithm, username, realm, "wonderland") if username == "alice" else None

    for algorithm in server.algorithms:
        client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
        challenge = [c for c in server.challenge(0.0) if f"algorithm={algorithm}," in c]
        _, value = client.authorization("INVITE", "sip:bob@example.com", challenge)
        assert server.verify("INVITE", value, lookup_ha1=lookup_ha1, now=1.0).ok
    assert asked == [("alice", "example.com", hash_name)] * 2


def test_username_with_quotes_round_trips() -> None:
    server = DigestServer("example.com", SECRET)
    client = DigestClient('al"ice\\', "pw", cnonce_factory=cnonces())
    _, value = client.authorization("INVITE", "sip:bob@example.com", server.challenge(0.0))
    result = server.verify("INVITE", value, lookup_password=lambda u, r: "pw" if u == 'al"ice\\' else None, now=0.0)
    assert result.ok
    assert result.username == 'al"ice\\'


# ----------------------------------------------------------------------------- refusals


def test_wrong_password_is_refused_without_stale() -> None:
    server = DigestServer("example.com", SECRET)
    client = DigestClient("alice", "not-the-password", cnonce_factory=cnonces())
    _, value = client.authorization("INVITE", "sip:bob@example.com", server.challenge(0.0))
    result = server.verify("INVITE", value, lookup_password=lookup, now=1.0)
    assert not result.ok
    assert not result.stale
    assert result.username == "alice"


def test_unknown_user_is_refused() -> None:
    server = DigestServer("example.com", SECRET)
    client = DigestClient("mallory", "x", cnonce_factory=cnonces())
    _, value = client.authorization("INVITE", "sip:bob@example.com", server.challenge(0.0))
    assert not server.verify("INVITE", value, lookup_password=lookup, now=1.0).ok


def test_method_is_covered_by_the_digest() -> None:
    server = DigestServer("example.com", SECRET)
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    _, value = client.authorization("INVITE", "sip:bob@example.com", server.challenge(0.0))
    assert not server.verify("BYE", value, lookup_password=lookup, now=1.0).ok


def test_expired_nonce_gets_stale_and_retry_succeeds() -> None:
    server = DigestServer("example.com", SECRET, nonce_ttl=300.0)
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    _, value = client.authorization("INVITE", "sip:bob@example.com", server.challenge(1000.0))
    assert server.verify("INVITE", value, lookup_password=lookup, now=1300.0).ok
    _, value = client.authorization("INVITE", "sip:bob@example.com", server.challenge(1000.0))
    result = server.verify("INVITE", value, lookup_password=lookup, now=1300.5)
    assert (result.ok, result.stale, result.reason) == (False, True, "nonce expired")

    fresh = server.challenge(1300.5, stale=True)
    assert all(params_of(c)["stale"] == "true" for c in fresh)
    _, value = client.authorization("INVITE", "sip:bob@example.com", fresh)
    assert server.verify("INVITE", value, lookup_password=lookup, now=1301.0).ok


def test_expired_nonce_with_wrong_password_is_not_stale() -> None:
    server = DigestServer("example.com", SECRET, nonce_ttl=300.0)
    client = DigestClient("alice", "bad", cnonce_factory=cnonces())
    _, value = client.authorization("INVITE", "sip:bob@example.com", server.challenge(0.0))
    result = server.verify("INVITE", value, lookup_password=lookup, now=1000.0)
    assert (result.ok, result.stale) == (False, False)


def test_nonce_from_another_secret_is_refused() -> None:
    other = DigestServer("example.com", b"another secret")
    server = DigestServer("example.com", SECRET)
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    _, value = client.authorization("INVITE", "sip:bob@example.com", other.challenge(0.0))
    result = server.verify("INVITE", value, lookup_password=lookup, now=0.0)
    assert (result.ok, result.stale, result.reason) == (False, True, "unknown nonce")


def test_replayed_nonce_count_is_refused() -> None:
    server = DigestServer("example.com", SECRET)
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    challenges = server.challenge(0.0)
    _, first = client.authorization("INVITE", "sip:bob@example.com", challenges)
    assert server.verify("INVITE", first, lookup_password=lookup, now=1.0).ok
    replay = server.verify("INVITE", first, lookup_password=lookup, now=2.0)
    assert not replay.ok
    assert replay.reason == "nonce count replayed"

    # the legitimate client reusing the nonce counts on: nc=00000002 is accepted
    _, second = client.authorization("INVITE", "sip:bob@example.com", challenges)
    assert params_of(second)["nc"] == "00000002"
    assert server.verify("INVITE", second, lookup_password=lookup, now=3.0).ok


def test_nonce_counts_may_arrive_out_of_order_but_only_once() -> None:
    server = DigestServer("example.com", SECRET)
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    challenges = server.challenge(0.0)
    values = [client.authorization("BYE", "sip:bob@example.com", challenges)[1] for _ in range(3)]
    assert [params_of(v)["nc"] for v in values] == ["00000001", "00000002", "00000003"]
    verdicts = [server.verify("BYE", values[i], lookup_password=lookup, now=1.0).ok for i in (2, 0, 1, 0, 2)]
    assert verdicts == [True, True, True, False, False]


def test_replay_tracking_is_bounded_and_forgotten_nonces_are_not_replayable() -> None:
    server = DigestServer("example.com", SECRET, max_nonces=2)
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    first_challenge = server.challenge(0.0)
    _, first = client.authorization("BYE", "sip:a@b", first_challenge)
    assert server.verify("BYE", first, lookup_password=lookup, now=0.0).ok
    for _ in range(3):  # push the first nonce out of the table
        _, value = client.authorization("BYE", "sip:a@b", server.challenge(0.0))
        assert server.verify("BYE", value, lookup_password=lookup, now=0.0).ok
    assert len(server._seen) <= 2
    replay = server.verify("BYE", first, lookup_password=lookup, now=1.0)
    assert (replay.ok, replay.stale) == (False, True)


def test_expired_entries_are_dropped_before_live_ones() -> None:
    server = DigestServer("example.com", SECRET, max_nonces=2, nonce_ttl=10.0)
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    _, old = client.authorization("BYE", "sip:a@b", server.challenge(0.0))
    assert server.verify("BYE", old, lookup_password=lookup, now=0.0).ok
    live = server.challenge(20.0)
    _, value = client.authorization("BYE", "sip:a@b", live)
    assert server.verify("BYE", value, lookup_password=lookup, now=20.0).ok
    _, other = client.authorization("BYE", "sip:a@b", server.challenge(20.0))
    assert server.verify("BYE", other, lookup_password=lookup, now=21.0).ok
    # the expired entry made room; the live nonce is still tracked and still usable
    _, again = client.authorization("BYE", "sip:a@b", live)
    assert server.verify("BYE", again, lookup_password=lookup, now=22.0).ok


def test_realm_mismatch_is_refused() -> None:
    server = DigestServer("example.com", SECRET)
    elsewhere = DigestServer("example.org", SECRET)
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    _, value = client.authorization("INVITE", "sip:bob@example.com", elsewhere.challenge(0.0))
    result = server.verify("INVITE", value, lookup_password=lookup, now=1.0)
    assert (result.ok, result.reason) == (False, "realm mismatch")


def test_algorithm_not_offered_is_refused() -> None:
    server = DigestServer("example.com", SECRET, algorithms=("SHA-256",))
    md5 = DigestServer("example.com", SECRET, algorithms=("MD5",))
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    _, value = client.authorization("INVITE", "sip:bob@example.com", md5.challenge(0.0))
    assert server.verify("INVITE", value, lookup_password=lookup, now=1.0).reason == "algorithm not offered"


def test_unknown_scheme_from_rfc4475_regaut01_is_a_failed_result_not_an_error() -> None:
    server = DigestServer("example.com", SECRET)
    result = server.verify("REGISTER", "NoOneKnowsThisScheme opaque-data=here", lookup_password=lookup, now=0.0)
    assert not result.ok
    assert "NoOneKnowsThisScheme" in result.reason


@pytest.mark.parametrize(
    "credentials",
    [
        'Digest realm="example.com", nonce="n", uri="sip:a@b", response="00"',  # no username
        'Digest username="a", realm="example.com", nonce="n", uri="sip:a@b", response="00", qop=auth',
        'Digest username="a", realm="example.com", nonce="n", uri="sip:a@b", response="00", qop=auth, '
        'cnonce="c", nc=1',
        'Digest username="a", realm="example.com", nonce="n", uri="sip:a@b", response="00", nc=00000001',
        "Digest username",
    ],
)
def test_malformed_digest_credentials_are_a_400(credentials: str) -> None:
    server = DigestServer("example.com", SECRET)
    with pytest.raises(RemoteProtocolError) as info:
        server.verify("INVITE", credentials, lookup_password=lookup, now=0.0)
    assert info.value.status_code == 400


def test_verify_needs_exactly_one_lookup() -> None:
    server = DigestServer("example.com", SECRET)
    with pytest.raises(LocalProtocolError):
        server.verify("INVITE", "Digest x=y", now=0.0)


def test_request_uri_check_when_asked() -> None:
    server = DigestServer("example.com", SECRET)
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    _, value = client.authorization("INVITE", "sip:bob@example.com", server.challenge(0.0))
    assert not server.verify("INVITE", value, lookup_password=lookup, now=0.0, request_uri="sip:eve@example.com").ok
    assert server.verify("INVITE", value, lookup_password=lookup, now=0.0, request_uri="sip:bob@example.com").ok


# ----------------------------------------------------------------------------- old peers, auth-int


def test_challenge_without_qop_gets_rfc2069_answer_and_nonce_is_single_use() -> None:
    server = DigestServer("example.com", SECRET, algorithms=("MD5",))
    legacy = server.challenge(0.0)[0].replace(', qop="auth"', "")
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    _, value = client.authorization("INVITE", "sip:bob@example.com", [legacy])
    params = params_of(value)
    assert "qop" not in params and "nc" not in params and "cnonce" not in params
    assert server.verify("INVITE", value, lookup_password=lookup, now=0.0).ok
    assert not server.verify("INVITE", value, lookup_password=lookup, now=0.0).ok


def test_no_qop_refused_when_disallowed() -> None:
    server = DigestServer("example.com", SECRET, algorithms=("MD5",), allow_no_qop=False)
    legacy = server.challenge(0.0)[0].replace(', qop="auth"', "")
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    _, value = client.authorization("INVITE", "sip:bob@example.com", [legacy])
    assert server.verify("INVITE", value, lookup_password=lookup, now=0.0).reason == "qop missing"


def test_auth_int_covers_the_body() -> None:
    server = DigestServer("example.com", SECRET)
    challenge = server.challenge(0.0)[0].replace('qop="auth"', 'qop="auth-int"')
    client = DigestClient("alice", "wonderland", cnonce_factory=cnonces())
    body = b"v=0\r\n"
    _, value = client.authorization("INVITE", "sip:bob@example.com", [challenge], body=body)
    assert params_of(value)["qop"] == "auth-int"
    assert not server.verify("INVITE", value, lookup_password=lookup, now=0.0, body=b"v=1\r\n").ok
    assert server.verify("INVITE", value, lookup_password=lookup, now=0.0, body=body).ok


# ----------------------------------------------------------------------------- robustness

_AUTH_ALPHABET = st.sampled_from(list('Digest realm nonce uri response username qop nc cnonce algorithm = , " \\ \t abc 0 1 x ; é'))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(_AUTH_ALPHABET, max_size=60).map("".join)))
def test_garbage_never_leaks_anything_but_remote_protocol_error(text: str) -> None:
    server = DigestServer("example.com", SECRET)
    try:
        scheme, params = parse_auth_params(text)
    except RemoteProtocolError:
        pass
    else:
        assert scheme and all(isinstance(v, str) for v in params.values())
    try:
        result = server.verify("INVITE", text, lookup_password=lookup, now=0.0)
    except RemoteProtocolError as err:
        assert err.status_code == 400
    else:
        assert not result.ok


@settings(max_examples=100, deadline=None)
@given(
    username=st.text(min_size=1, max_size=20).filter(lambda u: "\r" not in u and "\n" not in u),
    password=st.text(max_size=20),
    uri=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30),
)
def test_any_credentials_round_trip(username: str, password: str, uri: str) -> None:
    server = DigestServer("example.com", SECRET)
    client = DigestClient(username, password, cnonce_factory=cnonces())
    _, value = client.authorization("MESSAGE", uri, server.challenge(0.0))
    result = server.verify("MESSAGE", value, lookup_password=lambda u, r: password if u == username else None, now=0.0)
    assert result.ok
    assert result.username == username
