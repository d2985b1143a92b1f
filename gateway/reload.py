"""SIGHUP configuration reload: re-read the config file, swap numbers, assistants, trunks, provider keys,
webhook and transfer settings into the running gateway, and leave calls in progress alone.

An invalid file changes nothing (``config_reload_failed`` names the key at fault). Settings that bind sockets or
files, or were built into long-lived objects at start (see :data:`RESTART_KEYS`), keep their old values and are
named in ``config_reload_restart_needed``. A call holds the assistant it was answered with, so a changed or
removed assistant only affects calls that arrive after the reload.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.observability.logging import get_logger

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["RESTART_KEYS", "ReloadPlan", "Reloader", "plan_reload"]

# section.field: what only a restart can change (sockets, the database file, objects built at start).
RESTART_KEYS: tuple[str, ...] = (
    "sip.listen",
    "sip.public_address",
    "sip.timers",
    "sip.force_rport",
    "sip.session_expires",
    "sip.min_se",
    "sip.tls",  # the TLS listener and its certificates are loaded at start (no certificate reload)
    "rtp.port_min",
    "rtp.port_max",
    "http.listen",
    "http.api_key",
    "storage.path",
    "log.level",
)

ConfigLoader = Callable[[str | Path | None], GatewayConfig]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReloadPlan:
    """The config to run on after a reload, and the restart-only keys whose new values were not applied."""

    config: GatewayConfig
    restart_needed: tuple[str, ...]


def plan_reload(old: GatewayConfig, new: GatewayConfig) -> ReloadPlan:
    """``new`` with every :data:`RESTART_KEYS` value put back to ``old``'s."""
    kept: dict[str, dict[str, Any]] = {}
    changed: list[str] = []
    for key in RESTART_KEYS:
        section, name = key.split(".")
        before = getattr(getattr(old, section), name)
        if getattr(getattr(new, section), name) != before:
            changed.append(key)
            kept.setdefault(section, {})[name] = before
    update = {section: getattr(new, section).model_copy(update=values) for section, values in kept.items()}
    # model_copy keeps the assistants parsed when ``new`` was validated (a private attribute).
    return ReloadPlan(config=new.model_copy(update=update) if update else new, restart_needed=tuple(changed))


class Reloader:
    """Re-reads ``path`` (None: the embedded default config) into ``gateway``; one reload at a time."""

    def __init__(self, gateway: Gateway, path: str | Path | None, *, loader: ConfigLoader = load_config) -> None:
        self.gateway = gateway
        self.path = path
        self.loader = loader
        self.log = get_logger("app")
        self._lock = asyncio.Lock()

    @property
    def source(self) -> str:
        return "embedded default" if self.path is None else str(self.path)

    async def reload(self) -> bool:
        """True when the new config was applied (possibly with restart-only keys left as they were)."""
        async with self._lock:
            gateway = self.gateway
            if gateway.ua.draining:
                self.log.warning("config_reload_skipped", reason="draining", source=self.source)
                return False
            try:
                new = self.loader(self.path)
            except ConfigError as exc:
                self.log.error("config_reload_failed", source=self.source, error=str(exc))
                return False
            plan = plan_reload(gateway.config, new)
            if plan.restart_needed:
                self.log.warning("config_reload_restart_needed", source=self.source, keys=list(plan.restart_needed))
            config = plan.config
            old = gateway.config
            gateway.config = config
            gateway.ua.config = config
            gateway.calls.config = config  # routes and assistants for INVITEs from now on
            if config.providers != old.providers:
                gateway.calls.providers.update(config.providers)
            if gateway.webhooks is not None:
                gateway.webhooks.reconfigure(config.webhooks)
            added, removed, kept = await gateway.registrations.reconfigure(config)
            for warning in config.warnings:
                self.log.warning("config_warning", detail=warning)
            self.log.info(
                "config_reloaded",
                source=self.source,
                numbers=len(config.numbers),
                assistants=len(config.assistants),
                trunks=len(config.trunks),
                registrations_added=added,
                registrations_removed=removed,
                registrations_kept=kept,
                calls_in_progress=len(gateway.calls.calls),
            )
            return True
