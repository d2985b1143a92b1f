"""Voice formatting: turn LLM text into text a TTS voice reads naturally.

Spec: Vapi docs, "Voice formatting plan" ("How voice input formatting works": the steps, their order, their
examples), and the assistant schema's ``FormatPlan``, ``ExactReplacement``, ``RegexReplacement`` and
``RegexOption`` (``voice.chunkPlan.formatPlan``).

Pure text in, text out: no I/O, no clock. :func:`format_for_voice` runs, in the documented order:

1. ``removeAngleBracketContent`` (always applied: "essential formatters like angle bracket removal will
   always be applied");
2. the formatters named by the schema's ``formattersEnabled`` enum, in the enum's order, which is the docs'
   step order (``markdown`` … ``stripAsterisk``; ``quote`` and ``dash`` are not in the docs' table and sit
   where the enum puts them);
3. the user's replacements, in the order given (always applied, last).

``formattersEnabled`` absent means "all default formatters": every one except ``asterisk`` (the docs' table
marks ``removePhrasesInAsterisks`` as off by default, since it deletes words) and ``quote`` / ``dash`` (not in
the docs' table, so not part of the documented default run).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, assert_never, get_args

FormatterName = Literal[
    "markdown", "asterisk", "quote", "dash", "newline", "colon", "acronym", "dollarAmount", "email", "date",
    "time", "distance", "unit", "percentage", "phoneNumber", "number", "stripAsterisk",
]
FORMATTER_NAMES: tuple[str, ...] = get_args(FormatterName)
DEFAULT_FORMATTERS: tuple[str, ...] = tuple(n for n in FORMATTER_NAMES if n not in ("asterisk", "quote", "dash"))

RegexOptionType = Literal["ignore-case", "whole-word", "multi-line"]


class FormatPlanError(ValueError):
    """The format plan itself is unusable (unknown formatter name, empty key, invalid regex)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class ExactReplacement:
    """``{type: 'exact', key, value, replaceAllEnabled}``: the key as a whole word or phrase (case-sensitive);
    only the first occurrence unless ``replace_all_enabled`` ("By default, it only replaces the first
    instance")."""

    key: str
    value: str
    replace_all_enabled: bool = False

    def __post_init__(self) -> None:
        if not self.key:
            raise FormatPlanError("exact replacement with an empty key")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegexOption:
    """``RegexOption``: ``ignore-case``, ``whole-word`` or ``multi-line``, each off unless ``enabled``."""

    type: RegexOptionType
    enabled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RegexReplacement:
    """``{type: 'regex', regex, value, options}``. The pattern is written for JavaScript (Vapi runs
    ``string.replace``); named groups ``(?<n>…)``, ``\\k<n>`` and the ``$1`` / ``$&`` / ``$<n>`` / ``$$``
    replacement patterns are translated. Every match is replaced. An invalid pattern fails at construction."""

    regex: str
    value: str
    options: tuple[RegexOption, ...] = ()
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        enabled = {o.type for o in self.options if o.enabled}
        source = re.sub(r"\(\?<(?![=!])", "(?P<", self.regex)
        source = re.sub(r"\\k<(\w+)>", r"(?P=\1)", source)
        if "whole-word" in enabled:
            source = rf"\b(?:{source})\b"
        flags = (re.IGNORECASE if "ignore-case" in enabled else 0) | (re.MULTILINE if "multi-line" in enabled else 0)
        try:
            compiled = re.compile(source, flags)
        except re.error as exc:
            raise FormatPlanError(f"invalid replacement regex {self.regex!r}: {exc}") from None
        object.__setattr__(self, "pattern", compiled)


Replacement = ExactReplacement | RegexReplacement


@dataclass(frozen=True, slots=True, kw_only=True)
class FormatOptions:
    """``voice.chunkPlan.formatPlan``. ``formatters_enabled=None`` applies :data:`DEFAULT_FORMATTERS`."""

    enabled: bool = True
    number_to_digits_cutoff: float = 2025  # schema: "@default 2025"
    replacements: tuple[Replacement, ...] = ()
    formatters_enabled: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        unknown = set(self.formatters_enabled or ()) - set(FORMATTER_NAMES)
        if unknown:
            raise FormatPlanError(f"unknown formatters {sorted(unknown)}; known: {list(FORMATTER_NAMES)}")


# --- numbers as words -------------------------------------------------------------------------------------

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**15, "quadrillion"), (10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}


def number_to_words(n: int) -> str:
    """American English, no hyphens or "and", as the docs write them: 42 → "forty two", -9 → "minus nine",
    1200 → "twelve hundred" (schema example), 1234 → "one thousand two hundred thirty four"."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    if n < 10000 and n % 100 == 0 and n % 1000 != 0:
        return f"{number_to_words(n // 100)} hundred"
    for scale, name in _SCALES:
        if n >= scale:
            high, rest = divmod(n, scale)
            return f"{number_to_words(high)} {name}" + (f" {number_to_words(rest)}" if rest else "")
    raise AssertionError("unreachable")  # pragma: no cover


def ordinal_to_words(n: int) -> str:
    """1 → "first", 21 → "twenty first", 40 → "fortieth", 112 → "one hundred twelfth"."""
    head, _, last = number_to_words(n).rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}" if head else last


def _digit_words(digits: str) -> str:
    return " ".join(_ONES[int(d)] for d in digits)


def _spoken_number(int_text: str, frac: str | None, cutoff: float, *, negative: bool = False) -> str:
    """A number as the ``number`` formatter speaks it. Above the cutoff (or with a leading zero, as in an ID)
    the integer part is read digit by digit ("12345" → "1 2 3 4 5"); a comma-grouped number ("12,345") is
    a quantity, never an ID, and is always read as words. Decimals are read digit by digit after "point"."""
    grouped = "," in int_text
    digits = int_text.replace(",", "")
    value = int(digits)
    if not grouped and ((len(digits) > 1 and digits[0] == "0") or value > cutoff):
        spoken = " ".join(digits)
    else:
        spoken = number_to_words(value)
    if frac:
        spoken += " point " + _digit_words(frac)
    return ("minus " + spoken) if negative else spoken


# --- the formatters, in the documented order --------------------------------------------------------------

Step = Callable[[str, FormatOptions], str]

_ANGLE_RE = re.compile(r"<<[^\n]*?>>|</?([A-Za-z][\w:-]*)[^<>]*>")
_KEPT_TAGS = frozenset({"break", "spell"})


def remove_angle_bracket_content(text: str, options: FormatOptions) -> str:
    """Step 1: "Removes anything within <...>, except for <break>, <spell>, or double angle brackets << >>".
    Only tag-like brackets are removed (``<`` or ``</`` right before a name), so "if a < b and c > d"
    survives."""

    def keep_or_drop(m: re.Match[str]) -> str:
        name = m.group(1)
        return m.group(0) if name is None or name.lower() in _KEPT_TAGS else ""

    return _ANGLE_RE.sub(keep_or_drop, text)


_MD_LINK_RE = re.compile(r"!?\[([^\]\n]*)\]\([^)\s]*\)")
_MD_LINE_RE = re.compile(r"^[ \t]*(?:#{1,6}[ \t]*|>[ \t]?|[-+][ \t]+|(?:-{3,}|_{3,})[ \t]*$)", re.MULTILINE)
_MD_SYMBOL_RE = re.compile(r"[`~]|(?<![A-Za-z0-9])_+|_+(?![A-Za-z0-9])")


def remove_markdown_symbols(text: str, options: FormatOptions) -> str:
    """``markdown`` (step 2): removes ``_``, backticks, ``~``, heading/quote/bullet markers and link syntax;
    "Asterisks (*) are preserved in this step". An underscore inside a word (``john_doe``) is kept."""
    text = _MD_LINK_RE.sub(r"\1", text)
    text = _MD_LINE_RE.sub("", text)
    return _MD_SYMBOL_RE.sub("", text)


_ASTERISK_PHRASE_RE = re.compile(r"\s*\*{1,2}(?=[^\s*])[^*\n]+?\*{1,2}")


def remove_phrases_in_asterisks(text: str, options: FormatOptions) -> str:
    """``asterisk`` (step 3, off by default): "Removes text surrounded by single or double asterisks"
    (stage directions such as ``*laughs*``), with the space before it: "**Wanted** to say *hi*" → " to say"."""
    return _ASTERISK_PHRASE_RE.sub("", text)


_QUOTE_RE = re.compile(r"[\"\u201c\u201d\u201e\u00ab\u00bb]|(?<!\w)['\u2018\u2019]|['\u2018\u2019](?!\w)")


def remove_quotes(text: str, options: FormatOptions) -> str:
    """``quote`` (not in the docs' table): drops quotation marks, keeps apostrophes inside words."""
    return _QUOTE_RE.sub("", text)


_DASH_SPACED_RE = re.compile(r"[ \t]+[-\u2013\u2014][ \t]+|(?<=\w)\u2014(?=\w)")  # hyphen, en and em dash
_DASH_RANGE_RE = re.compile(r"(?<=\d)\u2013(?=\d)")  # en dash


def replace_dashes(text: str, options: FormatOptions) -> str:
    """``dash`` (not in the docs' table): a dash used as punctuation becomes a pause (", "), an en dash
    between numbers a range ("5 to 10"). Hyphens in words, negatives, dates and phone numbers stay."""
    text = _DASH_RANGE_RE.sub(" to ", text)
    return _DASH_SPACED_RE.sub(", ", text)


_NEWLINES_RE = re.compile(r"\r?\n(?:[ \t]*\r?\n)*")


def replace_new_lines_with_periods(text: str, options: FormatOptions) -> str:
    """``newline`` (step 4): "Hello  world\\n to say\\nWe have NASA" → "Hello  world .  to say . We have NASA".
    A run of blank lines is one period."""
    return _NEWLINES_RE.sub(" . ", text)


_COLON_RE = re.compile(r"(?<!\d):(?!//)|(?<=\d):(?!\d|//)")


def replace_colons_with_periods(text: str, options: FormatOptions) -> str:
    """``colon`` (step 5): "price: $42.50" → "price. $42.50". A colon between digits is left for the
    ``time`` formatter (step 10 must still see "14:00"), and "://" for URLs."""
    return _COLON_RE.sub(".", text)


_ACRONYM_RE = re.compile(r"(?<!\d)(?<!\d )\b[A-Z]{2,}\b")
_SPOKEN_ACRONYMS = frozenset({
    "NASA", "NET", "NATO", "UNICEF", "UNESCO", "FIFA", "OPEC", "NAFTA", "NASDAQ", "SCUBA", "LASER", "RADAR",
    "SONAR", "COVID", "AIDS", "GIF", "JPEG", "PIN", "SIM", "ZIP", "IKEA", "LEGO", "CAPTCHA", "FEMA", "OSHA",
    "DARPA", "WIFI", "YAML", "JSON",
})


def format_acronyms(text: str, options: FormatOptions) -> str:
    """``acronym`` (step 6): "Converts known acronyms to lowercase (e.g., NASA → nasa) or spaces out unknown
    all-caps words unless they contain vowels" ("HTML" → "H T M L"; "FBI" is left to the voice). A unit right
    after a number ("5 GB", "3 PM") and the key of an exact replacement ("ST" → "STREET") are left alone."""
    protected = {r.key for r in options.replacements if isinstance(r, ExactReplacement)}

    def speak(m: re.Match[str]) -> str:
        word = m.group(0)
        if word in protected:
            return word
        if word in _SPOKEN_ACRONYMS:
            return word.lower()
        if re.search(r"[AEIOUY]", word):
            return word
        return " ".join(word)

    return _ACRONYM_RE.sub(speak, text)


_DOLLAR_RE = re.compile(
    r"\$(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?:\s?(thousand|million|billion|trillion)\b|([kKmMbB])\b)?"
    r"(?![\w]|[.,]\d)"
)
_DOLLAR_SCALES = {"k": "thousand", "m": "million", "b": "billion"}


def format_dollar_amounts(text: str, options: FormatOptions) -> str:
    """``dollarAmount`` (step 7): "$42.50" → "forty two dollars and fifty cents"; "$1" → "one dollar";
    "$0.99" → "ninety nine cents"; "$2.5M" / "$2.5 million" → "two point five million dollars". An amount
    of money is always spoken as words, whatever the digits cutoff."""

    def speak(m: re.Match[str]) -> str:
        int_text, frac, scale_word, scale_letter = m.groups()
        dollars = int(int_text.replace(",", ""))
        scale = scale_word or (_DOLLAR_SCALES[scale_letter.lower()] if scale_letter else None)
        if scale is not None:
            return f"{_spoken_number(int_text, frac, float('inf'))} {scale} dollars"
        if frac is not None and len(frac) > 2:
            return f"{_spoken_number(int_text, frac, float('inf'))} dollars"
        cents = int((frac or "").ljust(2, "0"))
        parts = []
        if dollars or not cents:
            parts.append(f"{number_to_words(dollars)} dollar{'' if dollars == 1 else 's'}")
        if cents:
            parts.append(f"{number_to_words(cents)} cent{'' if cents == 1 else 's'}")
        return " and ".join(parts)

    return _DOLLAR_RE.sub(speak, text)


_EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_EMAIL_SYMBOLS = {".": " dot ", "@": " at ", "_": " underscore ", "-": " dash ", "+": " plus "}


def format_emails(text: str, options: FormatOptions) -> str:
    """``email`` (step 8): "JOHN.DOE@example.COM" → "JOHN dot DOE at example dot COM" (and "_", "-", "+"
    are named, so the caller can write the address down)."""

    def speak(m: re.Match[str]) -> str:
        return "".join(_EMAIL_SYMBOLS.get(c, c) for c in m.group(0))

    return _EMAIL_RE.sub(speak, text)


_DATE_YMD_RE = re.compile(r"(?<![\w.:/-])(\d{4})([-/ ])(\d{1,2})\2(\d{1,2})(?![\w:]|[./-]\d)")
_DATE_MDY_RE = re.compile(r"(?<![\w.:/-])(\d{1,2})/(\d{1,2})/(\d{4})(?![\w:]|[./-]\d)")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _spoken_date(year: str, month: str, day: str) -> str | None:
    try:
        date = datetime.date(int(year), int(month), int(day))
    except ValueError:
        return None
    return f"{_WEEKDAYS[date.weekday()]}, {_MONTHS[date.month - 1]} {date.day}, {date.year}"


def format_dates(text: str, options: FormatOptions) -> str:
    """``date`` (step 9): "2023 05 10" → "Wednesday, May 10, 2023"; also "2023-05-10", "2023/05/10" and the
    US "05/10/2023". Digits that are not a real calendar date are left alone."""
    text = _DATE_YMD_RE.sub(lambda m: _spoken_date(m[1], m[3], m[4]) or m[0], text)
    return _DATE_MDY_RE.sub(lambda m: _spoken_date(m[3], m[1], m[2]) or m[0], text)


_TIME_RE = re.compile(r"(?<![\d:.])([01]?\d|2[0-3]):([0-5]\d)(?![\d:]|\.\d)")


def format_times(text: str, options: FormatOptions) -> str:
    """``time`` (step 10): "14:00" → "14" (docs example), "9:30" → "9 30", "9:05" → "9 oh 5"."""

    def speak(m: re.Match[str]) -> str:
        hours, minutes = m.group(1), m.group(2)
        if minutes == "00":
            return hours
        if minutes[0] == "0":
            return f"{hours} oh {minutes[1]}"
        return f"{hours} {minutes}"

    return _TIME_RE.sub(speak, text)


_AMOUNT = r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?"
_DISTANCES = {"km": ("kilometer", "kilometers"), "m": ("meter", "meters"), "cm": ("centimeter", "centimeters"),
              "mm": ("millimeter", "millimeters"), "mi": ("mile", "miles"), "ft": ("foot", "feet"),
              "yd": ("yard", "yards")}
_DISTANCE_RE = re.compile(_AMOUNT + r"\s?(km|cm|mm|mi|ft|yd|m)(?![\w/])")


def _unit_name(names: tuple[str, str], int_text: str, frac: str | None) -> str:
    return names[0] if int_text == "1" and not frac else names[1]


def format_distances(text: str, options: FormatOptions) -> str:
    """``distance`` (step 11): "5km" → "5 kilometers" (the number is left to the ``number`` formatter)."""

    def speak(m: re.Match[str]) -> str:
        int_text, frac, unit = m.groups()
        number = int_text + (f".{frac}" if frac else "")
        return f"{number} {_unit_name(_DISTANCES[unit], int_text, frac)}"

    return _DISTANCE_RE.sub(speak, text)


_UNITS = {
    "lb": ("pound", "pounds"), "lbs": ("pound", "pounds"), "kg": ("kilogram", "kilograms"),
    "g": ("gram", "grams"), "mg": ("milligram", "milligrams"), "oz": ("ounce", "ounces"),
    "ml": ("milliliter", "milliliters"), "mL": ("milliliter", "milliliters"), "L": ("liter", "liters"),
    "°F": ("degree Fahrenheit", "degrees Fahrenheit"), "°C": ("degree Celsius", "degrees Celsius"),
    "°": ("degree", "degrees"), "mph": ("mile per hour", "miles per hour"),
    "km/h": ("kilometer per hour", "kilometers per hour"), "kph": ("kilometer per hour", "kilometers per hour"),
    "KB": ("kilobyte", "kilobytes"), "MB": ("megabyte", "megabytes"), "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"), "hr": ("hour", "hours"), "hrs": ("hour", "hours"),
    "min": ("minute", "minutes"), "mins": ("minute", "minutes"), "sec": ("second", "seconds"),
    "secs": ("second", "seconds"), "ms": ("millisecond", "milliseconds"),
}
_UNIT_RE = re.compile(
    _AMOUNT + r"\s?(" + "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True)) + r")(?![\w/])"
)


def format_units(text: str, options: FormatOptions) -> str:
    """``unit`` (step 11): "43 lb" → "forty three pounds" (docs example: the number is spoken too)."""

    def speak(m: re.Match[str]) -> str:
        int_text, frac, unit = m.groups()
        number = _spoken_number(int_text, frac, options.number_to_digits_cutoff)
        return f"{number} {_unit_name(_UNITS[unit], int_text, frac)}"

    return _UNIT_RE.sub(speak, text)


_PERCENT_RE = re.compile(r"(?<![\w.,])(\d+(?:,\d{3})*(?:\.\d+)?)\s?%")


def format_percentages(text: str, options: FormatOptions) -> str:
    """``percentage`` (step 11): "50%" → "50 percent"."""
    return _PERCENT_RE.sub(r"\1 percent", text)


_PHONE_RE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]|\d{3}-)\d{4}(?!\w|[.-]\d)"
)


def format_phone_numbers(text: str, options: FormatOptions) -> str:
    """``phoneNumber`` (step 11): "123-456-7890" → "1 2 3 4 5 6 7 8 9 0"; also "(123) 456-7890",
    "123.456.7890", "+1 123 456 7890" ("plus 1 …") and "555-1234"."""

    def speak(m: re.Match[str]) -> str:
        spoken = " ".join(c for c in m.group(0) if c.isdigit())
        return ("plus " + spoken) if m.group(0).startswith("+") else spoken

    return _PHONE_RE.sub(speak, text)


_MONTH_DAY_RE = re.compile(r"\b(" + "|".join(_MONTHS) + r") (\d{1,2})(?:st|nd|rd|th)?\b(?![.,]\d|:)")
_NUMBER_RE = re.compile(
    r"(?<![\w.,])(?P<sign>-(?=\d))?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
    r"(?P<ord>st|nd|rd|th)?(?!\w|[.,]\d)"
)


def format_numbers(text: str, options: FormatOptions) -> str:
    """``number`` (step 12): "-9" → "minus nine", "2.5" → "two point five", "2023" → "2023" (a year, 1900 to
    2099, is left as digits for the voice to read as a year), "21st" → "twenty first", "May 10" → "May tenth";
    above ``number_to_digits_cutoff`` an integer is read digit by digit ("12345" → "1 2 3 4 5")."""
    cutoff = options.number_to_digits_cutoff

    def month_day(m: re.Match[str]) -> str:
        day = int(m.group(2))
        return f"{m.group(1)} {ordinal_to_words(day)}" if 1 <= day <= 31 else m.group(0)

    def speak(m: re.Match[str]) -> str:
        sign, int_text, frac, ordinal = m.group("sign"), m.group("int"), m.group("frac"), m.group("ord")
        if ordinal and not frac:
            return ("minus " if sign else "") + ordinal_to_words(int(int_text.replace(",", "")))
        if ordinal:
            return m.group(0)
        if not (sign or frac) and len(int_text) == 4 and 1900 <= int(int_text) <= 2099:
            return int_text
        return _spoken_number(int_text, frac, cutoff, negative=bool(sign))

    text = _MONTH_DAY_RE.sub(month_day, text)
    return _NUMBER_RE.sub(speak, text)


def remove_asterisks(text: str, options: FormatOptions) -> str:
    """``stripAsterisk`` (step 13): "**Bold** and *italic*" → "Bold and italic"."""
    return text.replace("*", "")


FORMATTERS: tuple[tuple[FormatterName, Step], ...] = (
    ("markdown", remove_markdown_symbols),
    ("asterisk", remove_phrases_in_asterisks),
    ("quote", remove_quotes),
    ("dash", replace_dashes),
    ("newline", replace_new_lines_with_periods),
    ("colon", replace_colons_with_periods),
    ("acronym", format_acronyms),
    ("dollarAmount", format_dollar_amounts),
    ("email", format_emails),
    ("date", format_dates),
    ("time", format_times),
    ("distance", format_distances),
    ("unit", format_units),
    ("percentage", format_percentages),
    ("phoneNumber", format_phone_numbers),
    ("number", format_numbers),
    ("stripAsterisk", remove_asterisks),
)
"""The ``formattersEnabled`` formatters in the order they run (the docs' steps 2 to 13)."""


# --- replacements (step 14) -------------------------------------------------------------------------------

_JS_REPLACEMENT_RE = re.compile(r"\$(\$|&|`|'|<(\w+)>|(\d{1,2}))")


def _expand_js_replacement(value: str, m: re.Match[str]) -> str:
    """Expand JavaScript's ``String.prototype.replace`` patterns: ``$$``, ``$&``, ``$```, ``$'``, ``$n``,
    ``$nn`` and ``$<name>``; a reference to a group that does not exist stays literal, as in JavaScript."""

    def expand(ref: re.Match[str]) -> str:
        token, name, number = ref.group(1), ref.group(2), ref.group(3)
        if token == "$":
            return "$"
        if token == "&":
            return m.group(0)
        if token == "`":
            return m.string[: m.start()]
        if token == "'":
            return m.string[m.end():]
        if name is not None:
            return (m.group(name) or "") if name in m.re.groupindex else ref.group(0)
        assert number is not None
        if 1 <= int(number) <= m.re.groups:
            return m.group(int(number)) or ""
        if len(number) == 2 and 1 <= int(number[0]) <= m.re.groups:  # "$10" with one group is "$1" then "0"
            return (m.group(int(number[0])) or "") + number[1]
        return ref.group(0)

    return _JS_REPLACEMENT_RE.sub(expand, value)


def apply_replacement(text: str, replacement: Replacement) -> str:
    """One user replacement (step 14: "Applies user-defined final replacements")."""
    match replacement:
        case ExactReplacement(key=key, value=value, replace_all_enabled=replace_all):
            before = r"(?<!\w)" if re.match(r"\w", key[0]) else ""
            after = r"(?!\w)" if re.match(r"\w", key[-1]) else ""
            pattern = re.compile(before + re.escape(key) + after)
            return pattern.sub(lambda _: value, text, count=0 if replace_all else 1)
        case RegexReplacement():
            return replacement.pattern.sub(lambda m: _expand_js_replacement(replacement.value, m), text)
        case _:
            assert_never(replacement)


def format_for_voice(text: str, options: FormatOptions) -> str:
    """Format ``text`` for a TTS voice as Vapi's format plan does; unchanged when ``options.enabled`` is false."""
    if not options.enabled:
        return text
    text = remove_angle_bracket_content(text, options)
    enabled = DEFAULT_FORMATTERS if options.formatters_enabled is None else options.formatters_enabled
    for name, step in FORMATTERS:
        if name in enabled:
            text = step(text, options)
    for replacement in options.replacements:
        text = apply_replacement(text, replacement)
    return text
