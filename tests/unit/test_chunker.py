"""Streaming chunker: punctuation boundaries, minCharacters, the docs' flush syntax, chunkPlan.enabled=false."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.pipeline.chunker import FLUSH_TAG_RE, Chunker, ChunkOptions, ChunkPlanError
from gateway.pipeline.formatter import ExactReplacement, FormatOptions

RAW = ChunkOptions(format=FormatOptions(enabled=False))  # chunking and flush only, text left as written


def run(text_or_deltas: str | Sequence[str], options: ChunkOptions = RAW) -> list[str]:
    deltas = [text_or_deltas] if isinstance(text_or_deltas, str) else text_or_deltas
    chunker = Chunker(options)
    out: list[str] = []
    for delta in deltas:
        out += chunker.feed(delta)
    return out + chunker.finish()


def tokens(text: str) -> list[str]:
    """One delta per character: the finest split an LLM stream can produce."""
    return list(text)


# --- the docs' flush examples ----------------------------------------------------------------------------

FLUSH_EXAMPLES = [
    ("conceptual flow", "I'm processing your request... <flush /> Here's the result",
     ["I'm processing your request...", "Here's the result"]),
    ("basic acknowledgment", "I'm processing your request... <flush /> Let me check that for you.",
     ["I'm processing your request...", "Let me check that for you."]),
    ("tool processing feedback", "Looking up that information... <flush /> This may take a moment.",
     ["Looking up that information...", "This may take a moment."]),
    ("conversation flow", "That's a great question. <flush /> Based on the data I have...",
     ["That's a great question.", "Based on the data I have..."]),
    ("custom LLM integration", "Here's your answer: 42. <flush /> Would you like an explanation?",
     ["Here's your answer: 42.", "Would you like an explanation?"]),
    ("nested handling", "Starting process... <flush> Step 1 complete </flush> Moving to step 2...",
     ["Starting process...", "Step 1 complete", "Moving to step 2..."]),
    ("dynamic insertion", "I understand your request <flush /> Your order ships Monday.",
     ["I understand your request", "Your order ships Monday."]),
]


@pytest.mark.parametrize(("example", "text", "chunks"), FLUSH_EXAMPLES, ids=[e[0] for e in FLUSH_EXAMPLES])
def test_docs_flush_examples(example: str, text: str, chunks: list[str]) -> None:
    assert run(text) == chunks
    assert run(tokens(text)) == chunks


def test_docs_flush_examples_are_voice_formatted_by_default() -> None:
    options = ChunkOptions()
    assert run("Here's your answer: 42. <flush /> Would you like an explanation?", options) == [
        "Here's your answer. forty two.", "Would you like an explanation?"]
    assert run("Starting process... <flush> Step 1 complete </flush> Moving to step 2...", options) == [
        "Starting process...", "Step one complete", "Moving to step two..."]


def test_flush_sends_the_text_before_it_immediately() -> None:
    chunker = Chunker(RAW)
    assert chunker.feed("Sure, one moment") == []  # short, no boundary yet: buffered
    assert chunker.feed(" <flush />") == ["Sure, one moment"]  # "Immediate Send"
    assert chunker.feed(" The balance is ten dollars") == []  # "Remaining text follows normal buffering"
    assert chunker.finish() == ["The balance is ten dollars"]


# --- flush syntax ----------------------------------------------------------------------------------------

TAGS = ["<flush />", "<flush/>", "<flush>", "</flush>", "<FLUSH />", "< Flush />", "<  /  fLuSh  >", "<flush\n/>"]


@pytest.mark.parametrize("tag", TAGS)
def test_every_flush_form_splits_and_is_never_spoken(tag: str) -> None:
    assert FLUSH_TAG_RE.fullmatch(tag)
    assert run(f"Okay{tag}Next") == ["Okay", "Next"]


@pytest.mark.parametrize(("text", "chunks"), [
    ("<flush /> Hello there.", ["Hello there."]),
    ("Hello <flush /> there.", ["Hello", "there."]),
    ("Hello there. <flush />", ["Hello there."]),
    ("<flush/><flush/> <flush/>", []),
    ("   <flush />  \n <flush/>  ", []),
    ("a<flush/><flush/>b", ["a", "b"]),
])
def test_flush_at_start_middle_end(text: str, chunks: list[str]) -> None:
    assert run(text) == chunks
    assert run(tokens(text)) == chunks


@pytest.mark.parametrize("cut", range(1, len("<flush />")))
def test_flush_tag_split_across_deltas(cut: int) -> None:
    tag = "<flush />"
    chunker = Chunker(RAW)
    assert chunker.feed("Hi " + tag[:cut]) == []  # the possible tag is held back, not spoken
    assert chunker.feed(tag[cut:] + " there") == ["Hi"]
    assert chunker.finish() == ["there"]


def test_flush_tag_split_over_many_deltas() -> None:
    assert run(["One", " <", "fl", "ush", " ", "/", ">", "Two"]) == ["One", "Two"]


@pytest.mark.parametrize("text", ["a <flux> b", "if x < y then", "x <flush y", "x </ flush", "a <f"])
def test_text_that_only_looks_like_a_tag_is_spoken(text: str) -> None:
    assert run(tokens(text)) == [text]


# --- punctuation boundaries and minCharacters ------------------------------------------------------------

def test_chunk_is_emitted_once_long_enough_at_a_boundary() -> None:
    chunker = Chunker(RAW)
    assert chunker.feed("Hi. Yes, sure. ") == []  # boundaries, but under 30 characters
    assert chunker.feed("I can book that table for you.") == []  # 45 characters, the boundary unconfirmed
    assert chunker.feed(" Anything") == ["Hi. Yes, sure. I can book that table for you."]
    assert chunker.feed(" else?") == []
    assert chunker.finish() == ["Anything else?"]


def test_boundary_is_confirmed_by_the_following_whitespace() -> None:
    chunker = Chunker(ChunkOptions(min_characters=5, format=FormatOptions(enabled=False)))
    assert chunker.feed("The answer is 3.") == []  # "3." might still become "3.14"
    assert chunker.feed("14 exactly.") == []
    assert chunker.feed(" And") == ["The answer is 3.14 exactly."]
    assert chunker.finish() == ["And"]


@pytest.mark.parametrize("min_characters", [1, 10, 30, 80])
def test_min_characters(min_characters: int) -> None:
    text = "Yes. Of course. I can do that. Your table is booked for eight people tonight. Bye."
    chunks = run(text, ChunkOptions(min_characters=min_characters, format=FormatOptions(enabled=False)))
    assert " ".join(chunks) == text
    assert all(len(c) >= min_characters for c in chunks[:-1])
    assert all(c.endswith(".") for c in chunks)


@pytest.mark.parametrize("text", [
    "The value of pi is about 3.14159 and that is all I know about it.",
    "Your total comes to $1,000.50 and it is due at the end of this month.",
    "Please visit example.com for the full list of our opening hours today.",
    "Dr. Smith and Mrs. Jones will see you at the clinic on Main St. tomorrow.",
    "Bring documents e.g. your passport and arrive at 9 a.m. sharp please.",
    "The book was written by J. R. R. Tolkien many decades ago in England.",
    "The meeting starts at 12:30 in room four of the main building today.",
])
def test_never_splits_inside_numbers_or_abbreviations(text: str) -> None:
    options = ChunkOptions(min_characters=1, format=FormatOptions(enabled=False))
    assert run(text, options) == [text]
    assert run(tokens(text), options) == [text]


def test_sentence_ending_in_i_or_no_is_a_boundary() -> None:
    options = ChunkOptions(min_characters=5, format=FormatOptions(enabled=False))
    assert run("So do I. And you? Sadly no. Sorry.", options) == ["So do I.", "And you?", "Sadly no.", "Sorry."]


def test_boundary_after_closing_quote_or_bracket() -> None:
    options = ChunkOptions(min_characters=5, format=FormatOptions(enabled=False))
    assert run('He said "stop." Then he left.', options) == ['He said "stop."', "Then he left."]
    assert run("It is late (very late.) Go now.", options) == ["It is late (very late.)", "Go now."]


def test_non_ascii_boundaries_need_no_space() -> None:
    options = ChunkOptions(min_characters=2, format=FormatOptions(enabled=False))
    assert run(tokens("你好\uff0c世界。今天很好。"), options) == ["你好\uff0c", "世界。", "今天很好。"]


def test_punctuation_boundaries_are_configurable() -> None:
    options = ChunkOptions(min_characters=1, punctuation_boundaries=("!",), format=FormatOptions(enabled=False))
    assert run("Wait, what? Wow! Done.", options) == ["Wait, what? Wow!", "Done."]


def test_empty_boundary_is_a_plan_error() -> None:
    with pytest.raises(ChunkPlanError):
        ChunkOptions(punctuation_boundaries=(".", ""))


# --- formatting per chunk --------------------------------------------------------------------------------

def test_chunks_are_voice_formatted() -> None:
    options = ChunkOptions(min_characters=10, format=FormatOptions(
        replacements=(ExactReplacement(key="Vapi", value="Vappy"),)))
    text = "Your order of $42.50 is confirmed. Thanks for calling Vapi today!"
    assert run(tokens(text), options) == ["Your order of forty two dollars and fifty cents is confirmed.",
                                          "Thanks for calling Vappy today!"]


def test_chunk_that_formats_to_nothing_is_dropped() -> None:
    options = ChunkOptions(min_characters=1, format=FormatOptions(formatters_enabled=("asterisk",)))
    assert run("*laughs* <flush /> Hello.", options) == ["Hello."]


# --- chunkPlan.enabled = false ---------------------------------------------------------------------------

def test_disabled_is_one_raw_chunk_at_finish_with_flush_tags_spoken() -> None:
    chunker = Chunker(ChunkOptions(enabled=False))
    text = "Hi there. <flush /> The total is $42.50, okay? More text follows here."
    assert [piece for delta in tokens(text) for piece in chunker.feed(delta)] == []
    assert chunker.finish() == [text]  # "The tags will appear in voice output instead of being processed"


def test_disabled_whitespace_only_reply_emits_nothing() -> None:
    assert run(" \n ", ChunkOptions(enabled=False)) == []


def test_finish_resets_for_the_next_reply() -> None:
    chunker = Chunker(RAW)
    assert chunker.feed("First reply <fl") == []
    assert chunker.finish() == ["First reply <fl"]
    assert chunker.feed("Second <flush/>") == ["Second"]
    assert chunker.finish() == []


# --- properties ------------------------------------------------------------------------------------------

PIECES = ["Hello", "world", "Dr", "e.g", "pi", "3.14", "$1,000.50", "42", " ", " ", " ", "\n", ".", ",", "?",
          "!", ":", "...", '"', ")", "。", "\uff0c", "<flush />", "</ FLUSH>", "<flush>", "<", "fl", "ush", "/", ">",
          "*", "NASA", "14:00"]
texts = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)


@st.composite
def text_and_split(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(texts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=20)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


OPTIONS = [RAW, ChunkOptions(), ChunkOptions(min_characters=1), ChunkOptions(enabled=False),
           ChunkOptions(min_characters=8, punctuation_boundaries=(".", "||", "。"))]


@given(text_and_split(), st.sampled_from(OPTIONS))
def test_any_split_into_deltas_gives_the_same_chunks(case: tuple[str, list[str]], options: ChunkOptions) -> None:
    text, deltas = case
    assert run(deltas, options) == run(text, options)


@given(text_and_split(), st.integers(1, 40))
def test_chunks_keep_every_spoken_character_once_and_in_order(case: tuple[str, list[str]], min_chars: int) -> None:
    text, deltas = case
    chunks = run(deltas, ChunkOptions(min_characters=min_chars, format=FormatOptions(enabled=False)))
    assert all(c and c == c.strip() for c in chunks)
    assert "".join("".join(c.split()) for c in chunks) == "".join(FLUSH_TAG_RE.sub("", text).split())
    if not FLUSH_TAG_RE.search(text):
        assert all(len(c) >= min_chars for c in chunks[:-1])
