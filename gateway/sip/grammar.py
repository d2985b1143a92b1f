"""Tokenising helpers shared by the SIP URI and header parsers (RFC 3261 §25.1 basic rules).

Everything here works on ``str`` values whose header folding has already been undone
(RFC 3261 §7.3.1: a CRLF followed by SP/HT is replaced by the SP/HT). Malformed input raises
:class:`~gateway.sip.errors.RemoteProtocolError` with status 400, nothing else.

The scanners are single-pass loops over the text, never backtracking regular expressions, so
hostile input costs linear time.
"""

from __future__ import annotations

import re
import string

from gateway.sip.errors import RemoteProtocolError

__all__ = [
    "TOKEN_CHARS",
    "WS",
    "bad",
    "find_unquoted",
    "is_token",
    "parse_params",
    "quote_string",
    "scan_quoted",
    "split_commas",
    "split_header_list",
    "unquote_string",
]

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")   (§25.1)
TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-.!%*_+`'~")
WS = " \t"
# Characters a bare (unquoted) parameter value may not contain; everything else is allowed so that
# host values such as IPv6 references ("received=2001:db8::1", RFC 5118 §4.5) are accepted.
_VALUE_STOP = frozenset(' \t;,"<>')


def bad(reason: str, status_code: int = 400) -> RemoteProtocolError:
    """Build the error for a malformed peer message (the caller raises it)."""
    return RemoteProtocolError(reason, status_code=status_code)


# A single character class: linear time, no backtracking.
_TOKEN_RE = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 ``token``."""
    return _TOKEN_RE.fullmatch(text) is not None


def scan_quoted(text: str, start: int) -> int:
    """Return the index just past the quoted-string opening at ``text[start] == '"'``.

    quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE (§25.1); a backslash escapes the
    next character. An unterminated string raises 400 (RFC 4475 §3.1.2.6 quotbal).
    """
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i + 1
        i += 1
    raise bad("Unterminated quoted string")


def unquote_string(quoted: str) -> str:
    """Strip the quotes of a quoted-string and resolve its quoted-pairs."""
    inner = quoted[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    i = 0
    n = len(inner)
    while i < n:
        c = inner[i]
        if c == "\\" and i + 1 < n:
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def quote_string(text: str) -> str:
    """Quote ``text`` as a quoted-string, escaping what qdtext cannot carry.

    CR and LF cannot appear even as a quoted-pair (§25.1), so they become spaces.
    """
    out = ['"']
    for c in text:
        if c in "\r\n":
            out.append(" ")
        elif c in '"\\' or (ord(c) < 0x20 and c != "\t") or c == "\x7f":
            out.append("\\" + c)
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def find_unquoted(text: str, chars: str, start: int = 0) -> int:
    """Index of the first character of ``chars`` outside quoted strings and ``<...>``, or -1."""
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i = scan_quoted(text, i)
            continue
        if c == "<":
            end = text.find(">", i + 1)
            if end < 0:
                raise bad("Unbalanced '<' in header value")
            i = end + 1
            continue
        if c in chars:
            return i
        i += 1
    return -1


def split_commas(value: str) -> list[str]:
    """Split at commas outside quotes and ``<>``; keeps empty elements (stripped)."""
    if "," not in value:
        return [value.strip()]
    parts: list[str] = []
    start = 0
    while True:
        idx = find_unquoted(value, ",", start)
        if idx < 0:
            parts.append(value[start:].strip())
            return parts
        parts.append(value[start:idx].strip())
        start = idx + 1


def split_header_list(value: str) -> list[str]:
    """Comma-split a header value honouring quoted strings and ``<...>`` (§7.3.1).

    Empty elements are dropped (an empty ``Supported:`` header yields ``[]``).
    """
    return [part for part in split_commas(value) if part]


# One generic-param with its leading ";" (§25.1). The alternatives and the repeated classes are
# disjoint, so matching is linear: no backtracking on hostile input.
_PARAM_RE = re.compile(
    r'[ \t]*;[ \t]*([A-Za-z0-9.!%*_+`\'~-]+)[ \t]*(?:=[ \t]*("(?:[^"\\]|\\.)*"|[^ \t;,"<>]+)[ \t]*)?',
    re.DOTALL,
)


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;a=b;c`` style parameters (generic-param, §25.1); keys are lower-cased.

    Values may be a token, a host (IPv6 references included) or a quoted-string; quoted values
    keep their quotes so that serialisation is faithful. LWS around ``;`` and ``=`` is allowed.
    An empty parameter (``;;``, RFC 4475 badinv01) or a stray character raises 400.
    """
    params: dict[str, str | None] = {}
    n = len(text)
    pos = 0
    if not text.strip(WS):
        return params
    while pos < n:
        match = _PARAM_RE.match(text, pos)
        if match is None:
            quote = text.find('"', pos)
            if quote >= 0:
                scan_quoted(text, quote)  # raises on an unterminated quoted-string
            raise bad(f"Empty or invalid parameter in {text.strip()[:64]!r}")
        params[match.group(1).lower()] = match.group(2)
        pos = match.end()
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Serialise parameters as ``;name=value`` / ``;flag``."""
    if not params:
        return ""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
