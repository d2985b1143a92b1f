"""Voice formatting plan: every example of the Vapi docs page and schema, step order, replacements, switches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.pipeline.formatter import (
    DEFAULT_FORMATTERS,
    FORMATTER_NAMES,
    ExactReplacement,
    FormatOptions,
    FormatPlanError,
    RegexOption,
    RegexReplacement,
    format_dollar_amounts,
    format_for_voice,
    format_numbers,
    number_to_words,
    ordinal_to_words,
    remove_asterisks,
    remove_phrases_in_asterisks,
)


def only(*names: str, **kwargs: object) -> FormatOptions:
    return FormatOptions(formatters_enabled=names, **kwargs)  # type: ignore[arg-type]


EMAIL_REGEX = r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Z|a-z]{2,}\b"

# (step, formatters applied, input, expected): one row per example of the docs page ("How voice input
# formatting works" table and the overview list) and of the schema's FormatPlan description.
DOCS_EXAMPLES = [
    ("1 removeAngleBracketContent", (), "Hello <tag> world", "Hello  world"),
    ("2 removeMarkdownSymbols", ("markdown",), "**Wanted** to say *hi*", "**Wanted** to say *hi*"),
    ("3 removePhrasesInAsterisks", ("asterisk",), "**Wanted** to say *hi*", " to say"),
    ("4 replaceNewLinesWithPeriods", ("newline",), "Hello  world\n to say\nWe have NASA",
     "Hello  world .  to say . We have NASA"),
    ("5 replaceColonsWithPeriods", ("colon",), "price: $42.50", "price. $42.50"),
    ("6 formatAcronyms", ("acronym",), "NASA and .NET", "nasa and .net"),
    ("7 formatDollarAmounts", ("dollarAmount",), "$42.50", "forty two dollars and fifty cents"),
    ("8 formatEmails", ("email",), "JOHN.DOE@example.COM", "JOHN dot DOE at example dot COM"),
    ("9 formatDates", ("date",), "2023 05 10", "Wednesday, May 10, 2023"),
    ("10 formatTimes", ("time",), "14:00", "14"),
    ("11 formatDistances", ("distance",), "5km", "5 kilometers"),
    ("11 formatUnits", ("unit",), "43 lb", "forty three pounds"),
    ("11 formatPercentages", ("percentage",), "50%", "50 percent"),
    ("11 formatPhoneNumbers", ("phoneNumber",), "123-456-7890", "1 2 3 4 5 6 7 8 9 0"),
    ("12 formatNumbers (negative)", ("number",), "-9", "minus nine"),
    ("12 formatNumbers (decimal)", ("number",), "2.5", "two point five"),
    ("12 formatNumbers (year)", ("number",), "2023", "2023"),
    ("13 removeAsterisks", ("stripAsterisk",), "**Bold** and *italic*", "Bold and italic"),
    ("schema numberToDigitsCutoff: above the cutoff", ("number",), "12345", "1 2 3 4 5"),
    ("schema numberToDigitsCutoff: below the cutoff", ("number",), "1200", "twelve hundred"),
    ("overview: currency", ("dollarAmount",), "$42.50", "forty two dollars and fifty cents"),
    ("overview: phone numbers", ("phoneNumber",), "123-456-7890", "1 2 3 4 5 6 7 8 9 0"),
]


@pytest.mark.parametrize(("step", "formatters", "before", "after"), DOCS_EXAMPLES, ids=[r[0] for r in DOCS_EXAMPLES])
def test_docs_examples(step: str, formatters: tuple[str, ...], before: str, after: str) -> None:
    assert format_for_voice(before, only(*formatters)) == after


REPLACEMENT_EXAMPLES = [
    ("docs step 14", [ExactReplacement(key="ST", value="STREET"), ExactReplacement(key="RD", value="ROAD")],
     "320 ST 21 RD", "320 STREET 21 ROAD"),
    ("overview: ST -> STREET", [ExactReplacement(key="ST", value="STREET")], "Main ST", "Main STREET"),
    ("docs example 1 / schema", [ExactReplacement(key="hello", value="hi")], "hello there", "hi there"),
    ("docs example 2", [RegexReplacement(regex=r"\b[a-zA-Z]{5}\b", value="hi")], "hello big world",
     "hi big hi"),
    ("schema: phrase", [ExactReplacement(key="good morning", value="good day")], "good morning, Sam",
     "good day, Sam"),
    ("schema: name", [ExactReplacement(key="John Doe", value="Jane Smith")], "Ask for John Doe.",
     "Ask for Jane Smith."),
    ("schema: acronym", [ExactReplacement(key="AI", value="Artificial Intelligence")], "AI is here",
     "Artificial Intelligence is here"),
    ("schema: phonetic", [ExactReplacement(key="Vapi", value="Vappy")], "Welcome to Vapi", "Welcome to Vappy"),
    ("schema: replaceAllEnabled false", [ExactReplacement(key="hello", value="hi", replace_all_enabled=False)],
     "hello world, hello universe", "hi world, hello universe"),
    ("schema: replaceAllEnabled true", [ExactReplacement(key="hello", value="hi", replace_all_enabled=True)],
     "hello world, hello universe", "hi world, hi universe"),
    ("schema: all numbers", [RegexReplacement(regex=r"\d+", value="some number")], "call 5 or 42",
     "call some number or some number"),
    ("schema: emails", [RegexReplacement(regex=EMAIL_REGEX, value="[EMAIL]")], "mail jo.x@ab.co now",
     "mail [EMAIL] now"),
    ("schema: phone groups", [RegexReplacement(regex=r"(\d{3})(\d{3})(\d{4})", value="($1) $2-$3")],
     "dial 5551234567", "dial (555) 123-4567"),
    ("schema: colour", [RegexReplacement(regex="colou?r", value="hue")], "color and colour", "hue and hue"),
]


@pytest.mark.parametrize(("source", "replacements", "before", "after"), REPLACEMENT_EXAMPLES,
                         ids=[r[0] for r in REPLACEMENT_EXAMPLES])
def test_replacement_examples(source: str, replacements: list[ExactReplacement | RegexReplacement],
                              before: str, after: str) -> None:
    assert format_for_voice(before, only(replacements=tuple(replacements))) == after


def test_cutoff_set_higher_spells_large_numbers_out() -> None:
    # docs: "To spell out larger numbers, set the cutoff higher (e.g., 300000)."
    assert format_for_voice("12345", only("number", number_to_digits_cutoff=300000)) == (
        "twelve thousand three hundred forty five")
    assert format_for_voice("2024 and 2026", only("number", number_to_digits_cutoff=0)) == "2024 and 2026"
    assert format_for_voice("7 and 12", only("number", number_to_digits_cutoff=9)) == "seven and 1 2"


# --- the whole default run -------------------------------------------------------------------------------

END_TO_END = [
    ("Your total is $1,000.50, due 2024-03-01 at 9:05 PM.",
     "Your total is one thousand dollars and fifty cents, due Friday, March first, 2024 at nine oh five PM."),
    ("Call (555) 123-4567 or write to jane_doe@acme.io!",
     "Call five five five one two three four five six seven or write to jane underscore doe at acme dot io!"),
    ("**Note**: it is 72°F, 50% humidity\nand 3.5 km to go.",
     "Note. it is seventy two degrees Fahrenheit, fifty percent humidity . and three point five kilometers to go."),
    ("The HTML page weighs 5 GB. Ask NASA.", "The H T M L page weighs five gigabytes. Ask nasa."),
    ("Order 12345 ships on the 21st, ID 007.", "Order 1 2 3 4 5 ships on the twenty first, ID 0 0 7."),
    ("Pause <break time=\"1s\"/> then <spell>ABC</spell>, drop <b>this</b>.",
     "Pause <break time=\"1s\"/> then <spell>ABC</spell>, drop this."),
    ("if a < b and c > d", "if a < b and c > d"),
]


@pytest.mark.parametrize(("before", "after"), END_TO_END)
def test_default_run_end_to_end(before: str, after: str) -> None:
    assert format_for_voice(before, FormatOptions()) == after


def test_exact_replacement_keys_survive_the_acronym_formatter() -> None:
    # Step 6 would space out "ST" and "RD" before step 14 could expand them; the user's key wins.
    options = FormatOptions(replacements=(ExactReplacement(key="ST", value="STREET", replace_all_enabled=True),
                                          ExactReplacement(key="RD", value="ROAD")))
    assert format_for_voice("320 ST 21 RD", options) == "three hundred twenty STREET twenty one ROAD"
    assert format_for_voice("The SDK", options) == "The S D K"


# --- order -----------------------------------------------------------------------------------------------

def test_order_asterisk_phrases_before_stripping_asterisks() -> None:
    text = "**Wanted** to say *hi*"
    options = only("asterisk", "stripAsterisk")
    documented = remove_asterisks(remove_phrases_in_asterisks(text, options), options)
    reversed_order = remove_phrases_in_asterisks(remove_asterisks(text, options), options)
    assert documented == " to say"
    assert reversed_order == "Wanted to say hi"
    # the order of formattersEnabled does not matter: the documented order does
    assert format_for_voice(text, only("stripAsterisk", "asterisk")) == documented


def test_order_dollar_amounts_before_numbers() -> None:
    options = only("dollarAmount", "number")
    assert format_numbers(format_dollar_amounts("$42.50", options), options) == "forty two dollars and fifty cents"
    assert format_dollar_amounts(format_numbers("$42.50", options), options) == "$forty two point five zero"
    assert format_for_voice("$42.50", only("number", "dollarAmount")) == "forty two dollars and fifty cents"


def test_colons_of_times_are_left_for_the_time_formatter() -> None:
    assert format_for_voice("Open: 14:00", only("colon", "time")) == "Open. 14"
    assert format_for_voice("see https://x.io", only("colon")) == "see https://x.io"


# --- switches --------------------------------------------------------------------------------------------

@given(st.text())
def test_disabled_returns_the_text_unchanged(text: str) -> None:
    options = FormatOptions(enabled=False, replacements=(ExactReplacement(key="a", value="b"),))
    assert format_for_voice(text, options) == text


@given(st.lists(st.sampled_from([*"aZ09 .,:;-$%*_~`#<>/@\n()'\"°+", "ST", "<flush />", "km", "lb", "12:30"]))
       .map("".join))
def test_any_text_formats_without_error(text: str) -> None:
    format_for_voice(text, only(*FORMATTER_NAMES))
    format_for_voice(text, FormatOptions())


def test_formatters_enabled_subset_runs_only_those() -> None:
    text = "NASA paid $5 for 2.5 kg *twice*"
    assert format_for_voice(text, only("dollarAmount")) == "NASA paid five dollars for 2.5 kg *twice*"
    assert format_for_voice(text, only("acronym", "stripAsterisk")) == "nasa paid $5 for 2.5 kg twice"
    assert format_for_voice(text, only()) == text  # angle-bracket removal and replacements only


def test_default_formatters_leave_phrases_in_asterisks() -> None:
    assert "asterisk" not in DEFAULT_FORMATTERS
    assert format_for_voice("I *smile* now", FormatOptions()) == "I smile now"
    assert format_for_voice("I *smile* now", only(*DEFAULT_FORMATTERS, "asterisk")) == "I now"


def test_unknown_formatter_name_is_a_plan_error() -> None:
    with pytest.raises(FormatPlanError, match="dollars"):
        FormatOptions(formatters_enabled=("dollars",))


# --- replacements ----------------------------------------------------------------------------------------

def test_exact_replacement_matches_whole_words_only() -> None:
    options = only(replacements=(ExactReplacement(key="Vapi", value="Vappy", replace_all_enabled=True),))
    assert format_for_voice("Vapid Vapi, Vapi's", options) == "Vapid Vappy, Vappy's"
    assert format_for_voice("vapi", options) == "vapi"  # case-sensitive


def test_exact_replacement_value_is_literal() -> None:
    options = only(replacements=(ExactReplacement(key="x", value=r"\1 $1"),))
    assert format_for_voice("x y", options) == r"\1 $1 y"


def test_replacements_apply_in_order() -> None:
    options = only(replacements=(ExactReplacement(key="a", value="b"), ExactReplacement(key="b", value="c")))
    assert format_for_voice("a", options) == "c"


@pytest.mark.parametrize(("regex", "value", "opts", "before", "after"), [
    ("hello", "hi", (), "Hello hello", "Hello hi"),
    ("hello", "hi", (RegexOption(type="ignore-case", enabled=True),), "Hello hello", "hi hi"),
    ("hello", "hi", (RegexOption(type="ignore-case", enabled=False),), "Hello", "Hello"),
    ("cat", "dog", (RegexOption(type="whole-word", enabled=True),), "cat catalog", "dog catalog"),
    ("^a", "b", (), "a\na", "b\na"),
    ("^a", "b", (RegexOption(type="multi-line", enabled=True),), "a\na", "b\nb"),
    (r"(?<first>\w+) (?<last>\w+)", "$<last>, $<first>", (), "Ada Lovelace", "Lovelace, Ada"),
    (r"(?<x>\w)\k<x>", "?", (), "aab", "?b"),
    (r"o", "[$&$$]", (), "foo", "f[o$][o$]"),
    (r"(a)", "$2$1", (), "a", "$2a"),
])
def test_regex_replacement_javascript_semantics(regex: str, value: str, opts: tuple[RegexOption, ...],
                                                before: str, after: str) -> None:
    assert format_for_voice(before, only(replacements=(RegexReplacement(regex=regex, value=value,
                                                                        options=opts),))) == after


def test_invalid_regex_is_a_plan_error_at_construction() -> None:
    with pytest.raises(FormatPlanError, match="invalid replacement regex"):
        RegexReplacement(regex="(unclosed", value="x")
    with pytest.raises(FormatPlanError):
        RegexReplacement(regex=r"(\w)\k<missing>", value="x")
    with pytest.raises(FormatPlanError):
        ExactReplacement(key="", value="x")


# --- individual formatters -------------------------------------------------------------------------------

@pytest.mark.parametrize(("formatter", "before", "after"), [
    ("markdown", "# Title\n- item_one\n`code` ~~gone~~ __bold__ [link](http://x.y)", "Title\nitem_one\ncode gone bold link"),
    ("quote", "He said \"don't\" and 'go'", "He said don't and go"),
    ("dash", "Wait - no \u2014 yes, 5\u201310 days, well-known, -3", "Wait, no, yes, 5 to 10 days, well-known, -3"),
    ("newline", "One.\n\n\nTwo", "One. . Two"),
    ("acronym", "FBI TV PDF 5 GB 3 PM", "FBI T V P D F 5 GB 3 PM"),
    ("dollarAmount", "$1 $0.99 $2.5M $3 million $100 $1.5 $0.125", "one dollar ninety nine cents "
     "two point five million dollars three million dollars one hundred dollars one dollar and fifty cents "
     "zero point one two five dollars"),
    ("date", "05/10/2023 2023-02-30 2023/12/25", "Wednesday, May 10, 2023 2023-02-30 Monday, December 25, 2023"),
    ("time", "9:30 9:05 23:59 24:00 1:2", "9 30 9 oh 5 23 59 24:00 1:2"),
    ("distance", "1 mi 10ft 2.5 m 3 km/h", "1 mile 10 feet 2.5 meters 3 km/h"),
    ("unit", "1 lb 12 kg 30 mph 100°C 2 hrs", "one pound twelve kilograms thirty miles per hour "
     "one hundred degrees Celsius two hours"),
    ("phoneNumber", "+1 555 123 4567 (555) 123-4567 555-1234 1234-5678",
     "plus 1 5 5 5 1 2 3 4 5 6 7 5 5 5 1 2 3 4 5 6 7 5 5 5 1 2 3 4 1234-5678"),
    ("number", "0 13 100 1,000,000 -2.05 1st 2nd 3rd 12th v2 1.2.3 May 3 1900 2099 2100",
     "zero thirteen one hundred one million minus two point zero five first second third twelfth v2 1.2.3 "
     "May third 1900 2099 2 1 0 0"),
])
def test_formatter(formatter: str, before: str, after: str) -> None:
    assert format_for_voice(before, only(formatter)) == after


@pytest.mark.parametrize(("n", "words"), [
    (0, "zero"), (7, "seven"), (19, "nineteen"), (20, "twenty"), (42, "forty two"), (100, "one hundred"),
    (101, "one hundred one"), (999, "nine hundred ninety nine"), (1000, "one thousand"),
    (1001, "one thousand one"), (1200, "twelve hundred"), (1234, "one thousand two hundred thirty four"),
    (2000, "two thousand"), (10000, "ten thousand"), (21000, "twenty one thousand"),
    (1_000_000, "one million"), (2_500_000_000, "two billion five hundred million"), (-9, "minus nine"),
])
def test_number_to_words(n: int, words: str) -> None:
    assert number_to_words(n) == words


@pytest.mark.parametrize(("n", "words"), [
    (1, "first"), (2, "second"), (3, "third"), (4, "fourth"), (5, "fifth"), (8, "eighth"), (9, "ninth"),
    (12, "twelfth"), (20, "twentieth"), (21, "twenty first"), (40, "fortieth"), (100, "one hundredth"),
])
def test_ordinal_to_words(n: int, words: str) -> None:
    assert ordinal_to_words(n) == words
