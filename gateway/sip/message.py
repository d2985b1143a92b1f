"""SIP requests and responses: the data model, typed header views and serialisation.

RFC 3261 §7 (message format), §8.2.6 (generating responses), §12.1.1 (Record-Route in
dialog-creating answers), §21 (reason phrases). Typed views parse their header on access and
cache the result keyed on the raw header text, so a changed header is re-parsed and a cached value
is never handed out for mutation (mutable views are returned as copies).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from gateway.sip.errors import RemoteProtocolError
from gateway.sip.fields import (
    CSeq,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_name_addr_list,
    parse_via,
)
from gateway.sip.headers import Headers
from gateway.sip.uri import Uri

__all__ = [
    "DIALOG_CREATING_METHODS",
    "REASON_PHRASES",
    "Message",
    "Request",
    "Response",
    "make_response",
    "make_response_from_error",
]

REASON_PHRASES: Mapping[int, str] = MappingProxyType({
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated",
    200: "OK", 202: "Accepted", 204: "No Notification",
    300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    412: "Conditional Request Failed", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 428: "Use Identity Header",
    429: "Provide Referrer Identity", 433: "Anonymity Disallowed", 436: "Bad Identity-Info",
    437: "Unsupported Certificate", 438: "Invalid Identity Header",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending",
    493: "Undecipherable", 494: "Security Agreement Required",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
})  # fmt: skip

_CLASS_REASONS = {1: "Trying", 2: "OK", 3: "Redirection", 4: "Client Error", 5: "Server Error",
                  6: "Global Failure"}  # fmt: skip

# §12.1.1: Record-Route is copied into 101-299 answers to requests that create dialogs
# (INVITE; SUBSCRIBE and NOTIFY per RFC 6665 §4.3; REFER per RFC 3515).
DIALOG_CREATING_METHODS = frozenset({"INVITE", "SUBSCRIBE", "NOTIFY", "REFER"})

_T = TypeVar("_T")
_MAX_CACHED_VIEWS = 64


def _missing(name: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"Missing {name} header")


class _MessageViews:
    """Typed header views shared by :class:`Request` and :class:`Response`."""

    __slots__ = ()
    headers: Headers
    body: bytes
    _views: dict[tuple[str, str], Any]

    def _view(self, key: str, raw: str, parse: Callable[[str], _T]) -> _T:
        cache_key = (key, raw)
        try:
            value: _T = self._views[cache_key]
        except KeyError:
            value = parse(raw)
            if len(self._views) >= _MAX_CACHED_VIEWS:
                self._views.clear()  # headers rewritten many times: keep the cache bounded
            self._views[cache_key] = value
        return value

    def _single(self, name: str) -> str:
        raw = self.headers.get(name)
        if raw is None:
            raise _missing(name)
        return raw

    @property
    def call_id(self) -> str:
        value = self._single("Call-ID").strip()
        if not value:
            raise RemoteProtocolError("Empty Call-ID header")
        return value

    @property
    def cseq(self) -> CSeq:
        return self._view("cseq", self._single("CSeq"), parse_cseq)

    @property
    def from_(self) -> NameAddr:
        return self._view("from", self._single("From"), parse_name_addr).copy()

    @property
    def to(self) -> NameAddr:
        return self._view("to", self._single("To"), parse_name_addr).copy()

    @property
    def vias(self) -> list[Via]:
        return [via.copy() for via in self._shared_vias()]

    def _shared_vias(self) -> list[Via]:
        lines = self.headers.get_all("Via")
        if not lines:
            raise _missing("Via")
        if len(lines) == 1:
            return self._view("via", lines[0], parse_via)
        out: list[Via] = []
        for line in lines:
            out.extend(self._view("via", line, parse_via))
        return out

    def _shared_addr_list(self, name: str) -> list[NameAddr]:
        out: list[NameAddr] = []
        for line in self.headers.get_all(name):
            if name == "Contact" and line.strip() == "*":
                continue
            out.extend(self._view(name, line, parse_name_addr_list))
        return out

    def validate(self) -> None:
        """Parse (and cache) every header field whose syntax a UAS must check (§8.2).

        Raises RemoteProtocolError naming the header ("Invalid To header: ...").
        """
        checks: tuple[tuple[str, Callable[[], object]], ...] = (
            ("Call-ID", lambda: self.call_id),
            ("CSeq", lambda: self.cseq),
            ("From", lambda: self._view("from", self._single("From"), parse_name_addr)),
            ("To", lambda: self._view("to", self._single("To"), parse_name_addr)),
            ("Via", self._shared_vias),
            ("Max-Forwards", lambda: self.max_forwards),
            ("Contact", lambda: self._shared_addr_list("Contact")),
            ("Route", lambda: self._shared_addr_list("Route")),
            ("Record-Route", lambda: self._shared_addr_list("Record-Route")),
        )
        for name, check in checks:
            try:
                check()
            except RemoteProtocolError as err:
                if err.reason.startswith((f"Invalid {name}", f"Missing {name}", f"Empty {name}")):
                    raise
                raise RemoteProtocolError(
                    f"Invalid {name} header: {err.reason}", status_code=err.status_code
                ) from None

    @property
    def top_via(self) -> Via:
        return self._view("via", self._single("Via"), parse_via)[0].copy()

    @property
    def max_forwards(self) -> int | None:
        raw = self.headers.get("Max-Forwards")
        if raw is None:
            return None
        return self._view("max-forwards", raw, _parse_max_forwards)

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values; empty for ``Contact: *`` (REGISTER, §10.2.2) and when absent."""
        return [c.copy() for c in self._shared_addr_list("Contact")]

    @property
    def routes(self) -> list[NameAddr]:
        return [c.copy() for c in self._shared_addr_list("Route")]

    @property
    def record_routes(self) -> list[NameAddr]:
        return [c.copy() for c in self._shared_addr_list("Record-Route")]

    @property
    def content_type(self) -> str | None:
        """Media type only (``application/sdp``), lower-case, without parameters."""
        raw = self.headers.get("Content-Type")
        if raw is None:
            return None
        media = raw.split(";", 1)[0].strip().lower()
        return "".join(media.split()) or None

    def _serialize_with(self, start_line: str) -> bytes:
        parts = [start_line]
        for name, value in self.headers:
            if name == "Content-Length":
                continue
            parts.append(f"{name}: {value}")
        parts.append(f"Content-Length: {len(self.body)}")
        parts.append("")
        parts.append("")
        return "\r\n".join(parts).encode("utf-8") + self.body


def _parse_max_forwards(raw: str) -> int:
    text = raw.strip()
    # Max-Forwards = 1*DIGIT, 0-255 (§20.22)
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > 255:
        raise RemoteProtocolError(f"Invalid Max-Forwards: {raw[:24]!r}")
    return int(text)


@dataclass(slots=True)
class Request(_MessageViews):
    """A SIP request (§7.1)."""

    method: str
    uri: Uri
    headers: Headers
    body: bytes = b""
    _views: dict[tuple[str, str], Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def serialize(self) -> bytes:
        return self._serialize_with(f"{self.method} {self.uri} SIP/2.0")


@dataclass(slots=True)
class Response(_MessageViews):
    """A SIP response (§7.2)."""

    status_code: int
    reason: str
    headers: Headers
    body: bytes = b""
    _views: dict[tuple[str, str], Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def serialize(self) -> bytes:
        reason = " ".join(self.reason.split())
        return self._serialize_with(f"SIP/2.0 {self.status_code} {reason}")


Message = Request | Response


def _default_reason(status_code: int) -> str:
    return REASON_PHRASES.get(status_code) or _CLASS_REASONS.get(status_code // 100, "Unknown")


def make_response(
    request: Request,
    status_code: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """Build a response to ``request`` per RFC 3261 §8.2.6.2 and §12.1.1.

    "The From field of the response MUST equal the From header field of the request. The Call-ID
    ... MUST equal ... The CSeq ... MUST equal ... The Via header field values in the response MUST
    equal the Via header field values in the request and MUST maintain the same ordering."
    The To header is copied as received, with ``;tag=to_tag`` appended when it had no tag.
    """
    out = Headers()
    for value in request.headers.get_all("Via"):
        out.add("Via", value)
    req = request.headers
    from_value = req.get("From")
    if from_value is not None:
        out.add("From", from_value)
    to_value = req.get("To")
    if to_value is not None:
        if to_tag is not None and request.to.tag is None:
            to_value = f"{to_value};tag={to_tag}"
        out.add("To", to_value)
    for name in ("Call-ID", "CSeq"):
        single = req.get(name)
        if single is not None:
            out.add(name, single)
    if 101 <= status_code <= 299 and request.method in DIALOG_CREATING_METHODS:
        for value in req.get_all("Record-Route"):
            out.add("Record-Route", value)
    if status_code == 100:
        # §8.2.6.1: a Timestamp in the request is copied into the 100 (Trying).
        timestamp = req.get("Timestamp")
        if timestamp is not None:
            out.add("Timestamp", timestamp)
    for name, value in headers:
        out.add(name, value)
    if content_type is not None:
        out.set("Content-Type", content_type)
    return Response(
        status_code=status_code,
        reason=_default_reason(status_code) if reason is None else reason,
        headers=out,
        body=body,
    )


def make_response_from_error(err: RemoteProtocolError) -> Response | None:
    """A stateless answer to a request the parser rejected, or ``None`` when none can be sent.

    ``None`` when the error concerns a response (responses are never answered), when the request is
    an ACK, or when Via, Call-ID, CSeq, From or To is missing. The fields are copied as received
    (§8.2.6.2 demands they equal the request's even if we could not interpret them), so a Via we
    cannot parse still travels back; where the answer goes is the edge's decision (its source
    address). The To tag is derived from the request so retransmissions get the same one.
    """
    if err.is_response or err.headers is None:
        return None
    req = err.headers
    via_lines = req.get_all("Via")
    values: dict[str, str] = {}
    for name in ("Call-ID", "CSeq", "From", "To"):
        value = req.get(name)
        if value is None or not value.strip():
            return None
        values[name] = value
    if values["CSeq"].split()[-1:] == ["ACK"]:
        return None  # §17: "an ACK ... never generates a response", not even to a malformed one
    if not via_lines:
        return None
    try:
        branch = parse_via(via_lines[0])[0].branch or ""
    except RemoteProtocolError:
        branch = via_lines[0]  # unreadable: its raw text still tells retransmissions apart
    out = Headers()
    for line in via_lines:
        out.add("Via", line)
    out.add("From", values["From"])
    to_value = values["To"]
    try:
        to_has_tag = parse_name_addr(to_value).tag is not None
    except RemoteProtocolError:
        to_has_tag = True  # cannot safely append a parameter to an unparseable To
    if not to_has_tag:
        seed = "\x00".join((values["Call-ID"], values["CSeq"], values["From"], branch))
        to_value = f"{to_value};tag={hashlib.sha1(seed.encode('utf-8', 'replace')).hexdigest()[:16]}"
    out.add("To", to_value)
    out.add("Call-ID", values["Call-ID"])
    out.add("CSeq", values["CSeq"])
    for name, value in err.extra_headers:
        out.add(name, value)
    reason = " ".join(err.reason.split()) or _default_reason(err.status_code)
    return Response(status_code=err.status_code, reason=reason, headers=out)
