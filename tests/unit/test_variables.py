"""Dynamic variables: the examples of Vapi's "Dynamic variables" docs page, rendered with LiquidJS semantics."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

import liquid
import pytest

from gateway.assistants import parse_assistant
from gateway.assistants.variables import (
    TemplateError,
    check_template,
    default_variables,
    render,
    render_assistant,
    render_safe,
)

# Monday 1 January 2024, 23:45 UTC = 15:45 in Los Angeles (UTC-8), the docs' "03:45 PM".
WINTER = datetime(2024, 1, 1, 23, 45, tzinfo=UTC)
# Monday 1 July 2024, 16:30 UTC = 17:30 in London (BST, UTC+1), the docs' "17:30".
SUMMER = datetime(2024, 7, 1, 16, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("template", "now", "expected"),
    [
        # "Advanced date and time usage"
        ('{{"now" | date: "%A, %B %d, %Y, %I:%M %p", "America/Los_Angeles"}}', WINTER,
         "Monday, January 01, 2024, 03:45 PM"),
        ('{{"now" | date: "%H:%M", "Europe/London"}}', SUMMER, "17:30"),
        ('{{"now" | date: "%A"}}', datetime(2024, 1, 2, 12, 0, tzinfo=UTC), "Tuesday"),
        ('Hello, your number is {{customer.number}} and the time is {{"now" | date: "%I:%M %p", "America/New_York"}}',
         WINTER, "Hello, your number is +15551234567 and the time is 06:45 PM"),
        # "Common formats" (no zone: UTC)
        ('{{"now" | date: "%Y-%m-%d"}}', datetime(2024, 1, 1, 15, 45, tzinfo=UTC), "2024-01-01"),
        ('{{"now" | date: "%I:%M %p"}}', datetime(2024, 1, 1, 15, 45, tzinfo=UTC), "03:45 PM"),
        ('{{"now" | date: "%H:%M"}}', datetime(2024, 1, 1, 15, 45, tzinfo=UTC), "15:45"),
        ('{{"now" | date: "%A"}}', datetime(2024, 1, 1, 15, 45, tzinfo=UTC), "Monday"),
        ('{{"now" | date: "%b %d, %Y"}}', datetime(2024, 1, 1, 15, 45, tzinfo=UTC), "Jan 01, 2024"),
        # "Default Variables" at the docs' example time
        ("{{now}}|{{date}}|{{time}}|{{month}}|{{day}}|{{year}}", datetime(2024, 1, 1, 12, 0, tzinfo=UTC),
         "Jan 1, 2024 12:00 PM|Jan 1, 2024|12:00 PM|January|1|2024"),
        # "Overview": firstMessage "Hello, {{name}}!" with variableValues {"name": "John"}
        ("Hello, {{name}}!", WINTER, "Hello, John!"),
    ],
)
def test_docs_examples(template: str, now: datetime, expected: str) -> None:
    values = {**default_variables(now, customer_number="+15551234567", call_id="c-1"), "name": "John"}
    assert render(template, values, now=now) == expected


def test_the_same_instant_in_london_and_utc_in_summer() -> None:
    assert render('{{"now" | date: "%H:%M %Z"}}', {}, now=SUMMER) == "16:30 UTC"
    assert render('{{"now" | date: "%H:%M %Z", "Europe/London"}}', {}, now=SUMMER) == "17:30 BST"
    # The render's own zone applies to the default variables and to date without a zone argument.
    assert render('{{time}} {{"now" | date: "%H:%M"}}', {}, now=SUMMER, timezone="Europe/London") == "5:30 PM 17:30"


def test_default_variables_carry_the_customer_and_the_call() -> None:
    values = default_variables(WINTER, customer_number="+15550001111", call_id="abc", customer={"name": "Ann"})
    assert render("{{customer.number}} {{customer.name}} {{call.id}}", values, now=WINTER) == "+15550001111 Ann abc"


def test_variable_values_override_the_defaults() -> None:
    assert render("{{month}}", {"month": "Smarch"}, now=WINTER) == "Smarch"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("[{{unknown}}]", "[]"),
        ("[{{customer.unknown}}]", "[]"),
        ("[{{a.b.c}}]", "[]"),
        ("[{{unknown | upcase}}]", "[]"),
        ("[{{ 'x' | nosuchfilter }}]", "[x]"),  # LiquidJS strictFilters: false skips unknown filters
    ],
)
def test_undefined_variables_and_filters_render_empty_like_liquidjs(template: str, expected: str) -> None:
    assert render(template, {"customer": {"number": "+1555"}}, now=WINTER) == expected


def test_liquid_logic_works_on_values() -> None:
    template = "{% if vip %}Welcome back, {{name | capitalize}}.{% else %}Hello.{% endif %}"
    assert render(template, {"vip": True, "name": "ann"}, now=WINTER) == "Welcome back, Ann."
    assert render(template, {}, now=WINTER) == "Hello."


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        # LiquidJS's own example: a numeric zone is minutes behind UTC (JavaScript getTimezoneOffset).
        ('{{ "1990-12-31T23:00:00Z" | date: "%Y-%m-%dT%H:%M:%S", 360 }}', "1990-12-31T17:00:00"),
        ('{{ "now" | date: "%-d%q %B" }}', "1st July"),
        ('{{ "2024-07-22T00:00:00Z" | date: "%-d%q" }}', "22nd"),
        ('{{ "2024-07-13T00:00:00Z" | date: "%-d%q" }}', "13th"),
        ('{{ "now" | date: "%:z", "Asia/Kolkata" }}', "+05:30"),
        ('{{ "now" | date: "%^a %L" }}', "MON 000"),
        ("{{ 0 | date: '%Y' }}", "1970"),
        ("{{ 'not a date' | date: '%Y' }}", "not a date"),
    ],
)
def test_liquidjs_date_filter_details(template: str, expected: str) -> None:
    assert render(template, {}, now=SUMMER) == expected


def test_syntax_error_raises_with_position_and_no_values() -> None:
    with pytest.raises(TemplateError, match=r"line 1, column \d+") as info:
        render("Hi {{ name ", {"name": "secret-value"}, now=WINTER)
    assert "secret-value" not in str(info.value)
    with pytest.raises(TemplateError):
        check_template("{% if x %}unclosed")
    check_template("fine {{ x }}")


def test_render_safe_returns_the_template_unchanged_with_the_error() -> None:
    text, error = render_safe("Hi {{ name ", {"name": "Bob"}, now=WINTER)
    assert text == "Hi {{ name " and isinstance(error, TemplateError)
    assert render_safe("Hi {{ name }}", {"name": "Bob"}, now=WINTER) == ("Hi Bob", None)


def test_an_unknown_time_zone_is_a_template_error() -> None:
    _, error = render_safe('{{"now" | date: "%H", "Mars/Olympus"}}', {}, now=WINTER)
    assert error is not None and "Mars/Olympus" in error.message
    with pytest.raises(TemplateError, match="unknown time zone"):
        render("x", {}, now=WINTER, timezone="Nowhere/Land")


def test_a_runaway_loop_is_stopped() -> None:
    with pytest.raises(TemplateError):
        render("{% for i in (1..1000000) %}x{% endfor %}", {}, now=WINTER)


def test_naive_now_is_utc() -> None:
    assert render("{{time}}", {}, now=datetime(2024, 1, 1, 9, 5)) == "9:05 AM"


def test_render_assistant_substitutes_every_message_field() -> None:
    assistant = parse_assistant(
        {
            "firstMessage": "Hello {{name}}",
            "endCallMessage": "Bye {{name}}",
            "voicemailMessage": "Call {{name}} back",
            "model": {
                "provider": "openai",
                "model": "gpt-4o",
                "messages": [{"role": "system", "content": "Caller: {{customer.number}}, today {{date}}"}],
                "tools": [
                    {"type": "transferCall", "messages": [{"type": "request-start", "content": "Hold on {{name}}"}],
                     "destinations": [{"type": "number", "number": "+15550001111", "message": "Transferring {{name}}"}]},
                ],
            },
            "messagePlan": {"idleMessages": ["Still there, {{name}}?"], "silenceTimeoutMessage": "Ending, {{name}}"},
            "hooks": [{"on": "customer.speech.timeout", "do": [{"type": "say", "exact": ["Hello {{name}}?"]}]}],
        }
    )
    values = {**default_variables(WINTER, customer_number="+15551234567"), "name": "Ann"}
    rendered = render_assistant(assistant, values, now=WINTER)
    assert rendered.first_message == "Hello Ann"
    assert rendered.end_call_message == "Bye Ann"
    assert rendered.voicemail_message == "Call Ann back"
    assert rendered.model.messages[0].content == "Caller: +15551234567, today Jan 1, 2024"
    tool = rendered.model.tools[0]
    assert tool.messages[0].content == "Hold on Ann"
    assert tool.type == "transferCall" and tool.destinations[0].message == "Transferring Ann"
    assert rendered.message_plan.idle_messages == ["Still there, Ann?"]
    assert rendered.message_plan.silence_timeout_message == "Ending, Ann"
    policy = rendered.idle_policy()
    assert policy is not None and policy.messages == ("Hello Ann?",)
    assert assistant.first_message == "Hello {{name}}"  # the configured assistant is untouched


def test_render_assistant_leaves_a_broken_field_as_written_and_reports_it() -> None:
    # A syntax error can only reach a call through a path that skipped parse_assistant's check.
    assistant = parse_assistant({"firstMessage": "Hi {{name}}", "endCallMessage": "Bye"})
    assistant = assistant.model_copy(update={"end_call_message": "Bye {{ name "})
    errors: list[str] = []
    rendered = render_assistant(assistant, {"name": "Ann"}, now=WINTER, on_error=lambda path, e: errors.append(path))
    assert rendered.first_message == "Hi Ann"
    assert rendered.end_call_message == "Bye {{ name "
    assert errors == ["endCallMessage"]


def test_rendering_for_many_calls_keeps_no_environment_per_call() -> None:
    """Each call renders its assistant; what a render builds must not outlive it. An environment per render was
    kept by python-liquid's parser cache (the last 128) and then left in reference cycles for a full collection:
    a gateway taking calls grew by one environment per call between full collections."""
    def environments() -> int:
        return sum(isinstance(obj, liquid.Environment) for obj in gc.get_objects())

    assistant = parse_assistant({"firstMessage": "Hello {{name}}, it is {{\"now\" | date: \"%H:%M\"}}.",
                                 "model": {"provider": "rules", "messages": [{"role": "system", "content": "{{name}}"}]}})
    render_assistant(assistant, {"name": "Ada"}, now=WINTER)
    before = environments()
    for n in range(200):
        rendered = render_assistant(assistant, {"name": f"caller {n}"}, now=WINTER)
        assert rendered.first_message == f"Hello caller {n}, it is 23:45."
    assert environments() == before
