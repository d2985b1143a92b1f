"""HTTP Digest authentication for SIP, client and server side.

Specs: RFC 3261 §22 (Digest in SIP), RFC 2617 §3 (Digest, qop, nonce count), RFC 7616 (SHA-256,
``-sess`` variants, algorithm negotiation) and RFC 8760 (SIP: several challenges in one response,
"the UAS/proxy MUST list the preferred algorithm first", the UAC picks the strongest it supports).

Sans-IO: the server's clock comes in as ``now`` and its nonces are stateless (a timestamp and a
serial authenticated by an HMAC under the server's secret); the only state is a bounded table of
the nonce counts already seen, so that a replayed ``nc`` is refused (RFC 7616 §3.4: "the server
... MUST NOT accept a request with a nonce count it has already seen").

Deliberately left out: ``userhash`` and ``username*`` (RFC 7616 §3.4.4, §3.4.5), SHA-512-256, and
the ``Authentication-Info`` header (RFC 3261 §22.4 marks it optional).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from gateway.sip.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ALGORITHM_STRENGTH",
    "AuthResult",
    "DigestClient",
    "DigestServer",
    "compute_ha1",
    "digest_response",
    "format_auth_params",
    "parse_auth_params",
]

# Algorithms we implement, strongest last. RFC 8760 §2.4: the UAC "MUST use the topmost header
# field value that it supports" among those of one realm; we order by strength, which for a
# server that lists its preferred algorithm first (§2.3) gives the same choice.
ALGORITHM_STRENGTH: dict[str, int] = {"MD5": 1, "MD5-SESS": 2, "SHA-256": 3, "SHA-256-SESS": 4}
_HASHES: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}
_CANONICAL: dict[str, str] = {"MD5": "MD5", "MD5-SESS": "MD5-sess", "SHA-256": "SHA-256", "SHA-256-SESS": "SHA-256-sess"}

# RFC 7235 §2.1 / RFC 3261 §25.1 grammar pieces.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
_TOKEN68_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_SCHEME_RE = re.compile(rf"\s*({_TOKEN})(?:[ \t]+|$)")
_PARAM_NAME_RE = re.compile(rf"\s*({_TOKEN})\s*=\s*")
_QUOTED_RE = re.compile(r'"((?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*)"')
_ESCAPE_RE = re.compile(r"\\(.)")
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")

_TOKEN68_KEY = ""  # key under which a token68 credential (RFC 7235 §2.1) is returned


def parse_auth_params(value: str, *, status_code: int = 400) -> tuple[str, dict[str, str]]:
    """Parse a challenge or credentials value: ``scheme param=value, param="quoted"``.

    Returns the scheme as written (compare it case-insensitively) and the parameters with
    lower-cased names and unescaped quoted-string values. A ``token68`` credential (as in
    ``Basic dXNlcg==``) is returned under the key ``""``.
    Raises ``RemoteProtocolError(status_code=...)`` on anything that does not follow the grammar,
    including a repeated parameter (RFC 7616 §3.3: "Any parameter MUST NOT appear more than once").
    """
    m = _SCHEME_RE.match(value)
    if m is None:
        raise RemoteProtocolError(f"malformed auth scheme in {value!r}", status_code=status_code)
    scheme = m.group(1)
    pos = m.end()
    params: dict[str, str] = {}
    rest = value[pos:].strip()
    if not rest:
        return scheme, params
    if _is_token68(rest):
        params[_TOKEN68_KEY] = rest
        return scheme, params
    while True:
        nm = _PARAM_NAME_RE.match(value, pos)
        if nm is None:
            raise RemoteProtocolError(f"malformed auth-param in {value!r}", status_code=status_code)
        name = nm.group(1).lower()
        pos = nm.end()
        qm = _QUOTED_RE.match(value, pos)
        if qm is not None:
            param_value = _ESCAPE_RE.sub(r"\1", qm.group(1))
            pos = qm.end()
        else:
            tm = _TOKEN_RE.match(value, pos)
            if tm is None:
                raise RemoteProtocolError(f"malformed value of {name!r} in auth header", status_code=status_code)
            param_value = tm.group(0)
            pos = tm.end()
        if name in params:
            raise RemoteProtocolError(f"auth parameter {name!r} repeated", status_code=status_code)
        params[name] = param_value
        # separators: optional whitespace, a comma (empty list elements allowed, RFC 7230 §7)
        while pos < len(value) and value[pos] in " \t":
            pos += 1
        if pos == len(value):
            return scheme, params
        if value[pos] != ",":
            raise RemoteProtocolError(f"expected ',' in auth header at {pos}", status_code=status_code)
        while pos < len(value) and value[pos] in " \t,":
            pos += 1
        if pos == len(value):
            return scheme, params


def _is_token68(rest: str) -> bool:
    """token68 has no '=' except trailing padding, so ``a=b`` is an auth-param, ``abc==`` is not."""
    return _TOKEN68_RE.fullmatch(rest) is not None and "=" not in rest.rstrip("=")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_auth_params(scheme: str, params: list[tuple[str, str, bool]]) -> str:
    """Serialise ``scheme name="value", name=token`` from ``(name, value, quoted)`` triples."""
    parts = [f"{name}={_quote(val) if quoted else val}" for name, val, quoted in params]
    return f"{scheme} " + ", ".join(parts)


def _canonical_algorithm(algorithm: str | None) -> str | None:
    """RFC 2617 §3.2.1: "If this is not present it is assumed to be MD5"; names compare case-blind."""
    if algorithm is None:
        return "MD5"
    return _CANONICAL.get(algorithm.upper())


def _hash(algorithm: str, data: str) -> str:
    base = algorithm.upper().removesuffix("-SESS")
    return hashlib.new(_HASHES[base], data.encode("utf-8")).hexdigest()


def _hash_bytes(algorithm: str, data: bytes) -> str:
    base = algorithm.upper().removesuffix("-SESS")
    return hashlib.new(_HASHES[base], data).hexdigest()


def digest_response(
    *,
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1) from HA1 = H(username:realm:password).

    ``-sess`` algorithms turn HA1 into H(HA1:nonce:cnonce) here (RFC 7616 §3.4.2); qop=auth-int
    hashes the body into A2 (§3.4.3). ``qop=None`` is the RFC 2069 form for old peers.
    """
    canonical = _canonical_algorithm(algorithm)
    if canonical is None:
        raise LocalProtocolError(f"unsupported digest algorithm {algorithm!r}")
    if canonical.upper().endswith("-SESS"):
        if cnonce is None:
            raise LocalProtocolError("-sess algorithms need a cnonce")
        ha1 = _hash(canonical, f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}:{_hash_bytes(canonical, body)}" if qop == "auth-int" else f"{method}:{uri}"
    ha2 = _hash(canonical, a2)
    if qop is None:
        return _hash(canonical, f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise LocalProtocolError("qop needs nc and cnonce")
    return _hash(canonical, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def compute_ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password) with the algorithm's hash (the ``-sess`` step is applied later)."""
    return _hash(algorithm, f"{username}:{realm}:{password}")


# --------------------------------------------------------------------------------------------
# client


@dataclass(frozen=True, slots=True)
class _Challenge:
    algorithm: str
    realm: str
    nonce: str
    opaque: str | None
    qop_options: tuple[str, ...]


def _read_challenge(value: str) -> _Challenge | None:
    """A Digest challenge we can answer, or None (other scheme, unknown algorithm, garbage)."""
    try:
        scheme, params = parse_auth_params(value)
    except RemoteProtocolError:
        return None
    if scheme.lower() != "digest":
        return None
    algorithm = _canonical_algorithm(params.get("algorithm"))
    realm = params.get("realm")
    nonce = params.get("nonce")
    if algorithm is None or realm is None or nonce is None:
        return None
    qop_options = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    if qop_options and not {"auth", "auth-int"} & set(qop_options):
        return None  # only unknown qop values offered: nothing we can send
    return _Challenge(algorithm, realm, nonce, params.get("opaque"), qop_options)


class DigestClient:
    """Answers 401/407 challenges (RFC 3261 §22.2, §22.3) for one set of credentials.

    Keeps a nonce count per nonce, so reusing a nonce for the next request (preemptive
    authorisation within a dialog) sends nc=00000002, ... (RFC 7616 §3.4: "The nc value is the
    hexadecimal count of the number of requests ... that the client has sent with the nonce value").
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        cnonce_factory: Callable[[], str],
        max_nonces: int = 16,
    ) -> None:
        if "\r" in username or "\n" in username:
            # a quoted-string cannot carry CR or LF, not even escaped (RFC 3261 §25.1)
            raise LocalProtocolError("a Digest username cannot contain CR or LF")
        self.username = username
        self._password = password
        self._cnonce_factory = cnonce_factory
        self._max_nonces = max_nonces
        self._nonce_counts: dict[str, int] = {}

    def authorization(
        self,
        method: str,
        uri: str,
        challenges: list[str],
        *,
        proxy: bool = False,
        body: bytes = b"",
    ) -> tuple[str, str]:
        """The ``(header name, value)`` answering the strongest challenge we support.

        ``challenges`` are the WWW-Authenticate (or, with ``proxy=True``, Proxy-Authenticate)
        values of the response, in order; ``uri`` is the Request-URI of the request being
        authorised (RFC 3261 §22.4: the "digest-uri" is the Request-URI).
        """
        best: _Challenge | None = None
        for value in challenges:
            challenge = _read_challenge(value)
            if challenge is None:
                continue
            # strictly stronger only: among equals the topmost wins (RFC 8760 §2.4)
            if best is None or ALGORITHM_STRENGTH[challenge.algorithm.upper()] > ALGORITHM_STRENGTH[
                best.algorithm.upper()
            ]:
                best = challenge
        if best is None:
            raise LocalProtocolError("no Digest challenge with an algorithm we support")
        return ("Proxy-Authorization" if proxy else "Authorization"), self._answer(best, method, uri, body)

    def _answer(self, challenge: _Challenge, method: str, uri: str, body: bytes) -> str:
        qop: str | None
        if not challenge.qop_options:
            qop = None  # RFC 2069 compatibility: no cnonce, no nc
        elif "auth" in challenge.qop_options:
            qop = "auth"
        else:
            qop = "auth-int"
        needs_cnonce = qop is not None or challenge.algorithm.upper().endswith("-SESS")
        cnonce = self._cnonce_factory() if needs_cnonce else None
        nc: str | None = None
        if qop is not None:
            count = self._nonce_counts.pop(challenge.nonce, 0) + 1
            self._nonce_counts[challenge.nonce] = count  # re-inserted: most recently used last
            while len(self._nonce_counts) > self._max_nonces:
                del self._nonce_counts[next(iter(self._nonce_counts))]
            nc = f"{count:08x}"
        ha1 = compute_ha1(challenge.algorithm, self.username, challenge.realm, self._password)
        response = digest_response(
            algorithm=challenge.algorithm,
            ha1=ha1,
            nonce=challenge.nonce,
            method=method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        params: list[tuple[str, str, bool]] = [
            ("username", self.username, True),
            ("realm", challenge.realm, True),
            ("nonce", challenge.nonce, True),
            ("uri", uri, True),
            ("response", response, True),
            ("algorithm", challenge.algorithm, False),
        ]
        if cnonce is not None:
            params.append(("cnonce", cnonce, True))
        if challenge.opaque is not None:
            # RFC 7616 §3.4: opaque "MUST be returned by the client unchanged"
            params.append(("opaque", challenge.opaque, True))
        if qop is not None and nc is not None:
            params.append(("qop", qop, False))
            params.append(("nc", nc, False))
        return format_auth_params("Digest", params)


# --------------------------------------------------------------------------------------------
# server


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Verdict on one Authorization header. ``stale`` means: re-challenge with stale=true."""

    ok: bool
    username: str | None = None
    stale: bool = False
    reason: str = ""


_NONCE_LAYOUT = struct.Struct(">dQ")  # issue time, serial
_MAC_BYTES = 16


@dataclass(slots=True)
class _SeenCounts:
    """Highest nc seen for a nonce plus a 64-wide window below it (replays out of order)."""

    highest: int
    window: int  # bit i set: nc == highest - i was seen


class DigestServer:
    """Challenges and verifies Digest credentials for one realm (RFC 3261 §22.1, RFC 7616 §3.3-3.5).

    ``challenge`` returns one WWW-Authenticate/Proxy-Authenticate value per algorithm, preferred
    first (RFC 8760 §2.3). Nonces live ``nonce_ttl`` seconds; an expired nonce with an otherwise
    correct response gets ``stale=True`` (RFC 7616 §3.3: the server "should only set stale to true
    if it receives a request for which the nonce is invalid but with a valid digest").
    """

    def __init__(
        self,
        realm: str,
        secret: bytes,
        *,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        nonce_ttl: float = 300.0,
        max_nonces: int = 4096,
        allow_no_qop: bool = True,
    ) -> None:
        canonical: list[str] = []
        for name in algorithms:
            alg = _canonical_algorithm(name)
            if alg is None:
                raise LocalProtocolError(f"unsupported digest algorithm {name!r}")
            canonical.append(alg)
        if not canonical:
            raise LocalProtocolError("at least one algorithm is needed")
        if not secret:
            raise LocalProtocolError("the nonce secret must not be empty")
        self.realm = realm
        self.algorithms = tuple(canonical)
        self.nonce_ttl = nonce_ttl
        self._secret = secret
        self._max_nonces = max_nonces
        self._allow_no_qop = allow_no_qop
        self._serial = 0
        self._seen: dict[str, _SeenCounts] = {}
        # Nonces issued at or before this (time, serial) may have lost their nc record: refused
        # as stale so the client fetches a fresh one (keeps the table bounded without replays).
        self._forgotten_up_to: tuple[float, int] | None = None

    # nonce = base64url(issue time, serial, HMAC(secret, realm | time | serial)[:16])
    def _make_nonce(self, now: float) -> str:
        self._serial += 1
        stamp = _NONCE_LAYOUT.pack(now, self._serial)
        mac = hmac.new(self._secret, self.realm.encode() + stamp, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(stamp + mac).decode("ascii").rstrip("=")

    def _open_nonce(self, nonce: str) -> tuple[float, int] | None:
        """(issue time, serial) of a nonce we issued, or None when forged or garbled."""
        raw_len = _NONCE_LAYOUT.size + _MAC_BYTES
        if len(nonce) != (raw_len * 4 + 2) // 3:
            return None
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:
            return None
        stamp, mac = raw[: _NONCE_LAYOUT.size], raw[_NONCE_LAYOUT.size :]
        expected = hmac.new(self._secret, self.realm.encode() + stamp, hashlib.sha256).digest()[:_MAC_BYTES]
        if not hmac.compare_digest(mac, expected):
            return None
        issued, serial = _NONCE_LAYOUT.unpack(stamp)
        return float(issued), int(serial)

    def challenge(self, now: float, *, stale: bool = False) -> list[str]:
        """WWW-Authenticate (or Proxy-Authenticate) values, one per algorithm, preferred first."""
        nonce = self._make_nonce(now)
        values = []
        for algorithm in self.algorithms:
            params: list[tuple[str, str, bool]] = [
                ("realm", self.realm, True),
                ("nonce", nonce, True),
                ("algorithm", algorithm, False),
                ("qop", "auth", True),
            ]
            if stale:
                params.append(("stale", "true", False))
            values.append(format_auth_params("Digest", params))
        return values

    def verify(
        self,
        method: str,
        authorization: str,
        *,
        now: float,
        lookup_ha1: Callable[[str, str, str], str | None] | None = None,
        lookup_password: Callable[[str, str], str | None] | None = None,
        body: bytes = b"",
        request_uri: str | None = None,
    ) -> AuthResult:
        """Check one Authorization/Proxy-Authorization value.

        Give exactly one of ``lookup_password(username, realm)`` or
        ``lookup_ha1(username, realm, hash_name)`` returning H(username:realm:password) hex for
        ``hash_name`` "MD5" or "SHA-256". ``request_uri``, when given, must equal the digest-uri
        (RFC 7616 §3.4.6); leave it out behind proxies that rewrite the Request-URI.
        Malformed Digest credentials raise ``RemoteProtocolError(400)``; everything else is an
        ``AuthResult`` (a failed one means: answer 401/407 with a fresh challenge).
        """
        if (lookup_ha1 is None) == (lookup_password is None):
            raise LocalProtocolError("give exactly one of lookup_ha1 and lookup_password")
        scheme, params = parse_auth_params(authorization)
        if scheme.lower() != "digest":
            return AuthResult(ok=False, reason=f"unsupported scheme {scheme}")
        for required in ("username", "realm", "nonce", "uri", "response"):
            if required not in params:
                raise RemoteProtocolError(f"Digest credentials without {required}")
        username = params["username"]
        if params["realm"] != self.realm:
            return AuthResult(ok=False, username=username, reason="realm mismatch")
        algorithm = _canonical_algorithm(params.get("algorithm"))
        if algorithm is None or algorithm not in self.algorithms:
            return AuthResult(ok=False, username=username, reason="algorithm not offered")
        if request_uri is not None and params["uri"] != request_uri:
            return AuthResult(ok=False, username=username, reason="digest-uri does not match the Request-URI")
        qop = params.get("qop")
        nc_text = params.get("nc")
        cnonce = params.get("cnonce")
        nc: int | None = None
        if qop is None:
            if not self._allow_no_qop:
                return AuthResult(ok=False, username=username, reason="qop missing")
            if nc_text is not None:
                raise RemoteProtocolError("nc without qop in Digest credentials")
        else:
            qop = qop.lower()
            if qop not in ("auth", "auth-int"):
                return AuthResult(ok=False, username=username, reason=f"qop {qop} not offered")
            # RFC 7616 §3.4: with qop, cnonce and nc "MUST" be sent
            if nc_text is None or cnonce is None or not _NC_RE.fullmatch(nc_text):
                raise RemoteProtocolError("Digest credentials with qop need cnonce and an 8-digit nc")
            nc = int(nc_text, 16)
        if algorithm.upper().endswith("-SESS") and cnonce is None:
            raise RemoteProtocolError("-sess algorithm without cnonce")

        base = algorithm.upper().removesuffix("-SESS")
        hash_name = "SHA-256" if base == "SHA-256" else "MD5"
        if lookup_password is not None:
            password = lookup_password(username, self.realm)
            ha1 = None if password is None else compute_ha1(hash_name, username, self.realm, password)
        else:
            assert lookup_ha1 is not None
            ha1 = lookup_ha1(username, self.realm, hash_name)
        if ha1 is None:
            return AuthResult(ok=False, username=username, reason="unknown user")
        expected = digest_response(
            algorithm=algorithm,
            ha1=ha1.lower(),
            nonce=params["nonce"],
            method=method,
            uri=params["uri"],
            qop=qop,
            nc=nc_text,
            cnonce=cnonce,
            body=body,
        )
        if not hmac.compare_digest(expected.encode(), params["response"].lower().encode()):
            return AuthResult(ok=False, username=username, reason="wrong response")

        opened = self._open_nonce(params["nonce"])
        if opened is None:
            # a correct digest over a nonce we never issued (another server, or a restart with
            # a new secret): the client knows the password, let it retry with a fresh nonce
            return AuthResult(ok=False, username=username, stale=True, reason="unknown nonce")
        issued, _serial = opened
        if not 0.0 <= now - issued <= self.nonce_ttl:
            return AuthResult(ok=False, username=username, stale=True, reason="nonce expired")
        if not self._record_use(params["nonce"], opened, nc, now):
            return AuthResult(ok=False, username=username, stale=True, reason="nonce count replayed")
        return AuthResult(ok=True, username=username, reason="ok")

    def _record_use(self, nonce: str, opened: tuple[float, int], nc: int | None, now: float) -> bool:
        """Note one use of a nonce; False when it is a replay (or we can no longer tell)."""
        seen = self._seen.get(nonce)
        if seen is None:
            if self._forgotten_up_to is not None and opened <= self._forgotten_up_to:
                return False
            if nc is None:
                # RFC 2069 style: no counter, so the nonce is single-use
                self._seen[nonce] = _SeenCounts(highest=0, window=1)
            else:
                self._seen[nonce] = _SeenCounts(highest=nc, window=1)
            self._bound_table(now)
            return True
        if nc is None:
            return False
        if nc > seen.highest:
            shift = nc - seen.highest
            seen.window = ((seen.window << shift) | 1) & ((1 << 64) - 1) if shift < 64 else 1
            seen.highest = nc
            return True
        offset = seen.highest - nc
        if offset >= 64 or seen.window & (1 << offset):
            return False
        seen.window |= 1 << offset
        return True

    def _bound_table(self, now: float) -> None:
        if len(self._seen) <= self._max_nonces:
            return
        # expired nonces are refused by their timestamp anyway: drop them for free
        for key in [k for k in self._seen if self._expired(k, now)]:
            del self._seen[key]
        while len(self._seen) > self._max_nonces:
            oldest = next(iter(self._seen))
            del self._seen[oldest]
            opened = self._open_nonce(oldest)
            if opened is not None and (self._forgotten_up_to is None or opened > self._forgotten_up_to):
                self._forgotten_up_to = opened

    def _expired(self, nonce: str, now: float) -> bool:
        opened = self._open_nonce(nonce)
        return opened is None or not 0.0 <= now - opened[0] <= self.nonce_ttl
