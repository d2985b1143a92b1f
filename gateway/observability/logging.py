"""structlog setup: JSON lines (console when stdout is a terminal), a level per subsystem, call fields via contextvars.

Every logger comes from :func:`get_logger` and carries ``subsystem=<name>``. A line is emitted when its level is at
least its subsystem's level (``log.levels``), else the default level (``log.level``). Filtering is two-staged so a
disabled line costs next to nothing: the bound logger class filters at the lowest configured level (its methods
below that level are no-ops, nothing is formatted), and the first processor drops lines below their own
subsystem's level before any other processor runs.

The fields of a call (``call_id``, ``sip_call_id``, ``number``, ``direction``) are bound with
:func:`bind_call_context` inside the call's own task; tasks copy the context when created, so every line logged
from the call's tasks carries them.

SIP message traces go through :func:`redact_sip_message`: Authorization and Proxy-Authorization values are
secret-equivalent (RFC 2617 §3.2.2: the digest ``response`` allows an offline guess of the password).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Literal

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_METHOD_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}

LogFormat = Literal["json", "console", "auto"]

CALL_FIELDS = ("call_id", "sip_call_id", "number", "direction")
REDACTED = "[redacted]"
# Header names whose values must never reach a log (compared lower-case; neither has a compact form).
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization"})
_AUTH_SCHEMES = frozenset({"digest", "basic", "bearer"})  # kept in a trace; anything else could be the secret
_HEADER_LINE = re.compile(r"^([!-9;-~]+)[ \t]*:")


class SubsystemLevelFilter:
    """First processor: drop a line below its subsystem's level (``structlog.DropEvent``)."""

    __slots__ = ("default", "levels")

    def __init__(self, default: int, levels: Mapping[str, int]) -> None:
        self.default = default
        self.levels = dict(levels)

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        threshold = self.levels.get(event_dict.get("subsystem", ""), self.default)
        if _METHOD_LEVELS.get(method_name, logging.INFO) < threshold:
            raise structlog.DropEvent
        return event_dict


def configure_logging(
    level: str = "info",
    *,
    levels: Mapping[str, str] | None = None,
    log_format: LogFormat = "auto",
    json: bool | None = None,
    stream: Any = None,
) -> None:
    """Configure structlog for the process.

    ``levels`` maps a subsystem (the name given to :func:`get_logger`) to its level; the others use ``level``.
    ``log_format`` ``auto`` writes JSON lines unless stdout is a terminal (``json`` overrides it, for callers that
    decide themselves). ``stream`` defaults to stdout.
    """
    out = stream if stream is not None else sys.stdout
    if json is None:
        json = log_format == "json" or (log_format == "auto" and not out.isatty())
    default = _LEVELS[level]
    per_subsystem = {name: _LEVELS[value] for name, value in (levels or {}).items()}
    floor = min([default, *per_subsystem.values()])
    processors: list[Any] = []
    if per_subsystem:
        processors.append(SubsystemLevelFilter(default, per_subsystem))
    processors += [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(floor),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A logger for one subsystem; ``name`` is a key ``log.levels`` accepts (see ``LOG_SUBSYSTEMS`` in config)."""
    return structlog.get_logger(subsystem=name)


def bind_call_context(*, call_id: str, sip_call_id: str, number: str | None, direction: str) -> None:
    """Bind a call's fields to the current context: call it first thing in the call's own task."""
    structlog.contextvars.bind_contextvars(
        call_id=call_id, sip_call_id=sip_call_id, number=number, direction=direction
    )


def redact_sip_message(text: str) -> str:
    """``text`` (one SIP message) with the values of Authorization and Proxy-Authorization replaced.

    The auth scheme stays (``Digest [redacted]``) so a trace still shows that credentials were sent. Folded
    continuation lines of a redacted header (§7.3.1) are dropped with it; the body is left as it is.
    """
    head, sep, body = text.partition("\r\n\r\n")
    if not sep:
        head, sep, body = text.partition("\n\n")
    newline = "\r\n" if "\r\n" in head else "\n"
    lines = head.split(newline)
    out: list[str] = []
    redacting = False
    for line in lines:
        if redacting and line[:1] in (" ", "\t"):
            continue  # folded continuation of a redacted value
        redacting = False
        match = _HEADER_LINE.match(line)
        if match is not None and match.group(1).lower() in _SECRET_HEADERS:
            words = line[match.end():].split(None, 1)
            scheme = words[0] if words and words[0].lower() in _AUTH_SCHEMES else ""
            out.append(f"{match.group(1)}: {scheme} {REDACTED}" if scheme else f"{match.group(1)}: {REDACTED}")
            redacting = True
        else:
            out.append(line)
    return newline.join(out) + sep + body
