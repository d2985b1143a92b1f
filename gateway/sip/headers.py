"""SIP header fields: the ordered multimap and the typed values (RFC 3261 §7.3, §20).

Header names are case-insensitive and have compact forms (§7.3.3, §20); :class:`Headers` stores
every field under its canonical name ("v" -> "Via", "call-id" -> "Call-ID") in wire order, one
entry per header line. Extension headers the table does not know keep the spelling they arrived
with (they still compare case-insensitively). Typed values (:class:`NameAddr`, :class:`Via`,
:class:`CSeq`) live in :mod:`gateway.sip.fields` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gateway.sip.fields import (
    MAX_CSEQ,
    CSeq,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_name_addr_list,
    parse_via,
)
from gateway.sip.grammar import parse_params, split_header_list

__all__ = [
    "MAX_CSEQ",
    "CSeq",
    "Headers",
    "NameAddr",
    "Via",
    "canonical_name",
    "parse_cseq",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_params",
    "parse_via",
    "split_header_list",
]

_KNOWN_NAMES = (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length", "Content-Type",
    "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity", "Identity-Info",
    "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE", "Organization",
    "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Security-Client",
    "Security-Server", "Security-Verify", "Server", "Service-Route", "Session-Expires", "SIP-ETag",
    "SIP-If-Match", "Subject", "Subscription-State", "Supported", "Timestamp", "To", "Unsupported",
    "User-Agent", "Via", "Warning", "WWW-Authenticate",
)  # fmt: skip

# Compact forms: RFC 3261 §7.3.3 and the extensions that registered one (RFC 3265 o/u,
# RFC 3515 r, RFC 3892 b, RFC 4028 x, RFC 3841 a/j/d, RFC 4474 y/n).
_COMPACT = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "n": "Identity-Info", "o": "Event", "r": "Refer-To",
    "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires",
    "y": "Identity",
}  # fmt: skip

_CANONICAL: dict[str, str] = {name.lower(): name for name in _KNOWN_NAMES}
_CANONICAL.update(_COMPACT)


def canonical_name(name: str) -> str:
    """Canonical spelling of a header name; compact forms expand; unknown names stay as written."""
    return _CANONICAL.get(name.lower(), name)


# The lookup key of every known name as code spells it (canonical, lower case, compact): no lower() per lookup.
_KEY_OF: dict[str, str] = {
    **{name: name.lower() for name in _KNOWN_NAMES},
    **{name.lower(): name.lower() for name in _KNOWN_NAMES},
    **{compact: full.lower() for compact, full in _COMPACT.items()},
}


def _key(name: str) -> str:
    key = _KEY_OF.get(name)
    if key is not None:
        return key
    lower = name.lower()
    canon = _CANONICAL.get(lower)
    return lower if canon is None else canon.lower()


class Headers:
    """Ordered multimap of header fields, one entry per header line, names canonicalised."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # Each entry: (canonical name, lower-case lookup key, value).
        self._items: list[tuple[str, str, str]] = []
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_entries(cls, entries: list[tuple[str, str, str]]) -> Headers:
        headers = cls.__new__(cls)
        headers._items = entries
        return headers

    def add(self, name: str, value: str) -> None:
        canon = canonical_name(name)
        self._items.append((canon, canon.lower(), value))

    def prepend(self, name: str, value: str) -> None:
        canon = canonical_name(name)
        key = canon.lower()
        for index, item in enumerate(self._items):
            if item[1] == key:
                self._items.insert(index, (canon, key, value))
                return
        self._items.append((canon, key, value))

    def set(self, name: str, value: str) -> None:
        canon = canonical_name(name)
        key = canon.lower()
        for index, item in enumerate(self._items):
            if item[1] == key:
                self._items[index] = (canon, key, value)
                self._items[index + 1 :] = [it for it in self._items[index + 1 :] if it[1] != key]
                return
        self._items.append((canon, key, value))

    def remove(self, name: str) -> None:
        key = _key(name)
        self._items = [item for item in self._items if item[1] != key]

    def get(self, name: str) -> str | None:
        key = _key(name)
        for item in self._items:
            if item[1] == key:
                return item[2]
        return None

    def get_all(self, name: str) -> list[str]:
        key = _key(name)
        return [item[2] for item in self._items if item[1] == key]

    def get_list(self, name: str) -> list[str]:
        key = _key(name)
        out: list[str] = []
        for item in self._items:
            if item[1] == key:
                out.extend(split_header_list(item[2]))
        return out

    def count(self, name: str) -> int:
        key = _key(name)
        return sum(1 for item in self._items if item[1] == key)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        return any(item[1] == key for item in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((item[0], item[2]) for item in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(i[1], i[2]) for i in self._items] == [(i[1], i[2]) for i in other._items]

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> Headers:
        return Headers._from_entries(list(self._items))

    def __repr__(self) -> str:
        return f"Headers({[(i[0], i[2]) for i in self._items]!r})"
