"""Dynamic variables in assistant messages: ``{{name}}``, Vapi's default variables and the LiquidJS ``date`` filter.

Vapi renders prompts and messages with LiquidJS (docs: "Dynamic variables", sections "Default Variables"
and "Advanced date and time usage"). This module does the same with python-liquid: undefined variables
render as empty text, unknown filters are skipped (LiquidJS's default ``strictFilters: false``), and
``date`` takes LiquidJS's strftime formats plus an optional time zone, ``{{"now" | date: "%H:%M",
"Europe/London"}}``, where ``"now"`` is the call's ``now``. A syntax error raises :class:`TemplateError`;
:func:`render_safe` returns the template unchanged with the error instead, so a bad template never ends a
call. Error messages carry the position, never the variables' values.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import timezone as fixed_timezone
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from liquid import BoundTemplate, Environment, Mode, is_undefined
from liquid.exceptions import FilterArgumentError, LiquidError

if TYPE_CHECKING:
    from gateway.assistants.model import Assistant

__all__ = [
    "TemplateError",
    "check_template",
    "default_variables",
    "render",
    "render_assistant",
    "render_safe",
    "time_variables",
]

# LiquidJS's format when ``date`` is given none.
LIQUIDJS_DEFAULT_DATE_FORMAT = "%A, %B %-e, %Y at %-l:%M %P %z"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The ``now`` and the zone of the render in progress, for ``date`` (one environment serves every call).
_CLOCK: ContextVar[tuple[datetime, tzinfo]] = ContextVar("template_clock", default=(_EPOCH, UTC))
# Parsed templates kept: an assistant's templates are the same at every call (and few differ at all).
TEMPLATE_CACHE_SIZE = 512
_DIRECTIVE = re.compile(r"%([-_0^#:]*)(\d*)([A-Za-z%])")


class TemplateError(Exception):
    """A template that cannot be parsed or rendered. ``message`` says what and where (line, column)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _zone(name: object, default: tzinfo) -> tzinfo:
    """A LiquidJS time zone argument: an IANA name, or minutes *behind* UTC as JavaScript's
    ``getTimezoneOffset`` counts them (``360`` is UTC-6)."""
    if name is None or is_undefined(name):
        return default
    if isinstance(name, bool):
        raise FilterArgumentError(f"date: invalid time zone {name!r}", token=None)
    if isinstance(name, int | float):
        return fixed_timezone(-timedelta(minutes=name))
    if isinstance(name, str):
        if re.fullmatch(r"[+-]?\d+", name.strip()):
            return fixed_timezone(-timedelta(minutes=int(name)))
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise FilterArgumentError(f"date: unknown time zone {name!r}", token=None) from None
    raise FilterArgumentError(f"date: invalid time zone of type {type(name).__name__}", token=None)


def _to_datetime(value: object, now: datetime) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        text = value.strip()
        if text in ("now", "today"):
            return now
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return datetime.fromtimestamp(float(text), tz=UTC)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def strftime(moment: datetime, fmt: str) -> str:
    """LiquidJS strftime: the C directives with LiquidJS's flags (``-`` no padding, ``_`` space padding,
    ``0``, ``^`` upper case, ``#`` swap case), plus ``%q`` (ordinal suffix), ``%L`` (milliseconds),
    ``%N`` (fractional seconds, width digits), ``%:z`` (``+01:00``)."""

    def directive(m: re.Match[str]) -> str:
        flags, width, conv = m.group(1), m.group(2), m.group(3)
        if conv == "q":
            day = moment.day
            return "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
        if conv == "L":
            return f"{moment.microsecond // 1000:03d}"
        if conv == "N":
            return f"{moment.microsecond:06d}000"[: int(width) if width else 9]
        if conv == "z" and ":" in flags:
            offset = moment.strftime("%z")
            return f"{offset[:3]}:{offset[3:]}" if offset else ""
        return moment.strftime(f"%{flags.replace(':', '')}{width}{conv}")

    return _DIRECTIVE.sub(directive, fmt)


def _date(value: object, fmt: object = None, tz: object = None) -> str:
    """LiquidJS's ``date`` at the render's ``now`` and zone (:data:`_CLOCK`)."""
    if is_undefined(value):
        return ""
    now, zone = _CLOCK.get()
    moment = _to_datetime(value, now)
    if moment is None:
        return str(value)  # LiquidJS returns what it cannot read as a date unchanged
    if fmt is None or is_undefined(fmt):
        fmt = LIQUIDJS_DEFAULT_DATE_FORMAT
    try:
        return strftime(moment.astimezone(_zone(tz, zone)), str(fmt))
    except (ValueError, OverflowError) as exc:
        raise FilterArgumentError(f"date: {exc}", token=None) from None


class _Environment(Environment):
    """LiquidJS-like settings with limits, since templates can arrive from webhooks."""

    loop_iteration_limit: ClassVar[int | None] = 10_000
    output_stream_limit: ClassVar[int | None] = 100_000
    local_namespace_limit: ClassVar[int | None] = 100_000

    def __init__(self) -> None:
        super().__init__(tolerance=Mode.STRICT, strict_filters=False)
        self.add_filter("date", _date)


# One environment for the process. One per render (per call) cost ~150 µs, python-liquid's parser cache kept the
# last 128 of them, and older ones waited in reference cycles for a full collection: a gateway taking calls grew
# by an environment per call between full collections.
_ENV = _Environment()


@lru_cache(maxsize=TEMPLATE_CACHE_SIZE)
def _parse(template: str) -> BoundTemplate:
    """``template`` parsed (raises liquid's errors). A bound template renders any number of times."""
    return _ENV.from_string(template)


def _error(exc: LiquidError) -> TemplateError:
    where = exc.context()
    position = f" (line {where[0]}, column {where[1] + 1})" if where else ""
    return TemplateError(f"{exc.message}{position}")


def _resolve_zone(timezone: str) -> tzinfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise TemplateError(f"unknown time zone {timezone!r}") from None


def time_variables(now: datetime, *, timezone: str = "UTC") -> dict[str, Any]:
    """Vapi's time variables for ``now`` in ``timezone`` (Vapi: UTC): ``now`` "Jan 1, 2024 12:00 PM",
    ``date`` "Jan 1, 2024", ``time`` "12:00 PM", ``month`` "January", ``day`` 1, ``year`` 2024."""
    local = _aware(now).astimezone(_resolve_zone(timezone))
    return {
        "now": strftime(local, "%b %-d, %Y %-I:%M %p"),
        "date": strftime(local, "%b %-d, %Y"),
        "time": strftime(local, "%-I:%M %p"),
        "month": strftime(local, "%B"),
        "day": local.day,
        "year": local.year,
    }


def default_variables(
    now: datetime,
    *,
    customer_number: str | None = None,
    call_id: str | None = None,
    customer: Mapping[str, Any] | None = None,
    call: Mapping[str, Any] | None = None,
    timezone: str = "UTC",
) -> dict[str, Any]:
    """Vapi's default variables: the time ones, ``{{customer.number}}`` and any other ``customer`` property
    (``{{customer.X}}``), ``{{call.id}}``. Merge ``variableValues`` over the result."""
    customer_obj = dict(customer or {})
    if customer_number is not None:
        customer_obj["number"] = customer_number
    call_obj = dict(call or {})
    if call_id is not None:
        call_obj["id"] = call_id
    return {**time_variables(now, timezone=timezone), "customer": customer_obj, "call": call_obj}


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


class _Renderer:
    """Many templates rendered with the same values at the same ``now``."""

    def __init__(self, values: Mapping[str, Any], now: datetime | None, timezone: str) -> None:
        moment = _aware(now)
        self._clock = (moment, _resolve_zone(timezone))
        self._values = {**time_variables(moment, timezone=timezone), **values}

    def render(self, template: str) -> str:
        if "{" not in template:
            return template
        token = _CLOCK.set(self._clock)
        try:
            return _parse(template).render(self._values)
        except LiquidError as exc:
            raise _error(exc) from None
        finally:
            _CLOCK.reset(token)


def render(
    template: str, values: Mapping[str, Any], *, now: datetime | None = None, timezone: str = "UTC"
) -> str:
    """Render ``template`` with ``values`` over Vapi's time variables for ``now`` (default: the current time;
    a naive datetime is UTC). ``timezone`` is the zone of the time variables and of ``date`` without a zone
    argument. Raises :class:`TemplateError`."""
    return _Renderer(values, now, timezone).render(template)


def render_safe(
    template: str, values: Mapping[str, Any], *, now: datetime | None = None, timezone: str = "UTC"
) -> tuple[str, TemplateError | None]:
    """:func:`render`, or the template unchanged and the error."""
    try:
        return render(template, values, now=now, timezone=timezone), None
    except TemplateError as exc:
        return template, exc


def check_template(template: str) -> None:
    """Raise :class:`TemplateError` if ``template`` does not parse."""
    if "{" not in template:
        return
    try:
        _parse(template)
    except LiquidError as exc:
        raise _error(exc) from None


def render_assistant(
    assistant: Assistant,
    values: Mapping[str, Any],
    *,
    now: datetime | None = None,
    timezone: str = "UTC",
    on_error: Callable[[str, TemplateError], None] | None = None,
) -> Assistant:
    """The assistant with variables substituted in firstMessage, model.messages[*].content, endCallMessage,
    voicemailMessage, idle and hook messages, silenceTimeoutMessage, tool messages, transfer messages and
    the rules responder's replies. A field whose template fails is left as written and reported to
    ``on_error(path, error)`` (its dotted path, e.g. ``model.messages.0.content``); only an unknown
    ``timezone`` raises :class:`TemplateError`."""
    renderer = _Renderer(values, now, timezone)

    def substitute(path: str, text: str) -> str:
        try:
            return renderer.render(text)
        except TemplateError as exc:
            if on_error is not None:
                on_error(path, exc)
            return text

    return assistant.map_templates(substitute)
