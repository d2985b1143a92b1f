"""Gateway configuration: YAML with ``${VAR}`` / ``${VAR:-default}`` expansion, validated by pydantic.

The keys listed in docs/ARCHITECTURE.md ("External interface") are relied on by outside tools; the JSON
schema in ``config/voicegw.schema.json`` is generated from these models (``voicegw config-schema``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.assistants.model import Assistant, AssistantError, parse_assistant, unknown_fields

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class ConfigError(Exception):
    """An invalid configuration; the message names the key and the problem."""


def parse_host_port(text: str, *, default_port: int) -> tuple[str, int]:
    """``host:port``, ``host``, ``[v6]:port`` or ``[v6]`` → (host without brackets, port)."""
    text = text.strip()
    if not text:
        raise ValueError("empty address")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unterminated IPv6 reference in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected text after IPv6 reference in {text!r}")
        port_text = rest[1:] if rest else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        host, port_text = text, ""  # bare IPv6 literal
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"missing host in {text!r}")
    port = default_port
    if port_text:
        if not port_text.isdigit():
            raise ValueError(f"port {port_text!r} is not a number")
        port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range 0-65535")
    return host, port


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SipTimers(_Model):
    t1: float = Field(0.5, gt=0, description="RFC 3261 T1 (RTT estimate), seconds")
    t2: float = Field(4.0, gt=0, description="RFC 3261 T2 (max non-INVITE retransmit interval), seconds")
    t4: float = Field(5.0, gt=0, description="RFC 3261 T4 (max message lifetime), seconds")


SrtpMode = Literal["off", "allow", "require"]


class TlsConfig(_Model):
    """SIP over TLS (RFC 3261 §26.2, port 5061 by §19.1); certificates are read at start only."""

    listen: str = Field("0.0.0.0:5061", description="host:port of the TLS listener (when cert_file is set)")
    cert_file: str | None = Field(None, description="PEM certificate chain presented to peers (no listener without)")
    key_file: str | None = Field(None, description="PEM private key of cert_file")
    ca_file: str | None = Field(None, description="PEM CA bundle for verifying peers (default: system CAs)")
    verify_server: bool = Field(
        True, description="outbound: verify the trunk's certificate and host name (per-trunk tls_verify can turn it off)"
    )
    verify_clients: bool = Field(False, description="inbound: demand a client certificate signed by ca_file")

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        parse_host_port(v, default_port=5061)
        return v

    @property
    def listen_addr(self) -> tuple[str, int]:
        return parse_host_port(self.listen, default_port=5061)

    @model_validator(mode="after")
    def _cert_and_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("sip.tls needs both cert_file and key_file (or neither: outbound TLS only)")
        return self


class SipConfig(_Model):
    listen: str = Field("127.0.0.1:5060", description="host:port bound for UDP and TCP")
    public_address: str | None = Field(
        None, description="host[:port] announced in Via/Contact/SDP when behind NAT or in Docker"
    )
    user_agent: str = "voicegw/0.1"
    force_rport: bool = Field(
        True, description="answer UDP requests at their source port even without ;rport (peers behind NAT)"
    )
    timers: SipTimers = SipTimers()
    session_expires: int = Field(1800, ge=90, description="RFC 4028 Session-Expires we ask for, seconds")
    min_se: int = Field(90, ge=90, description="RFC 4028 Min-SE we accept, seconds")
    ring_timeout: float = Field(60.0, gt=0, description="outbound calls: CANCEL after this many seconds of ringing")
    answer_delay: float = Field(0.0, ge=0, description="seconds between 180 Ringing and 200 OK on inbound calls")
    tls: TlsConfig | None = Field(None, description="SIP over TLS listener and outbound TLS settings")

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        parse_host_port(v, default_port=5060)
        return v

    @field_validator("public_address")
    @classmethod
    def _check_public(cls, v: str | None) -> str | None:
        if v is not None:
            parse_host_port(v, default_port=5060)
        return v

    @property
    def listen_addr(self) -> tuple[str, int]:
        return parse_host_port(self.listen, default_port=5060)

    @property
    def announced_addr(self) -> tuple[str, int]:
        """Address written into Via/Contact: public_address when set, else the bound one."""
        host, port = self.listen_addr
        if self.public_address is None:
            return host, port
        return parse_host_port(self.public_address, default_port=port)


class RtpConfig(_Model):
    port_min: int = Field(20000, ge=1024, le=65534)
    port_max: int = Field(20999, ge=1025, le=65535)
    media_timeout: float = Field(30.0, gt=0, description="no RTP for this long → BYE (suspended on hold)")
    public_address: str | None = Field(None, description="address written in SDP c= (defaults to sip's)")
    srtp: SrtpMode = Field("off", description="SRTP (SDES) for inbound calls unless the number sets srtp")

    @model_validator(mode="after")
    def _check_range(self) -> RtpConfig:
        if self.port_min > self.port_max:
            raise ValueError(f"port_min {self.port_min} is greater than port_max {self.port_max}")
        return self


class HttpConfig(_Model):
    listen: str = "127.0.0.1:8080"
    api_key: str | None = Field(None, description="when set, the API demands Authorization: Bearer <key>")

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        parse_host_port(v, default_port=8080)
        return v


class ServerRoute(_Model):
    """Vapi's assistant-request: the number's server picks the assistant for each call."""

    url: str
    secret: str | None = Field(None, description="sent as X-Vapi-Secret and used as the HMAC signing key")
    timeoutSeconds: float = Field(7.5, gt=0, description="how long the caller hears ringing while we wait")
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers sent with the request")

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError(f"server url {v!r} must start with http:// or https://")
        return v


DEFAULT_ERROR_MESSAGE = "Sorry, we cannot take your call right now. Please try again later. Goodbye."


class NumberRoute(_Model):
    """One entry of ``numbers:``. An inline assistant (a mapping) or ``assistant_file`` is registered at load
    under the name ``number:<number>``, so after loading ``assistant`` is always a name."""

    number: str = Field(description="DID (exact), a prefix pattern like '+1555*', or '*'")
    assistant: str | None = Field(None, description="assistant name, or an inline Vapi assistant object")
    echo: bool = False
    server: ServerRoute | None = Field(None, description="assistant-request server for this number")
    fallback_assistant: str | None = Field(
        None, description="assistant (name or inline) used when the assistant-request fails or times out"
    )
    on_failure: Literal["error-message", "reject"] = Field(
        "error-message",
        description="assistant-request failed and no fallback_assistant: answer and speak error_message, "
        "or reject the INVITE with 503",
    )
    error_message: str = DEFAULT_ERROR_MESSAGE
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="route only INVITEs whose headers match (name -> value or prefix pattern ending in '*')",
    )
    max_calls: int | None = Field(
        None, ge=1, description="concurrent inbound calls on this number; one more gets 486 Busy Here"
    )
    srtp: SrtpMode | None = Field(None, description="SRTP (SDES) for calls to this number (default: rtp.srtp)")

    @model_validator(mode="after")
    def _one_target(self) -> NumberRoute:
        targets = [self.assistant is not None, self.echo, self.server is not None]
        if sum(targets) != 1:
            raise ValueError(
                f"number {self.number!r} must route to exactly one of assistant, assistant_file, echo: true "
                "or server"
            )
        if self.fallback_assistant is not None and self.server is None:
            raise ValueError(f"number {self.number!r}: fallback_assistant needs a server (assistant-request)")
        return self

    def matches(self, user: str) -> bool:
        return _pattern_matches(self.number, user)


def _pattern_matches(pattern: str, value: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


class TrunkConfig(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    host: str
    port: int = Field(5060, ge=1, le=65535)
    transport: Literal["udp", "tcp", "tls"] = Field("udp", description="tls: port defaults to 5061")
    srtp: SrtpMode = Field("off", description="SRTP (SDES) for outbound calls on this trunk")
    tls_verify: bool = Field(True, description="transport tls: verify the certificate against host")
    username: str | None = None
    password: str | None = None
    realm: str | None = None
    register_: bool = Field(False, alias="register", description="REGISTER to this trunk and keep it refreshed")
    expires: int = Field(3600, ge=60, description="REGISTER expiry we ask for, seconds")
    from_user: str | None = Field(None, description="user part of From for outbound calls (default: username)")

    @model_validator(mode="before")
    @classmethod
    def _tls_port(cls, data: Any) -> Any:
        # RFC 3261 §19.1: "the default port for sips is 5061".
        if isinstance(data, dict) and data.get("transport") == "tls" and "port" not in data:
            return {**data, "port": 5061}
        return data

    @model_validator(mode="after")
    def _check_register(self) -> TrunkConfig:
        if self.register_ and not self.username:
            raise ValueError(f"trunk {self.name!r} has register: true but no username")
        return self


class ProviderConfig(_Model):
    api_key: str | None = None
    base_url: str | None = None


class ProvidersConfig(_Model):
    deepgram: ProviderConfig = ProviderConfig()
    openai: ProviderConfig = ProviderConfig()
    elevenlabs: ProviderConfig = ProviderConfig()


class StorageConfig(_Model):
    path: str = Field(
        "var/voicegw.sqlite3",
        description="SQLite database (assistants created over the API, call records, the webhook outbox); "
        "its directory is created at start",
    )


class RecordingsConfig(_Model):
    path: str | None = Field(
        None,
        description="directory for call recordings (<path>/<YYYY-MM-DD>/<call id>.wav, relative to the config "
        "file); none: nothing is recorded. A call is recorded when its assistant's "
        "artifactPlan.recordingEnabled is true (Vapi's default)",
    )
    pcap: bool = Field(False, description="also write <call id>.pcap: the call's SIP messages and RTP/RTCP packets")
    echo: bool = Field(False, description="record echo calls too (caller left, echo right)")
    public_url: str | None = Field(
        None,
        description="base URL of this gateway's API in recording URLs (default: http://<http.listen>)",
    )


class WebhookConfig(_Model):
    """Delivery of server messages: at-least-once through the outbox, retried with exponential back-off."""

    timeout_seconds: float = Field(10.0, gt=0, description="one delivery attempt")
    initial_backoff_seconds: float = Field(1.0, gt=0)
    max_backoff_seconds: float = Field(300.0, gt=0)
    max_age_seconds: float = Field(86400.0, gt=0, description="give a message up after this long undelivered")
    signing_secret: str | None = Field(
        None, description="HMAC key for servers configured without a secret (none: such messages are unsigned)"
    )


class TransferConfig(_Model):
    allow: list[str] = Field(
        default_factory=list,
        description="destinations transfers may reach (toll-fraud guard): numbers or prefixes like '+1555*', "
        "SIP URIs or patterns like 'sip:*@pbx.example.com', or '*' for any. Empty: every transfer is refused",
    )

    def allows(self, destination: str) -> bool:
        """``destination``: an E.164-ish number or a sip:/sips: URI (parameters ignored)."""
        target = destination.strip()
        for pattern in self.allow:
            if pattern == "*":
                return True
            if "*" in pattern[:-1]:
                head, _, tail = pattern.partition("*")
                if target.startswith(head) and target.endswith(tail) and len(target) >= len(head) + len(tail):
                    return True
            elif _pattern_matches(pattern, target):
                return True
        return False


LogLevel = Literal["debug", "info", "warning", "error"]
# The subsystem names given to get_logger(...) in the gateway: the keys log.levels accepts.
LOG_SUBSYSTEMS = (
    "app", "call", "calls", "conversation", "media", "playout", "registration", "rtp", "sip", "store", "stt", "tts",
    "webhooks",
)


DEFAULT_SCANNER_USER_AGENTS = (
    "friendly-scanner", "sipvicious", "sipcli", "vaxsipuseragent", "pplsip", "iwar", "sip-scan", "sivus",
    "gulp", "sipv", "smap", "sipsak", "sundayddr", "vaxipuseragent", "sip-tester-scan",
)


class SecurityConfig(_Model):
    """Abuse protection at the SIP edge (see README "Security"). Everything is on by default."""

    trusted_sources: list[str] = Field(
        default_factory=list,
        description="CIDRs (or addresses) of carriers/PBXs: never rate-limited, INVITEs accepted without a "
        "challenge. Every trunk's host is trusted too (resolved at start)",
    )
    untrusted: Literal["auto", "reject", "challenge", "allow"] = Field(
        "auto",
        description="INVITEs from other sources: reject (403), challenge (Digest with digest_users) or allow; "
        "auto = challenge when digest_users are set, else reject when trusted_sources or trunks are configured, "
        "else allow (a gateway that knows no carrier yet)",
    )
    digest_users: dict[str, str] = Field(
        default_factory=dict, description="username -> password accepted in Digest answers to our challenge"
    )
    realm: str = Field("voicegw", description="Digest realm of our challenges")
    rate: float = Field(50.0, gt=0, description="requests per second one untrusted source may send (sustained)")
    burst: int = Field(100, ge=1, description="requests one untrusted source may send at once")
    reject_seconds: float = Field(
        10.0, ge=0, description="an over-rate source gets 503 + Retry-After this long, then silent drops"
    )
    retry_after: int = Field(30, ge=1, description="Retry-After (seconds) of rate-limit and overload 503s")
    max_sources: int = Field(10000, ge=16, description="sources tracked at once (least recently seen evicted)")
    source_idle_seconds: float = Field(120.0, gt=0, description="a source unseen this long is forgotten")
    ban_failures: int = Field(5, ge=1, description="failed Digest answers from one address that ban it")
    ban_window_seconds: float = Field(60.0, gt=0, description="window in which ban_failures are counted")
    ban_seconds: float = Field(600.0, gt=0, description="a banned address is silently ignored this long")
    scanner_user_agents: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SCANNER_USER_AGENTS),
        description="requests whose User-Agent contains one of these (case-insensitive) are dropped silently",
    )
    hide_unknown_numbers: bool = Field(
        True,
        description="an INVITE to a number that does not exist gets 403, the answer an untrusted source gets "
        "for any number, never 404 (no user enumeration)",
    )
    max_calls: int | None = Field(500, ge=1, description="concurrent calls (both directions); more → 503")
    max_calls_per_second: float | None = Field(None, gt=0, description="new inbound calls per second; more → 503")
    overload_lag_seconds: float = Field(
        0.1, gt=0, description="event-loop lag that sheds new INVITEs with 503 (existing calls continue), when "
        "5 of the last 10 probes (100 ms apart) see it"
    )
    overload_playout_late_seconds: float = Field(
        0.02, ge=0, description="a playout tick whose packets leave this late behind the 20 ms grid is late; "
        "overload_playout_late_share of the last 50 ticks late (or after skipped ticks) sheds new INVITEs"
    )
    overload_playout_late_share: float = Field(
        0.5, gt=0, le=1, description="share of the last 50 playout ticks (1 s) that must be late to shed"
    )
    overload_sip_backlog_fill: float = Field(
        0.5, gt=0, le=1, description="fill of the SIP UDP socket's kernel receive buffer (or a datagram dropped "
        "for lack of room) in 5 of the last 10 probes that sheds new INVITEs (Linux)"
    )
    overload_hold_seconds: float = Field(
        5.0, ge=0, description="keep shedding this long after the last overloaded observation"
    )
    outbound_allow: list[str] = Field(
        default_factory=list,
        description="destinations POST /call may dial (toll-fraud guard), same patterns as transfers.allow: "
        "'+1*', '+4420*', 'sip:*@pbx.example.com', '*'. Empty: every API call is refused",
    )

    @field_validator("trusted_sources")
    @classmethod
    def _check_cidrs(cls, v: list[str]) -> list[str]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an address or CIDR") from None
        return v

    def outbound_allows(self, destination: str) -> bool:
        return TransferConfig(allow=self.outbound_allow).allows(destination)


class LogConfig(_Model):
    level: LogLevel = Field("info", description="default level of every subsystem")
    levels: dict[str, LogLevel] = Field(
        default_factory=dict,
        description="level per subsystem, overriding `level` (e.g. {sip: debug, media: warning}); subsystems: "
        + ", ".join(LOG_SUBSYSTEMS),
    )
    format: Literal["json", "console", "auto"] = Field(
        "auto", description="json lines, console (human) or auto: json unless stdout is a terminal"
    )
    sip_trace: bool = Field(
        False,
        description="log every SIP message sent and received in full (event sip_send/sip_recv, subsystem sip, "
        "level info), Authorization and Proxy-Authorization values redacted",
    )

    @field_validator("levels")
    @classmethod
    def _known_subsystems(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(LOG_SUBSYSTEMS))
        if unknown:
            raise ValueError(f"unknown subsystem {', '.join(unknown)}; valid: {', '.join(LOG_SUBSYSTEMS)}")
        return value


class GatewayConfig(_Model):
    sip: SipConfig = SipConfig()
    rtp: RtpConfig = RtpConfig()
    http: HttpConfig = HttpConfig()
    assistants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="name -> Vapi assistant object (or a path to a JSON/YAML file)"
    )
    numbers: list[NumberRoute] = Field(default_factory=list, description="DID routing; first match wins")
    trunks: list[TrunkConfig] = Field(default_factory=list)
    providers: ProvidersConfig = ProvidersConfig()
    log: LogConfig = LogConfig()
    storage: StorageConfig = StorageConfig()
    recordings: RecordingsConfig = RecordingsConfig()
    webhooks: WebhookConfig = WebhookConfig()
    transfers: TransferConfig = TransferConfig()
    security: SecurityConfig = SecurityConfig()

    _parsed_assistants: dict[str, Assistant] = PrivateAttr(default_factory=dict)
    _warnings: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _parse_assistants(self) -> GatewayConfig:
        """Every assistant is validated at load (``assistants.<name>.<field>: problem``); keys the models do
        not know are kept and become :attr:`warnings`."""
        parsed: dict[str, Assistant] = {}
        problems: list[str] = []
        warnings: list[str] = []
        for name, raw in self.assistants.items():
            where = f"assistants.{name}"
            try:
                assistant = parse_assistant(raw, where=where)
            except AssistantError as exc:
                problems.append(str(exc))
                continue
            parsed[name] = assistant
            warnings.extend(f"{where}.{path}: unknown field, ignored" for path in unknown_fields(assistant))
        if problems:
            raise ValueError("; ".join(problems))
        self._parsed_assistants = parsed
        self._warnings = tuple(warnings)
        return self

    @property
    def warnings(self) -> tuple[str, ...]:
        """Things the loader should log: assistant fields this gateway does not know (kept, unused)."""
        return self._warnings

    def assistant(self, name: str) -> Assistant:
        """The validated assistant ``name`` (parsed once at load). Raises KeyError for an unknown name."""
        try:
            return self._parsed_assistants[name]
        except KeyError:
            known = ", ".join(sorted(self._parsed_assistants)) or "none defined"
            raise KeyError(f"unknown assistant {name!r} ({known})") from None

    @model_validator(mode="after")
    def _check_refs(self) -> GatewayConfig:
        for i, route in enumerate(self.numbers):
            for key in ("assistant", "fallback_assistant"):
                name = getattr(route, key)
                if name is not None and name not in self.assistants:
                    known = ", ".join(sorted(self.assistants)) or "none defined"
                    raise ValueError(f"numbers.{i}.{key}: unknown assistant {name!r} ({known})")
        names = [t.name for t in self.trunks]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"trunks: duplicate trunk name(s) {sorted(dupes)}")
        return self

    def route_for(self, user: str) -> NumberRoute | None:
        """The first number matching ``user`` that has no header conditions (see gateway.routing)."""
        return next((r for r in self.numbers if r.matches(user) and not r.headers), None)

    def trunk(self, name: str) -> TrunkConfig | None:
        return next((t for t in self.trunks if t.name == name), None)


def expand_env(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string of a YAML tree."""
    if isinstance(value, dict):
        return {k: expand_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{path}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"{path or '<root>'}: environment variable {name} is not set (use ${{{name}:-default}})")

    expanded = _ENV_RE.sub(repl, value)
    # A whole-value substitution that produced an empty string means "unset" (e.g. api_key: ${KEY:-}).
    if expanded == "" and _ENV_RE.fullmatch(value):
        return None
    return expanded


def _read_assistant_file(value: str, base: Path, where: str) -> dict[str, Any]:
    path = (base / value).resolve()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror}") from None
    try:
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where}: {path} is not valid JSON/YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{where}: {path} does not hold an assistant object")
    return loaded


def _load_assistant_files(raw: dict[str, Any], base: Path) -> None:
    """Read assistant files, and register the numbers' inline assistants and ``assistant_file`` under the
    name ``number:<number>`` (``fallback:<number>`` for an inline ``fallback_assistant``)."""
    assistants = raw.get("assistants")
    if assistants is None:
        assistants = raw["assistants"] = {}
    if not isinstance(assistants, dict):
        return
    for name, value in list(assistants.items()):
        if isinstance(value, str):
            assistants[name] = _read_assistant_file(value, base, f"assistants.{name}")
        elif value is None:
            assistants[name] = {}
    numbers = raw.get("numbers")
    if not isinstance(numbers, list):
        return
    for i, route in enumerate(numbers):
        if not isinstance(route, dict):
            continue
        number = route.get("number")
        file = route.pop("assistant_file", None)
        if file is not None:
            if "assistant" in route:
                raise ConfigError(f"numbers.{i}: give assistant or assistant_file, not both")
            if not isinstance(file, str):
                raise ConfigError(f"numbers.{i}.assistant_file: must be a path")
            route["assistant"] = _read_assistant_file(file, base, f"numbers.{i}.assistant_file")
        for key, prefix in (("assistant", "number"), ("fallback_assistant", "fallback")):
            inline = route.get(key)
            if isinstance(inline, dict):
                name = f"{prefix}:{number}"
                assistants[name] = inline
                route[key] = name


def _resolve_storage(raw: dict[str, Any], base: Path) -> None:
    """A relative ``storage.path`` (and the default) is relative to the config file's directory, so two
    gateways started from two config files never share a database by accident."""
    storage = raw.get("storage")
    if storage is None:
        storage = raw["storage"] = {}
    if not isinstance(storage, dict):
        return
    path = storage.get("path", StorageConfig.model_fields["path"].default)
    if isinstance(path, str) and path != ":memory:" and not Path(path).is_absolute():
        storage["path"] = str((base / path).resolve())
    recordings = raw.get("recordings")
    if isinstance(recordings, dict):
        where = recordings.get("path")
        if isinstance(where, str) and not Path(where).is_absolute():
            recordings["path"] = str((base / where).resolve())


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(lines)


def load_config_text(text: str, *, env: Mapping[str, str] | None = None, base: Path | None = None) -> GatewayConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("the configuration must be a YAML mapping at the top level")
    raw = expand_env(raw, os.environ if env is None else env)
    _load_assistant_files(raw, base or Path.cwd())
    if base is not None:
        _resolve_storage(raw, base)
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None


def load_config(path: str | Path | None, *, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Load a config file, or the embedded default config when ``path`` is None."""
    if path is None:
        text = resources.files("gateway").joinpath("default_config.yaml").read_text()
        return load_config_text(text, env=env)
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    return load_config_text(text, env=env, base=p.parent)


def config_json_schema() -> dict[str, Any]:
    return GatewayConfig.model_json_schema()


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
