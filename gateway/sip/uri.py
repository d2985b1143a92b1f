"""SIP and SIPS URIs: parsing, serialisation and comparison (RFC 3261 §19.1, §25.1; RFC 5118).

A :class:`SipUri` keeps every component as it appeared on the wire, escapes included
(RFC 3261 §19.1.2); :func:`uri_equal` implements the comparison rules of §19.1.4, which unescape
exactly once (``value%2541`` unescapes to ``value%41``, never to ``valueA``, RFC 4475 §3.1.1.3).
IPv6 hosts keep their brackets (RFC 5118). Any other scheme is kept opaque as an
:class:`AbsoluteUri`; the user agent decides whether it supports it (416, §8.2.2.1).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from gateway.sip.grammar import bad, format_params

__all__ = ["AbsoluteUri", "SipUri", "Uri", "parse_uri", "uri_equal"]

_SCHEME_FIRST = frozenset(string.ascii_letters)
_SCHEME_CHARS = frozenset(string.ascii_letters + string.digits + "+-.")
# Single character classes (linear time, no backtracking).
_HOST_RE = re.compile(r"[A-Za-z0-9._-]+")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_FORBIDDEN_RE = re.compile('[<>" \t\r\n\x00\x7f]')
# Characters never allowed unescaped anywhere in a SIP URI (controls, space, delimiters of the
# surrounding grammar). Whitespace inside a Request-URI is a 400 (RFC 4475 §3.1.2.8 lwsruri).
# Parameters that must match when present in either URI (§19.1.4).
_STRICT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


@dataclass(slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1.1), components as on the wire."""

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    scheme: str = "sip"
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str | None = None

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts.append(":")
                parts.append(self.password)
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        if self.params:
            parts.append(format_params(self.params))
        if self.headers is not None:
            parts.append("?")
            parts.append(self.headers)
        return "".join(parts)

    def copy(self) -> SipUri:
        return SipUri(
            host=self.host,
            user=self.user,
            password=self.password,
            port=self.port,
            scheme=self.scheme,
            params=dict(self.params),
            headers=self.headers,
        )


@dataclass(slots=True)
class AbsoluteUri:
    """A URI of any scheme but sip/sips (``tel:``, ``urn:``, ``mailto:`` ...), kept opaque."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"

    def copy(self) -> AbsoluteUri:
        return AbsoluteUri(scheme=self.scheme, opaque=self.opaque)


Uri = SipUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse a URI as it appears in a Request-URI or inside ``<...>``; raises 400 when malformed."""
    colon = text.find(":")
    if colon <= 0 or text[0] not in _SCHEME_FIRST:
        raise bad(f"Invalid URI: {text[:80]!r}")
    scheme = text[:colon]
    for c in scheme:
        if c not in _SCHEME_CHARS:
            raise bad(f"Invalid URI scheme: {text[:80]!r}")
    scheme = scheme.lower()
    rest = text[colon + 1 :]
    if scheme != "sip" and scheme != "sips":
        if not rest or _FORBIDDEN_RE.search(rest):
            raise bad(f"Invalid URI: {text[:80]!r}")
        return AbsoluteUri(scheme=scheme, opaque=rest)
    return _parse_sip(scheme, rest, text)


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    if _FORBIDDEN_RE.search(rest):
        raise bad(f"Invalid character in SIP URI: {text[:80]!r}")
    user: str | None = None
    password: str | None = None
    # userinfo may contain ';', '?', ',' and '/' (user-unreserved, RFC 4475 §3.1.1.2 and
    # §3.1.1.9) but never an unescaped '@', so the first '@' ends it.
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        pcolon = userinfo.find(":")
        if pcolon >= 0:
            user, password = userinfo[:pcolon], userinfo[pcolon + 1 :]
        else:
            user = userinfo
        if not user:
            raise bad(f"Empty user part in SIP URI: {text[:80]!r}")
        if "@" in rest:
            raise bad(f"Invalid SIP URI: {text[:80]!r}")
    headers: str | None = None
    q = rest.find("?")
    if q >= 0:
        headers = rest[q + 1 :]
        rest = rest[:q]
    semi = rest.find(";")
    params: dict[str, str | None] = {}
    if semi >= 0:
        params = _parse_uri_params(rest[semi + 1 :], text)
        rest = rest[:semi]
    host, port = parse_hostport(rest, text)
    return SipUri(
        host=host, user=user, password=password, port=port, scheme=scheme, params=params, headers=headers
    )


def _parse_uri_params(text: str, uri_text: str) -> dict[str, str | None]:
    # uri-parameters = *( ";" uri-parameter); no LWS inside a URI. Names are lower-cased, values
    # kept as written (escapes included).
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        if not item:
            raise bad(f"Empty URI parameter in {uri_text[:80]!r}")
        eq = item.find("=")
        if eq < 0:
            params[item.lower()] = None
        else:
            name = item[:eq]
            if not name:
                raise bad(f"Empty URI parameter name in {uri_text[:80]!r}")
            params[name.lower()] = item[eq + 1 :]
    return params


def parse_hostport(text: str, context: str) -> tuple[str, int | None]:
    """Parse ``host [":" port]``; IPv6 references keep their brackets (RFC 5118 §4.1)."""
    if not text:
        raise bad(f"Missing host in {context[:80]!r}")
    port_text: str | None = None
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            raise bad(f"Unterminated IPv6 reference in {context[:80]!r}")
        host = text[: end + 1]
        inner = host[1:-1]
        # Deliberately lenient: RFC 5118 §4.10 (three colons) must be tolerated.
        if _IPV6_RE.fullmatch(inner) is None:
            raise bad(f"Invalid IPv6 reference in {context[:80]!r}")
        tail = text[end + 1 :]
        if tail:
            if tail[0] != ":":
                raise bad(f"Invalid host in {context[:80]!r}")
            port_text = tail[1:]
    else:
        colon = text.find(":")
        if colon >= 0:
            host, port_text = text[:colon], text[colon + 1 :]
        else:
            host = text
        if _HOST_RE.fullmatch(host) is None:
            raise bad(f"Invalid host in {context[:80]!r}")
    port: int | None = None
    if port_text is not None:
        # RFC 5118 §4.2: "sip:2001:db8::10" has an invalid port and is rejected here.
        if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
            raise bad(f"Invalid port in {context[:80]!r}")
        port = int(port_text)
        if port > 65535:
            raise bad(f"Invalid port in {context[:80]!r}")
    return host, port


def _unescape(text: str) -> bytes:
    # One pass of %HH decoding (§19.1.4: compare after unescaping, never recursively).
    return unquote_to_bytes(text)


def _ci(text: str) -> bytes:
    return _unescape(text).lower()


def uri_equal(a: Uri, b: Uri) -> bool:
    """Compare two URIs per RFC 3261 §19.1.4."""
    if isinstance(a, AbsoluteUri) or isinstance(b, AbsoluteUri):
        if isinstance(a, AbsoluteUri) and isinstance(b, AbsoluteUri):
            # RFC 3986 §6.2.2: scheme case-insensitive, the rest compared as octets after
            # decoding percent-escapes once.
            return a.scheme == b.scheme and _unescape(a.opaque) == _unescape(b.opaque)
        return False
    if a.scheme != b.scheme:
        return False
    # "Comparison of the userinfo of SIP and SIPS URIs is case-sensitive", after unescaping.
    if (a.user is None) != (b.user is None) or (a.password is None) != (b.password is None):
        return False
    if a.user is not None and b.user is not None and _unescape(a.user) != _unescape(b.user):
        return False
    if a.password is not None and b.password is not None and _unescape(a.password) != _unescape(b.password):
        return False
    if a.host.lower() != b.host.lower():
        return False
    # "A URI omitting any component with a default value will not match a URI explicitly
    # containing that component with its default value."
    if a.port != b.port:
        return False
    for name in _STRICT_PARAMS:
        in_a, in_b = name in a.params, name in b.params
        if in_a != in_b:
            return False
    a_params = {_ci(k): v for k, v in a.params.items()}
    b_params = {_ci(k): v for k, v in b.params.items()}
    for key, value in a_params.items():
        if key in b_params:
            other = b_params[key]
            if (value is None) != (other is None):
                return False
            if value is not None and other is not None and _ci(value) != _ci(other):
                return False
    # "URI header components are never ignored": each must be present in both and equal.
    return _uri_headers(a.headers) == _uri_headers(b.headers)


def _uri_headers(text: str | None) -> dict[bytes, bytes]:
    if not text:
        return {}
    out: dict[bytes, bytes] = {}
    for item in text.split("&"):
        name, _, value = item.partition("=")
        out[_ci(name)] = _unescape(value)
    return out
