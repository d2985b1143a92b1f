"""Vapi assistants: the assistant object as pydantic models, and its template variables.

The lowest application layer: imports only the standard library, pydantic and python-liquid.
"""

from gateway.assistants.model import (
    Assistant,
    AssistantError,
    IdlePolicy,
    merge_overrides,
    override_variable_values,
    parse_assistant,
    unknown_fields,
)
from gateway.assistants.variables import (
    TemplateError,
    default_variables,
    render,
    render_assistant,
    render_safe,
)

__all__ = [
    "Assistant",
    "AssistantError",
    "IdlePolicy",
    "TemplateError",
    "default_variables",
    "merge_overrides",
    "override_variable_values",
    "parse_assistant",
    "render",
    "render_assistant",
    "render_safe",
    "unknown_fields",
]
