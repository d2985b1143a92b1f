"""Streaming chunker between the LLM token stream and the TTS voice.

Spec: the Vapi assistant schema's ``ChunkPlan`` (``enabled``, ``minCharacters``, ``punctuationBoundaries``,
``formatPlan``) and the Vapi docs' "Flush syntax" page (regex ``/<\\s*flush\\s*\\/?>|<\\s*\\/\\s*flush\\s*>/i``;
"Content before flush is sent instantly to voice provider"; "Remaining text follows normal buffering";
"Flush will NOT work when chunkPlan.enabled: false. The tags will appear in voice output").

Pure: text in, chunks out, no I/O and no clock. The chunks depend on the text alone, never on how it was
split into deltas: every decision looks only at text already received (a boundary is confirmed by the
whitespace that follows it; a possible flush tag at the end of the buffer is held back until it is complete
or ruled out), so streaming a reply token by token gives exactly the chunks of feeding it whole.

Rules for a chunk (``enabled=True``):

- it ends at a punctuation boundary once it has at least ``min_characters`` (stripped) characters. An ASCII
  boundary (".", ",", "?", "|"...) counts only when whitespace follows it, possibly after closing quotes or
  brackets, so "3.14", "$1,000.50", "example.com" and "12:30" are never split; a non-ASCII boundary (CJK full
  stop and comma, Devanagari danda...) counts at once, as those scripts put no space after it. A "." after a known abbreviation
  ("Dr.", "e.g.") or a capital initial ("J. R. R.") is not a boundary;
- a flush tag ends the chunk before it whatever its length, and is never spoken;
- ``finish()`` emits the rest. Chunks are stripped, voice-formatted (``format``), and never empty.

With ``enabled=False`` nothing is chunked, formatted or flushed: the whole reply is one chunk at ``finish()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.pipeline.formatter import FormatOptions, format_for_voice

FLUSH_TAG_RE = re.compile(r"<\s*flush\s*/?>|<\s*/\s*flush\s*>", re.IGNORECASE)
"""The docs' flush regex: ``<flush />``, ``<flush/>``, ``<flush>``, ``</flush>``, any spaces, any case."""

# Anything that may still grow into a flush tag, anchored at the end of the buffer ("<", "< /fl", "<flush /").
_FLUSH_PREFIX_RE = re.compile(r"<\s*(?:/\s*)?(?:f(?:l(?:u(?:s(?:h\s*/?)?)?)?)?)?\Z", re.IGNORECASE)

PUNCTUATION_BOUNDARIES: tuple[str, ...] = (
    "\u3002", "\uff0c", ".", "!", "?", ";", "\u060c", "\u06d4", "\u0964", "\u0965", "|", "||", ",", ":",
)
"""The schema's example list for ``punctuationBoundaries`` (every enum value except ")")."""

_CLOSERS = frozenset("\"'\u201d\u2019)]}\u00bb")
_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "e.g", "i.e", "a.m", "p.m", "approx",
    "inc", "ltd", "co", "corp", "dept", "ave", "blvd", "rd", "mt", "ft", "u.s", "u.k",
})
_INITIALS_RE = re.compile(r"[A-HJ-Z]|[A-Za-z](?:\.[A-Za-z])+")  # "J.", "U.S."; not "I." ("So do I.")


class ChunkPlanError(ValueError):
    """The chunk plan itself is unusable (e.g. an empty punctuation boundary)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkOptions:
    """``voice.chunkPlan``; ``format`` is its ``formatPlan``."""

    enabled: bool = True
    min_characters: int = 30  # schema: "@default 30"
    punctuation_boundaries: tuple[str, ...] = PUNCTUATION_BOUNDARIES
    format: FormatOptions = field(default_factory=FormatOptions)

    def __post_init__(self) -> None:
        if any(not b or b.isspace() for b in self.punctuation_boundaries):
            raise ChunkPlanError("punctuation boundaries must be non-blank strings")
        if self.min_characters < 0:
            raise ChunkPlanError(f"min_characters must not be negative, got {self.min_characters}")


class Chunker:
    """Feed the LLM's text deltas; get back the chunks ready for the TTS, in order.

    ``feed(delta)`` returns the chunks that became complete; ``finish()`` returns the rest and resets the
    chunker for the next reply.
    """

    def __init__(self, options: ChunkOptions) -> None:
        self._options = options
        self._spaced = tuple(b for b in options.punctuation_boundaries if b.isascii())
        self._immediate = tuple(b for b in options.punctuation_boundaries if not b.isascii())
        self._buffer = ""  # text not emitted yet, starting at the current chunk's start
        self._scanned = 0  # buffer[:scanned] holds no boundary that ends a chunk
        self._tag_from = 0  # no flush tag starts before buffer[tag_from:]

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        if not self._options.enabled:
            return []
        out: list[str] = []
        while (tag := FLUSH_TAG_RE.search(self._buffer, self._tag_from)) is not None:
            # "Content before flush is sent instantly to voice provider"
            size = len(self._buffer)
            out += self._cut_at_boundaries(tag.start())
            shift = size - len(self._buffer)  # what the boundary cuts took off the front
            out += self._emit(self._buffer[: tag.start() - shift])
            self._buffer = self._buffer[tag.end() - shift:]
            self._scanned = self._tag_from = 0
        prefix = _FLUSH_PREFIX_RE.search(self._buffer, self._tag_from)
        self._tag_from = prefix.start() if prefix is not None else len(self._buffer)
        out += self._cut_at_boundaries(self._tag_from)
        return out

    def finish(self) -> list[str]:
        if self._options.enabled:
            out = self._cut_at_boundaries(len(self._buffer)) + self._emit(self._buffer)
        else:
            out = self._emit(self._buffer)
        self._buffer = ""
        self._scanned = self._tag_from = 0
        return out

    def _cut_at_boundaries(self, limit: int) -> list[str]:
        """Emit every chunk that ends at a boundary inside ``buffer[:limit]``."""
        out: list[str] = []
        j = self._scanned
        while j < limit:
            cut = self._boundary_cut(j)
            if cut is not None and len(self._buffer[:cut].strip()) >= self._options.min_characters:
                out += self._emit(self._buffer[:cut])
                self._buffer = self._buffer[cut:]
                limit -= cut
                self._tag_from -= cut
                j -= cut
            j += 1
        self._scanned = max(limit, 0)
        return out

    def _boundary_cut(self, j: int) -> int | None:
        """Where a chunk would end if character ``j`` confirms a boundary, else None."""
        text = self._buffer
        if text[j].isspace():
            k = j
            while k > 0 and text[k - 1] in _CLOSERS:
                k -= 1
            if text.endswith(self._spaced, 0, k) and not self._is_abbreviation(text[:k]):
                return j
            return None
        if self._immediate and text.endswith(self._immediate, 0, j + 1):
            return j + 1
        return None

    @staticmethod
    def _is_abbreviation(before: str) -> bool:
        """"Dr." or "J." ends no sentence: the word before a final single "." is an abbreviation or initials."""
        if not before.endswith(".") or before.endswith(".."):
            return False
        words = before[:-1].split()
        word = words[-1].lstrip("\"'\u201c\u2018([{") if words else ""
        return word.lower() in _ABBREVIATIONS or _INITIALS_RE.fullmatch(word) is not None

    def _emit(self, raw: str) -> list[str]:
        text = raw.strip()
        if text and self._options.enabled:
            text = format_for_voice(text, self._options.format).strip()
        return [text] if text else []
