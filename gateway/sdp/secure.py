"""Offer/answer with SDES-keyed SRTP (RFC 4568 §7: offerer and answerer behaviour; RFC 3711 profile
RTP/SAVP), on top of :mod:`gateway.sdp.negotiate`, under a per-number or per-trunk :class:`SrtpPolicy`.

- ``off``: plain RTP/AVP only; an offer that is SAVP only is refused (488, Warning 302).
- ``allow``: answer SAVP to SAVP (our own fresh key, the offerer's suite) and AVP to AVP. As the
  offerer we offer RTP/SAVP only: RFC 4568 §3.1.4 describes no standard way to offer "SRTP if you can"
  on one m= line (a=crypto on RTP/AVP is a non-standard best effort), so an ``allow`` trunk gets an
  SAVP offer and a plain RTP/AVP answer is still accepted from it (some trunks answer that way).
- ``require``: SAVP or nothing; an RTP/AVP offer is refused (488), a plain answer ends the call.

Our key is one 30-byte master key || salt per call, from the caller's CSPRNG (``secrets.token_bytes``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from gateway.sdp.crypto import (
    SAVP_PROFILES,
    SUPPORTED_SUITES,
    CryptoAttribute,
    CryptoError,
    SrtpKeying,
    SrtpPolicy,
    is_usable,
    parse_crypto,
)
from gateway.sdp.model import (
    AttributeLine,
    Direction,
    MediaDescription,
    NoCommonCodec,
    SdpError,
    SessionDescription,
)
from gateway.sdp.negotiate import (
    CodecSpec,
    LocalSession,
    NegotiatedAudio,
    answer,
    create_offer,
    process_answer,
)

# RFC 3261 §20.43: "302 Incompatible transport protocol: One or more transport protocols described in
# the session description are not available."
_WARNING_TRANSPORT = (302, "Incompatible transport protocol")


def offered_crypto(media: MediaDescription) -> list[CryptoAttribute]:
    """Every ``a=crypto`` line of ``media`` in the offerer's order; a line we cannot read raises."""
    return [parse_crypto(value or "") for value in media.attribute_values("crypto")]


def _live_audio(description: SessionDescription, profiles: frozenset[str] | None = None) -> list[MediaDescription]:
    return [
        m for m in description.media
        if m.media == "audio" and m.port != 0 and (profiles is None or m.proto in profiles)
    ]


def secure_answer(
    offer: SessionDescription,
    capabilities: Sequence[CodecSpec],
    *,
    policy: SrtpPolicy,
    local_key: bytes,
    local_host: str,
    local_port: int,
    session: LocalSession,
    preferred_ptime: int = 20,
    local_direction: Direction = Direction.SENDRECV,
) -> tuple[SessionDescription, NegotiatedAudio]:
    """Answer ``offer`` (RFC 3264 §6, RFC 4568 §7.1.2) under ``policy``; ``local_key`` keys our SRTP."""

    def plain() -> tuple[SessionDescription, NegotiatedAudio]:
        return answer(
            offer, capabilities, local_host=local_host, local_port=local_port, session=session,
            preferred_ptime=preferred_ptime, local_direction=local_direction,
        )

    secure_offered = _live_audio(offer, SAVP_PROFILES)
    plain_offered = [m for m in _live_audio(offer) if m.proto not in SAVP_PROFILES]
    if policy is SrtpPolicy.OFF or not secure_offered:
        if policy is SrtpPolicy.REQUIRE:
            raise NoCommonCodec(
                "SRTP is required here and the offer is plain RTP (no RTP/SAVP stream with a=crypto)",
                warning_code=_WARNING_TRANSPORT[0], warning_text=_WARNING_TRANSPORT[1],
            )
        if secure_offered and not plain_offered:
            raise NoCommonCodec(
                "the offer asks for SRTP (RTP/SAVP) and SRTP is off here",
                warning_code=_WARNING_TRANSPORT[0], warning_text=_WARNING_TRANSPORT[1],
            )
        return plain()

    chosen: list[CryptoAttribute] = []

    def our_crypto(media: MediaDescription) -> tuple[AttributeLine, ...]:
        # RFC 4568 §7.1.2: the answerer "MUST select exactly one of the offered crypto attributes",
        # answering with the same tag and suite and its own key.
        usable = [c for c in offered_crypto(media) if is_usable(c)]
        if not usable:
            raise CryptoError(f"no offered a=crypto suite is one we support ({', '.join(SUPPORTED_SUITES)})")
        chosen.append(usable[0])
        return (CryptoAttribute(tag=usable[0].tag, suite=usable[0].suite, key_salt=local_key).to_attribute(),)

    try:
        description, negotiated = answer(
            offer, capabilities, local_host=local_host, local_port=local_port, session=session,
            preferred_ptime=preferred_ptime, local_direction=local_direction,
            profiles=SAVP_PROFILES, extra_attributes=our_crypto,
        )
    except SdpError:
        if policy is SrtpPolicy.REQUIRE or not plain_offered:
            raise
        return plain()  # allow: the plain stream of the same offer
    if not chosen:
        return description, negotiated
    keying = SrtpKeying(suite=chosen[0].suite, local_key=local_key, remote_key=chosen[0].key_salt)
    return description, dataclasses.replace(negotiated, srtp=keying)


def offer_crypto(keys: Sequence[bytes]) -> tuple[CryptoAttribute, ...]:
    """Our ``a=crypto`` lines, one per supported suite in order of preference, each with its own key
    (RFC 4568 §6.1: tags distinguish the alternatives)."""
    if len(keys) != len(SUPPORTED_SUITES):
        raise ValueError(f"one key per suite: {len(SUPPORTED_SUITES)} keys needed")
    return tuple(
        CryptoAttribute(tag=tag, suite=suite, key_salt=key)
        for tag, (suite, key) in enumerate(zip(SUPPORTED_SUITES, keys, strict=True), start=1)
    )


def secure_offer(
    capabilities: Sequence[CodecSpec],
    *,
    policy: SrtpPolicy,
    keys: Sequence[bytes],
    local_host: str,
    local_port: int,
    session: LocalSession,
    direction: Direction = Direction.SENDRECV,
) -> SessionDescription:
    """Our offer (RFC 3264 §5): RTP/SAVP with ``a=crypto`` unless ``policy`` is off (RFC 4568 §7.1.1)."""
    if policy is SrtpPolicy.OFF:
        return create_offer(
            capabilities, local_host=local_host, local_port=local_port, session=session, direction=direction
        )
    return create_offer(
        capabilities, local_host=local_host, local_port=local_port, session=session, direction=direction,
        proto="RTP/SAVP", extra_attributes=tuple(c.to_attribute() for c in offer_crypto(keys)),
    )


def secure_process_answer(
    offer: SessionDescription, answer_description: SessionDescription, *, policy: SrtpPolicy
) -> NegotiatedAudio:
    """Read the answer to our offer (RFC 3264 §7, RFC 4568 §7.1.3): the keys of the accepted stream."""
    negotiated = process_answer(offer, answer_description)
    pairs = [
        (ours, theirs)
        for ours, theirs in zip(offer.media, answer_description.media, strict=True)
        if ours.media == "audio" and ours.port != 0 and theirs.port != 0
    ]
    ours, theirs = pairs[0]  # process_answer raised unless there is one
    if theirs.proto in SAVP_PROFILES:
        if ours.proto not in SAVP_PROFILES:
            raise SdpError(f"the answer is {theirs.proto} to our {ours.proto} offer (RFC 3264 §6)")
        ours_by_tag = {c.tag: c for c in offered_crypto(ours)}
        for crypto in offered_crypto(theirs):
            mine = ours_by_tag.get(crypto.tag)
            if mine is not None and mine.suite == crypto.suite and is_usable(crypto):
                keying = SrtpKeying(suite=crypto.suite, local_key=mine.key_salt, remote_key=crypto.key_salt)
                return dataclasses.replace(negotiated, srtp=keying)
        raise CryptoError("the answer's a=crypto matches none of our offered tags and suites (RFC 4568 §7.1.3)")
    if ours.proto in SAVP_PROFILES and policy is SrtpPolicy.REQUIRE:
        raise NoCommonCodec(
            f"SRTP is required and the answer is plain {theirs.proto}",
            warning_code=_WARNING_TRANSPORT[0], warning_text=_WARNING_TRANSPORT[1],
        )
    return negotiated
