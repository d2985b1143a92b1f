"""DTMF carried in SIP INFO bodies (the fallback when a peer does not send RFC 4733 events).

Two de-facto formats, neither an RFC:

- ``application/dtmf-relay`` (Cisco/SIP-INFO convention, as in Asterisk and FreeSWITCH)::

      Signal=5
      Duration=160

  with ``Duration`` in milliseconds;
- ``application/dtmf``: the body is the digit itself, e.g. ``5``.

Digits are 0-9 * # A-D; ``Signal=10`` and ``Signal=11`` are accepted for * and #
(the RFC 4733 event codes some devices send). Stdlib only.
"""

from __future__ import annotations

__all__ = ["DEFAULT_DURATION_MS", "DtmfInfoError", "parse_dtmf_info"]

DEFAULT_DURATION_MS = 250
_DIGITS = "0123456789*#ABCD"
_EVENT_CODES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}
_MAX_DURATION_MS = 60_000


class DtmfInfoError(ValueError):
    """The INFO body is not a DTMF digit we understand; ``reason`` is a snake_case label:
    ``unsupported_content_type``, ``bad_encoding``, ``empty_body``, ``missing_signal``,
    ``bad_signal``, ``bad_duration``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _digit(signal: str) -> str:
    signal = signal.strip().upper()
    if len(signal) == 1 and signal in _DIGITS:
        return signal
    if signal in _EVENT_CODES:
        return _EVENT_CODES[signal]
    raise DtmfInfoError("bad_signal", repr(signal))


def parse_dtmf_info(content_type: str, body: bytes) -> tuple[str, int]:
    """Return ``(digit, duration_ms)`` from an INFO body or raise :class:`DtmfInfoError`."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in ("application/dtmf-relay", "application/dtmf"):
        raise DtmfInfoError("unsupported_content_type", media_type)
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise DtmfInfoError("bad_encoding", "the body is not ASCII") from None
    if not text.strip():
        raise DtmfInfoError("empty_body")
    if media_type == "application/dtmf":
        return _digit(text), DEFAULT_DURATION_MS
    signal: str | None = None
    duration = DEFAULT_DURATION_MS
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if not sep:
            continue
        name = name.strip().lower()
        if name == "signal":
            signal = value
        elif name == "duration":
            value = value.strip()
            # More than 5 digits is beyond the 60 s bound anyway (and int() of thousands raises).
            if not value.isdigit() or len(value.lstrip("0")) > 5:
                raise DtmfInfoError("bad_duration", repr(value[:16]))
            # some phones send Duration=0 for "unknown"
            duration = int(value) or DEFAULT_DURATION_MS
            if duration > _MAX_DURATION_MS:
                raise DtmfInfoError("bad_duration", f"{duration} ms")
    if signal is None:
        raise DtmfInfoError("missing_signal")
    return _digit(signal), duration
