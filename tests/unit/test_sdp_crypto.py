"""SDES a=crypto (RFC 4568) parse/emit and SRTP-aware offer/answer under the off/allow/require policies."""

from __future__ import annotations

import base64

import pytest

from gateway.sdp import CodecSpec, LocalSession, NoCommonCodec, SdpError, parse_sdp, serialize_sdp
from gateway.sdp.crypto import (
    SUITE_32,
    SUITE_80,
    CryptoAttribute,
    CryptoError,
    SrtpPolicy,
    parse_crypto,
    redact_crypto_keys,
)
from gateway.sdp.secure import secure_answer, secure_offer, secure_process_answer

CAPS = (CodecSpec("PCMU", 8000, 0), CodecSpec("telephone-event", 8000, None, fmtp="0-16"))
PEER_KEY = bytes(range(30))
OUR_KEY = bytes(range(100, 130))
PEER_INLINE = base64.b64encode(PEER_KEY).decode()


def offer(proto: str, crypto: str = f"1 AES_CM_128_HMAC_SHA1_80 inline:{PEER_INLINE}") -> str:
    lines = [
        "v=0", "o=peer 1 1 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0",
        f"m=audio 40000 {proto} 0 101", "a=rtpmap:101 telephone-event/8000",
    ]
    if crypto:
        lines.append(f"a=crypto:{crypto}")
    return "\r\n".join(lines) + "\r\n"


def do_answer(text: str, policy: SrtpPolicy) -> tuple[str, object]:
    description, negotiated = secure_answer(
        parse_sdp(text), CAPS, policy=policy, local_key=OUR_KEY, local_host="203.0.113.5", local_port=30000,
        session=LocalSession(session_id=7, address="203.0.113.5"),
    )
    return serialize_sdp(description).decode(), negotiated


# -- a=crypto lines ---------------------------------------------------------------------------------


def test_rfc4568_example_with_mki_is_refused_clearly() -> None:
    # RFC 4568 §4's example line carries an MKI (|1:32): we key each stream with one master key.
    with pytest.raises(CryptoError, match="MKI is not supported"):
        parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32")


def test_parse_without_mki_and_emit_round_trip() -> None:
    crypto = parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20")
    assert (crypto.tag, crypto.suite, crypto.lifetime, len(crypto.key_salt)) == (1, SUITE_80, "2^20", 30)
    line = crypto.to_attribute().value
    assert line == "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20"
    assert parse_crypto(line or "") == crypto


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|1:4", "MKI"),
        ("1 AES_CM_128_HMAC_SHA1_80", "needs a tag"),
        ("x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR", "tag"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:!!notbase64!!", "base64"),
        ("1 AES_CM_128_HMAC_SHA1_32 inline:AAAA", "not 30"),
        ("1 AES_CM_128_HMAC_SHA1_80 uri:https://example.com/key", "inline"),
    ],
)
def test_unusable_lines_raise_crypto_error_with_reason(value: str, reason: str) -> None:
    with pytest.raises(CryptoError, match=reason) as caught:
        parse_crypto(value)
    assert caught.value.status_code == 488


def test_key_never_in_repr_and_redacted_from_traces() -> None:
    crypto = CryptoAttribute(tag=1, suite=SUITE_80, key_salt=PEER_KEY)
    assert PEER_INLINE not in repr(crypto)
    text = offer("RTP/SAVP")
    redacted = redact_crypto_keys(text)
    assert PEER_INLINE not in redacted and "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:<redacted>" in redacted


# -- answering: the policy matrix -------------------------------------------------------------------


@pytest.mark.parametrize("policy", [SrtpPolicy.ALLOW, SrtpPolicy.REQUIRE])
def test_savp_offer_gets_savp_answer_with_our_own_key(policy: SrtpPolicy) -> None:
    text, negotiated = do_answer(offer("RTP/SAVP"), policy)
    assert "m=audio 30000 RTP/SAVP 0 101" in text
    ours = parse_crypto(text.split("a=crypto:")[1].split("\r\n")[0])
    assert (ours.tag, ours.suite, ours.key_salt) == (1, SUITE_80, OUR_KEY)
    keying = negotiated.srtp  # type: ignore[attr-defined]
    assert (keying.suite, keying.local_key, keying.remote_key) == (SUITE_80, OUR_KEY, PEER_KEY)


def test_answer_picks_first_supported_suite_of_the_offerer() -> None:
    text = offer("RTP/SAVP", f"1 AES_256_CM_HMAC_SHA1_80 inline:{PEER_INLINE}{PEER_INLINE}") + (
        f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{PEER_INLINE}\r\n"
    )
    answer_text, negotiated = do_answer(text, SrtpPolicy.REQUIRE)
    assert "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:" in answer_text
    assert negotiated.srtp.suite == SUITE_32  # type: ignore[attr-defined]


@pytest.mark.parametrize("policy", [SrtpPolicy.OFF, SrtpPolicy.ALLOW])
def test_avp_offer_gets_plain_answer(policy: SrtpPolicy) -> None:
    text, negotiated = do_answer(offer("RTP/AVP", ""), policy)
    assert "RTP/AVP" in text and "a=crypto" not in text
    assert negotiated.srtp is None  # type: ignore[attr-defined]


def test_require_refuses_avp_offer_with_488() -> None:
    with pytest.raises(NoCommonCodec, match="SRTP is required") as caught:
        do_answer(offer("RTP/AVP", ""), SrtpPolicy.REQUIRE)
    assert (caught.value.status_code, caught.value.warning_code) == (488, 302)


def test_off_refuses_savp_only_offer() -> None:
    with pytest.raises(NoCommonCodec, match="SRTP is off") as caught:
        do_answer(offer("RTP/SAVP"), SrtpPolicy.OFF)
    assert caught.value.status_code == 488


def test_require_refuses_savp_without_supported_suite() -> None:
    with pytest.raises(SdpError, match="no offered a=crypto suite"):
        do_answer(offer("RTP/SAVP", f"1 F8_128_HMAC_SHA1_80 inline:{PEER_INLINE}"), SrtpPolicy.REQUIRE)


def test_allow_falls_back_to_plain_stream_of_the_same_offer() -> None:
    # An offer with SAVP (unusable suite) and an AVP alternative: allow answers the AVP stream.
    text = offer("RTP/SAVP", f"1 F8_128_HMAC_SHA1_80 inline:{PEER_INLINE}") + "m=audio 40002 RTP/AVP 0\r\n"
    answer_text, negotiated = do_answer(text, SrtpPolicy.ALLOW)
    assert "m=audio 0 RTP/SAVP" in answer_text and "m=audio 30000 RTP/AVP 0" in answer_text
    assert negotiated.srtp is None  # type: ignore[attr-defined]


# -- offering ---------------------------------------------------------------------------------------


def make_offer(policy: SrtpPolicy) -> str:
    description = secure_offer(
        CAPS, policy=policy, keys=(OUR_KEY, bytes(30)), local_host="203.0.113.5", local_port=30000,
        session=LocalSession(session_id=7, address="203.0.113.5"),
    )
    return serialize_sdp(description).decode()


def test_offer_off_is_plain() -> None:
    text = make_offer(SrtpPolicy.OFF)
    assert "RTP/AVP" in text and "crypto" not in text


@pytest.mark.parametrize("policy", [SrtpPolicy.ALLOW, SrtpPolicy.REQUIRE])
def test_offer_is_savp_with_both_suites(policy: SrtpPolicy) -> None:
    text = make_offer(policy)
    assert "m=audio 30000 RTP/SAVP 0 101" in text
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in text and "a=crypto:2 AES_CM_128_HMAC_SHA1_32" in text


def peer_answer(proto: str, crypto: str) -> str:
    return offer(proto, crypto).replace("o=peer 1 1", "o=peer 2 1")


@pytest.mark.parametrize("policy", [SrtpPolicy.ALLOW, SrtpPolicy.REQUIRE])
def test_answer_to_our_offer_yields_both_keys(policy: SrtpPolicy) -> None:
    ours = parse_sdp(make_offer(policy))
    negotiated = secure_process_answer(
        ours, parse_sdp(peer_answer("RTP/SAVP", f"2 AES_CM_128_HMAC_SHA1_32 inline:{PEER_INLINE}")), policy=policy
    )
    assert negotiated.srtp is not None
    assert (negotiated.srtp.suite, negotiated.srtp.local_key, negotiated.srtp.remote_key) == (
        SUITE_32, bytes(30), PEER_KEY
    )


def test_answer_with_unknown_tag_is_refused() -> None:
    ours = parse_sdp(make_offer(SrtpPolicy.REQUIRE))
    with pytest.raises(CryptoError, match="matches none"):
        secure_process_answer(
            ours, parse_sdp(peer_answer("RTP/SAVP", f"9 AES_CM_128_HMAC_SHA1_80 inline:{PEER_INLINE}")),
            policy=SrtpPolicy.REQUIRE,
        )


def test_plain_answer_to_savp_offer_accepted_by_allow_refused_by_require() -> None:
    ours = parse_sdp(make_offer(SrtpPolicy.ALLOW))
    plain = parse_sdp(peer_answer("RTP/AVP", ""))
    assert secure_process_answer(ours, plain, policy=SrtpPolicy.ALLOW).srtp is None
    with pytest.raises(NoCommonCodec, match="SRTP is required"):
        secure_process_answer(ours, plain, policy=SrtpPolicy.REQUIRE)
