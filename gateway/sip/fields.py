"""Typed values of the SIP header fields the core interprets (RFC 3261 §20, §25.1).

name-addr / addr-spec with header parameters (From, To, Contact, Route, Record-Route, §20.10,
§20.20, §20.39), Via (§20.42, with RFC 3581 rport and RFC 5118 IPv6 sent-by) and CSeq (§20.16).
Each parser returns a value or raises :class:`~gateway.sip.errors.RemoteProtocolError` (400).
Re-exported by :mod:`gateway.sip.headers`, which is the public import path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.sip.grammar import (
    TOKEN_CHARS,
    WS,
    bad,
    format_params,
    is_token,
    parse_params,
    quote_string,
    scan_quoted,
    split_commas,
    unquote_string,
)
from gateway.sip.uri import Uri, parse_hostport, parse_uri

__all__ = [
    "MAX_CSEQ",
    "CSeq",
    "NameAddr",
    "Via",
    "parse_cseq",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_via",
]

# "The sequence number value MUST be expressible as a 32-bit unsigned integer and MUST be less
# than 2**31" (RFC 3261 §8.1.1.5).
MAX_CSEQ = 2**31


@dataclass(slots=True)
class NameAddr:
    """``[display-name] <uri> *(;param)`` of From, To, Contact, Route, Record-Route (§20)."""

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        params = dict(self.params)
        params["tag"] = tag
        return NameAddr(uri=self.uri.copy(), display_name=self.display_name, params=params)

    def copy(self) -> NameAddr:
        return NameAddr(uri=self.uri.copy(), display_name=self.display_name, params=dict(self.params))

    def __str__(self) -> str:
        # Always the name-addr form: "<...>" protects URI parameters from being read as header
        # parameters (§20.10).
        uri = f"<{self.uri}>"
        if self.display_name is not None:
            uri = f"{quote_string(self.display_name)} {uri}"
        return uri + format_params(self.params)


@dataclass(slots=True)
class Via:
    """One via-parm (§20.42): ``SIP/2.0/<transport> <sent-by> *(;param)``."""

    host: str
    port: int | None = None
    transport: str = "UDP"
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> str | None:
        """RFC 3581 ``rport``: ``""`` when present without a value, ``None`` when absent."""
        if "rport" not in self.params:
            return None
        return self.params["rport"] or ""

    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def copy(self) -> Via:
        return Via(host=self.host, port=self.port, transport=self.transport, params=dict(self.params))

    def __str__(self) -> str:
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {hostport}{format_params(self.params)}"


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq (§20.16): a sequence number below 2**31 and the method."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_name_addr(text: str) -> NameAddr:
    """Parse one name-addr or addr-spec with its header parameters."""
    n = len(text)
    i = 0
    while i < n and text[i] in WS:
        i += 1
    if i == n:
        raise bad("Empty address")
    display: str | None = None
    c = text[i]
    if c == '"':
        end = scan_quoted(text, i)
        display = unquote_string(text[i:end])
        i = end
        while i < n and text[i] in WS:
            i += 1
        if i == n or text[i] != "<":
            raise bad(f"Expected '<' after display name: {text[:80]!r}")
    else:
        # Find where the address starts: '<' (name-addr) or ';' (addr-spec with parameters,
        # whose quoted values may themselves hold '<', e.g. +sip.instance="<urn:...>").
        lt = i
        while lt < n and text[lt] not in '<;"':
            lt += 1
        if lt < n and text[lt] == '"':
            raise bad(f"Invalid display name in {text[:80]!r}")
        if lt < n and text[lt] == "<":
            name = text[i:lt].strip()
            if name:
                # display-name = *(token LWS) / quoted-string (§25.1): "Bell, Alexander" is not
                # a display name (RFC 4475 §3.1.2.15 baddn).
                words = name.split()
                for word in words:
                    if not is_token(word):
                        raise bad(f"Invalid display name: {name[:64]!r}")
                display = " ".join(words)
            i = lt
    if text[i] == "<":
        gt = text.find(">", i + 1)
        if gt < 0:
            raise bad(f"Missing '>' in address: {text[:80]!r}")
        inner = text[i + 1 : gt]
        if inner[:1] in (" ", "\t") or inner[-1:] in (" ", "\t"):
            raise bad(f"Whitespace inside <> of address: {text[:80]!r}")
        # No LWS inside "<...>": "< sip:a@b >" is rejected (RFC 4475 §3.1.2.14 badaspec).
        uri = parse_uri(inner)
        rest = text[gt + 1 :]
    else:
        # addr-spec form: the URI ends at the first ';' and the rest are header parameters;
        # "If the URI contains a comma, question mark or semicolon, the URI MUST be enclosed in
        # angle brackets" (§20.10), so '?' here is an error (RFC 4475 §3.1.2.13 regbadct).
        semi = text.find(";", i)
        end = n if semi < 0 else semi
        spec = text[i:end].rstrip(WS)
        for ch in spec:
            if ch in ' \t?,<>"':
                raise bad(f"Invalid addr-spec (enclose the URI in <>): {text[:80]!r}")
        uri = parse_uri(spec)
        rest = text[end:]
    params = parse_params(rest) if rest else {}
    return NameAddr(uri=uri, display_name=display, params=params)


def parse_name_addr_list(text: str) -> list[NameAddr]:
    """Parse a comma-separated list of name-addrs (Contact, Route, Record-Route).

    An empty element (``a,,b``) is malformed and raises 400.
    """
    out: list[NameAddr] = []
    for part in split_commas(text):
        if not part:
            raise bad(f"Empty element in address list: {text[:80]!r}")
        out.append(parse_name_addr(part))
    return out


def parse_via(text: str) -> list[Via]:
    """Parse one Via header line, which may hold several comma-separated via-parms."""
    out: list[Via] = []
    for part in split_commas(text):
        if not part:
            raise bad(f"Empty element in Via: {text[:80]!r}")
        out.append(_parse_one_via(part))
    return out


def _parse_one_via(text: str) -> Via:
    # sent-protocol = protocol-name SLASH protocol-version SLASH transport, SLASH = SWS "/" SWS
    pieces = text.split("/", 2)
    if len(pieces) != 3:
        raise bad(f"Invalid Via: {text[:80]!r}")
    name, version, rest = pieces[0].strip(), pieces[1].strip(), pieces[2].lstrip(WS)
    if name.upper() != "SIP" or not is_token(version):
        raise bad(f"Invalid Via protocol: {text[:80]!r}")
    i = 0
    n = len(rest)
    while i < n and rest[i] in TOKEN_CHARS:
        i += 1
    transport = rest[:i]
    if not transport or i == n or rest[i] not in WS:
        raise bad(f"Invalid Via transport: {text[:80]!r}")
    semi = rest.find(";", i)
    sent_by = rest[i:] if semi < 0 else rest[i:semi]
    # COLON = SWS ":" SWS between host and port
    sent_by = "".join(sent_by.split())
    host, port = parse_hostport(sent_by, text)
    params = parse_params(rest[semi:]) if semi >= 0 else {}
    return Via(host=host, port=port, transport=transport.upper(), params=params)


def parse_cseq(text: str) -> CSeq:
    """Parse ``CSeq: <number> <method>``; the number must be below 2**31 (§8.1.1.5)."""
    parts = text.split()
    if len(parts) != 2:
        raise bad(f"Invalid CSeq: {text[:64]!r}")
    number, method = parts
    if not number.isascii() or not number.isdigit() or not is_token(method):
        raise bad(f"Invalid CSeq: {text[:64]!r}")
    # Check the length first: never turn a 10**6-digit string into an int.
    stripped = number.lstrip("0") or "0"
    if len(stripped) > 10 or int(stripped) >= MAX_CSEQ:
        raise bad(f"Invalid CSeq: sequence number {number[:24]} is not below 2**31")
    return CSeq(seq=int(stripped), method=method)
