"""REGISTER client for trunks (RFC 3261 §10.2): digest auth, refresh before expiry, back-off, un-REGISTER.

One binding per trunk with ``register: true``. The Call-ID stays the same for every refresh of a binding and
the CSeq increases (§10.2.4), 401/407 are answered with credentials, 423 raises the interval to the
registrar's Min-Expires, failures retry with exponential back-off, and shutdown removes the binding.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass

from gateway.config import GatewayConfig, TrunkConfig
from gateway.observability.logging import get_logger
from gateway.observability.metrics import Metrics
from gateway.sip.auth import DigestClient
from gateway.sip.errors import SipError
from gateway.sip.headers import CSeq, Headers, NameAddr
from gateway.sip.message import Request, Response
from gateway.sip.transaction import ClientTransactionId
from gateway.sip.uri import SipUri, parse_uri
from gateway.transport.sip_transport import Addr
from gateway.ua import UserAgent

BACKOFF_INITIAL = 5.0
BACKOFF_MAX = 300.0
UNREGISTER_TIMEOUT = 4.0


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    trunk: str
    registered: bool
    expires_in: float | None
    last_status: int | None
    last_error: str | None


class TrunkRegistration:
    def __init__(self, trunk: TrunkConfig, ua: UserAgent, metrics: Metrics) -> None:
        self.trunk = trunk
        self.ua = ua
        self.metrics = metrics
        self.log = get_logger("registration").bind(trunk=trunk.name)
        self.call_id = ua.new_call_id()
        self.from_tag = ua.new_tag()
        self.cseq = 0
        self.expires = trunk.expires
        self.registered = False
        self.registered_until: float | None = None
        self.last_status: int | None = None
        self.last_error: str | None = None
        self.attempts = 0
        self._auth = (
            DigestClient(trunk.username or "", trunk.password, cnonce_factory=lambda: secrets.token_hex(8))
            if trunk.password
            else None
        )
        self._waiter: asyncio.Future[Response | None] | None = None
        self._challenge: tuple[list[str], bool] | None = None
        self._destination: Addr | None = None

    # ClientOwner
    def on_response(self, tx: ClientTransactionId, response: Response) -> None:
        if response.status_code < 200:
            return  # the UA keeps us as owner until the final response
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(response)

    def on_transaction_timeout(self, tx: ClientTransactionId) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _registrar_uri(self) -> str:
        t = self.trunk
        host = t.host if ":" not in t.host else f"[{t.host}]"
        return str(SipUri(host=host, port=t.port if t.port != 5060 else None))

    def _build(self, expires: int, auth: tuple[str, str] | None) -> Request:
        t = self.trunk
        host = t.host if ":" not in t.host else f"[{t.host}]"
        registrar = parse_uri(self._registrar_uri())
        aor = SipUri(host=host, user=t.username)
        self.cseq += 1
        headers = Headers(
            [
                ("Via", str(self.ua.make_via(t.transport))),
                ("Max-Forwards", "70"),
                ("From", str(NameAddr(uri=aor, params={"tag": self.from_tag}))),
                ("To", str(NameAddr(uri=aor))),
                ("Call-ID", self.call_id),
                ("CSeq", str(CSeq(self.cseq, "REGISTER"))),
                ("Contact", str(self.ua.contact(t.transport, user=t.username))),
                ("Expires", str(expires)),
                ("User-Agent", self.ua.config.sip.user_agent),
                ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"),
            ]
        )
        if auth is not None:
            headers.add(*auth)
        return Request(method="REGISTER", uri=registrar, headers=headers)

    async def _transact(self, expires: int) -> Response | None:
        """One REGISTER, answering up to two challenges (a stale nonce may need a second try)."""
        assert self._destination is not None
        auth: tuple[str, str] | None = None
        if self._challenge is not None and self._auth is not None:
            # Answer the last challenge up front (RFC 7616 §3.4: the nonce may be reused with a higher nc);
            # a registrar that wants a fresh nonce says so with 401 stale=true and we retry below.
            values, proxy = self._challenge
            with contextlib.suppress(SipError):
                auth = self._auth.authorization("REGISTER", self._registrar_uri(), values, proxy=proxy)
        for _ in range(3):
            request = self._build(expires, auth)
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            self.ua.send_request(request, self._destination, self.trunk.transport, self)
            response = await self._waiter
            if response is None or response.status_code not in (401, 407) or self._auth is None:
                return response
            proxy = response.status_code == 407
            challenges = response.headers.get_all("Proxy-Authenticate" if proxy else "WWW-Authenticate")
            self._challenge = (challenges, proxy)
            try:
                auth = self._auth.authorization("REGISTER", str(request.uri), challenges, proxy=proxy)
            except SipError as exc:
                self.last_error = f"unusable challenge: {exc}"
                return response
        return response

    async def run(self) -> None:
        backoff = BACKOFF_INITIAL
        while True:
            self.attempts += 1
            try:
                self._destination = await _resolve(self.trunk.host, self.trunk.port)
            except OSError as exc:
                self.last_error = f"cannot resolve {self.trunk.host!r}: {exc}"
                self.metrics.registrations.labels("failed").inc()
                self.log.warning("trunk_register_failed", error=self.last_error, retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            response = await self._transact(self.expires)
            loop = asyncio.get_running_loop()
            if response is not None and 200 <= response.status_code < 300:
                granted = _granted_expires(response, self.expires)
                self.registered = True
                self.registered_until = loop.time() + granted
                self.last_status, self.last_error = response.status_code, None
                self.metrics.registrations.labels("ok").inc()
                self.log.info("trunk_registered", expires=granted)
                backoff = BACKOFF_INITIAL
                # Refresh ahead of expiry: at half for short bindings, a minute early for long ones.
                await asyncio.sleep(max(granted / 2, granted - 60))
                continue
            if response is not None and response.status_code == 423:
                # §10.2.8: 423 Interval Too Brief carries Min-Expires; retry with it.
                min_expires = response.headers.get("Min-Expires")
                if min_expires and min_expires.strip().isdigit() and int(min_expires) > self.expires:
                    self.expires = int(min_expires)
                    continue
            self.registered = False
            self.last_status = response.status_code if response is not None else None
            self.last_error = self.last_error or (
                f"{response.status_code} {response.reason}" if response is not None else "timeout"
            )
            self.metrics.registrations.labels("failed").inc()
            self.log.warning("trunk_register_failed", error=self.last_error, retry_in=backoff)
            self.last_error = None if response is None else self.last_error
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def unregister(self) -> None:
        if not self.registered or self._destination is None:
            return
        try:
            async with asyncio.timeout(UNREGISTER_TIMEOUT):
                response = await self._transact(0)
        except TimeoutError:
            response = None
        self.registered = False
        self.log.info("trunk_unregistered", status=response.status_code if response else None)

    def status(self, now: float) -> RegistrationStatus:
        expires_in = self.registered_until - now if self.registered_until and self.registered else None
        return RegistrationStatus(self.trunk.name, self.registered, expires_in, self.last_status, self.last_error)


class Registrations:
    def __init__(self, config: GatewayConfig, ua: UserAgent, metrics: Metrics, tasks: asyncio.TaskGroup) -> None:
        self.ua = ua
        self.metrics = metrics
        self.items = [TrunkRegistration(t, ua, metrics) for t in config.trunks if t.register_]
        self._tasks = tasks
        self._running: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        self._running = {item.trunk.name: self._tasks.create_task(item.run()) for item in self.items}

    async def reconfigure(self, config: GatewayConfig) -> tuple[int, int, int]:
        """Config reload: bindings of removed or changed trunks are removed (Expires: 0), new and changed
        trunks register; unchanged ones keep their binding and refresh schedule. Returns (added, removed,
        kept)."""
        wanted = {t.name: t for t in config.trunks if t.register_}
        keep = [item for item in self.items if wanted.get(item.trunk.name) == item.trunk]
        gone = [item for item in self.items if item not in keep]
        for item in gone:
            task = self._running.pop(item.trunk.name, None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(item.unregister() for item in gone))
        kept_names = {item.trunk.name for item in keep}
        added = [TrunkRegistration(t, self.ua, self.metrics) for name, t in wanted.items() if name not in kept_names]
        for item in added:
            self._running[item.trunk.name] = self._tasks.create_task(item.run())
        self.items = keep + added
        return len(added), len(gone), len(keep)

    async def stop(self) -> None:
        running = list(self._running.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await asyncio.gather(*(item.unregister() for item in self.items))


def _granted_expires(response: Response, requested: int) -> int:
    """§10.2.4: the registrar's expiry: our Contact's expires param, else the Expires header."""
    try:
        for contact in response.contacts:
            value = contact.params.get("expires")
            if value is not None and value.isdigit():
                return int(value)
    except SipError:
        pass
    header = response.headers.get("Expires")
    if header is not None and header.strip().isdigit():
        return int(header.strip())
    return requested


async def _resolve(host: str, port: int) -> Addr:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=2)  # SOCK_DGRAM
    addr = infos[0][4]
    return (str(addr[0]), int(addr[1]))
