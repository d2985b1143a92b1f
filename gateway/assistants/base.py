"""The common base of the Vapi assistant models and the small validators they share.

Vapi's assistant JSON (``CreateAssistantDTO`` in Vapi's OpenAPI document) is written in camelCase; the models
expose snake_case attributes with camelCase aliases, keep fields they do not know (``extra="allow"``, reported
by :func:`gateway.assistants.model.unknown_fields`) and are immutable once validated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

__all__ = ["VapiModel", "check_http_url", "check_regex", "tag_checker"]


class VapiModel(BaseModel):
    """Base of every assistant model: camelCase aliases, snake_case attributes, unknown keys kept."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True)


def check_regex(pattern: str, flags: int = 0) -> str:
    """Compile ``pattern`` now so a bad expression fails at load, not during a call."""
    try:
        re.compile(pattern, flags)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


def check_http_url(url: str) -> str:
    if not re.match(r"^https?://[^\s/]+", url):
        raise ValueError(f"url {url!r} must start with http:// or https:// and name a host")
    return url


def tag_checker(
    key: str, supported: Sequence[str], *, aliases: Mapping[str, str] | None = None
) -> Callable[[Any], Any]:
    """A before-validator for a union told apart by ``key`` (``provider``, ``type``): it names the field
    and lists what is supported when the tag is missing or unknown, and rewrites aliases
    (``elevenlabs`` → ``11labs``). Values that are not objects pass through to the normal type error."""
    alias_map = dict(aliases or {})
    listing = ", ".join(supported)

    def check(value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        tag = value.get(key)
        if tag is None:
            raise PydanticCustomError("missing_tag", "missing {key} (supported: {supported})",
                                      {"key": key, "supported": listing})
        if isinstance(tag, str) and tag in alias_map:
            return {**value, key: alias_map[tag]}
        if tag not in supported:
            raise PydanticCustomError(
                "unsupported_tag",
                "unsupported {key} {tag} (supported: {supported})",
                {"key": key, "tag": repr(tag), "supported": listing},
            )
        return value

    return check
