"""DID routing: which ``numbers:`` entry an INVITE reaches, and the INVITE's headers as call variables.

A number is an exact DID, a prefix pattern (``+1555*``) or ``*``; an entry may also require headers
(``headers: {X-Tenant: acme}``, values exact or prefix patterns). Candidates are the Request-URI user, then the
To user. The first entry (in file order) that matches a candidate wins, except that a ``*`` catch-all only
applies when no specific entry matched either candidate — so a trunk that puts the DID in To but not in the
Request-URI still reaches its number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config import NumberRoute
from gateway.sip.message import Request
from gateway.sip.uri import SipUri, Uri

__all__ = ["RouteMatch", "route_invite", "sip_variables", "uri_user"]


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: NumberRoute
    number: str  # the dialled number the entry matched ("" when the INVITE named none)


def uri_user(uri: Uri) -> str | None:
    """The user part of a sip:/sips: URI, or the number of a tel: URI."""
    if isinstance(uri, SipUri):
        return uri.user or None
    text = str(uri)
    if text.lower().startswith("tel:"):
        return text[4:].split(";", 1)[0] or None
    return None


def _headers_match(route: NumberRoute, request: Request) -> bool:
    for name, pattern in route.headers.items():
        value = request.headers.get(name)
        if value is None:
            return False
        value = value.strip()
        if pattern.endswith("*") and pattern != "*":
            if not value.startswith(pattern[:-1]):
                return False
        elif pattern != "*" and value != pattern:
            return False
    return True


def route_invite(numbers: Sequence[NumberRoute], request: Request) -> RouteMatch | None:
    """See module doc."""
    candidates = [u for u in (uri_user(request.uri), uri_user(request.to.uri)) if u]
    eligible = [r for r in numbers if _headers_match(r, request)]
    for user in candidates:
        for route in eligible:
            if route.number != "*" and route.matches(user):
                return RouteMatch(route, user)
    for route in eligible:
        if route.number == "*":
            return RouteMatch(route, candidates[0] if candidates else "")
    return None


def sip_variables(request: Request) -> dict[str, Any]:
    """Variables an INVITE brings to the assistant's ``{{...}}`` templates.

    Each ``X-`` header by its name without the prefix (``X-Account-Id`` → ``{{Account-Id}}``; lower-case too,
    ``{{account-id}}``), and ``{{sip.from}}``, ``{{sip.to}}``, ``{{sip.diversion}}`` (first Diversion header),
    ``{{sip.fromUser}}``, ``{{sip.toUser}}``, ``{{sip.requestUser}}`` and ``{{sip.headers["x-name"]}}`` (every
    header, lower-case names, first value).
    """
    headers: dict[str, str] = {}
    values: dict[str, Any] = {}
    for name, value in request.headers:
        lower = name.lower()
        headers.setdefault(lower, value)
        if lower.startswith("x-") and len(name) > 2:
            values.setdefault(name[2:], value)
            values.setdefault(lower[2:], value)
    values["sip"] = {
        "from": str(request.from_.uri),
        "to": str(request.to.uri),
        "fromUser": uri_user(request.from_.uri) or "",
        "toUser": uri_user(request.to.uri) or "",
        "requestUser": uri_user(request.uri) or "",
        "diversion": headers.get("diversion", ""),
        "headers": headers,
    }
    return values
