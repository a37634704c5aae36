"""The quotes in an agent's turn, looked up in the document and pinned to its lines.

A quote is text of at least `MIN_QUOTE_WORDS` words between double quotes (straight or curly), or a
Markdown blockquote line. It is verified when the document holds it, ignoring case, whitespace runs and
quote, dash and ellipsis variants; or when the document holds something close enough (a typo, a dropped
word): `rapidfuzz.fuzz.partial_ratio_alignment` finds the closest passage of the quote's length, and
the quote passes if turning one into the other takes at most `MAX_EDIT_SHARE` of its characters.

Lines are numbered from 1 in `text.split("\\n")`: the lines of `/battles/<id>/document.txt`.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz

# Fewer words than this is a phrase, not a quote: "very fast" is in every document.
MIN_QUOTE_WORDS = 4
# Edits (insertions and deletions; a substitution is two) a close match may need, as a share of the
# quote's length: 15 % passes a typo or a dropped short word, and keeps an invented sentence out.
MAX_EDIT_SHARE = 0.15
# Even the shortest quote may carry one typo (one substitution is two edits).
MIN_EDITS = 2

# "…" straight or curly, within one paragraph; the text inside may not hold another double quote.
_QUOTED = re.compile(r'"([^"\n]+(?:\n(?!\s*\n)[^"\n]+)*)"|“([^“”\n]+(?:\n(?!\s*\n)[^“”\n]+)*)”')
_BLOCKQUOTE = re.compile(r"^[ \t]*>[ \t]?(.+)$", re.MULTILINE)
_WORD = re.compile(r"\w+")

# Each variant of a character, and what it counts as.
_QUOTE_MARKS = "\"'`´‘’‚‛“”„‟«»‹›"
_DASHES = "‐‑‒–—―−"
_FOLD = {**dict.fromkeys(map(ord, _QUOTE_MARKS), "'"), **dict.fromkeys(map(ord, _DASHES), "-")}
# What a quote may carry at its edges that the document need not: its own punctuation and ellipses.
_EDGE = " '-.,;:!?…"


@dataclass(frozen=True)
class Citation:
    """One quote of a turn: `quote` exactly as the turn has it; lines None when not verified."""

    quote: str
    verified: bool
    start_line: int | None = None
    end_line: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "quote": self.quote,
            "verified": self.verified,
            "start_line": self.start_line,
            "end_line": self.end_line,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Citation:
        start, end = data.get("start_line"), data.get("end_line")
        return cls(
            quote=str(data.get("quote", "")),
            verified=bool(data.get("verified")),
            start_line=start if isinstance(start, int) else None,
            end_line=end if isinstance(end, int) else None,
        )

    @property
    def lines(self) -> range:
        """The document lines it covers (none when not verified)."""
        if self.start_line is None or self.end_line is None:
            return range(0)
        return range(self.start_line, self.end_line + 1)


def find_quotes(text: str) -> list[str]:
    """The quotes in `text`, in order, each exactly as it appears there (without its quote marks or
    the blockquote's `>`). A quote inside a blockquote line counts once, as the line."""
    found: list[tuple[int, int, str]] = []
    for match in _BLOCKQUOTE.finditer(text):
        found.append((match.start(1), match.end(1), match.group(1).rstrip()))
    for match in _QUOTED.finditer(text):
        group = 1 if match.group(1) is not None else 2
        start, end = match.start(group), match.end(group)
        if not any(s <= start and end <= e for s, e, _ in found):
            found.append((start, end, match.group(group)))
    quotes = []
    for _, _, quote in sorted(found):
        if len(_WORD.findall(quote)) >= MIN_QUOTE_WORDS:
            quotes.append(quote.strip())
    return quotes


def _normalise(text: str) -> tuple[str, list[int]]:
    """`text` folded for comparison (lower case, one kind of quote mark and dash, "..." for "…", one
    space for every whitespace run), and for each of its characters the index it came from."""
    folded: list[str] = []
    origin: list[int] = []
    in_space = False
    for index, char in enumerate(text):
        if char.isspace():
            if not in_space:
                folded.append(" ")
                origin.append(index)
            in_space = True
            continue
        in_space = False
        if char == "…":
            folded.extend("...")
            origin.extend((index, index, index))
            continue
        for piece in char.translate(_FOLD).lower():
            folded.append(piece)
            origin.append(index)
    return "".join(folded), origin


class DocumentIndex:
    """A document prepared for looking quotes up: build it once per battle (linear in its size)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.folded, self._origin = _normalise(text)
        self._line_starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def line_of(self, index: int) -> int:
        """The line (from 1) of the character at `index` of the original text."""
        return bisect.bisect_right(self._line_starts, index)

    def locate(self, quote: str) -> tuple[int, int] | None:
        """The first and last line of where the document holds `quote` (or something close), or None."""
        needle = _normalise(quote)[0].strip(_EDGE)
        if not needle:
            return None
        span = self._exact(needle) or self._in_parts(needle) or self._close(needle)
        if span is None:
            return None
        start, end = span  # in the folded text, end exclusive
        return self.line_of(self._origin[start]), self.line_of(self._origin[end - 1])

    def _exact(self, needle: str) -> tuple[int, int] | None:
        at = self.folded.find(needle)
        return (at, at + len(needle)) if at >= 0 else None

    def _in_parts(self, needle: str) -> tuple[int, int] | None:
        """A quote that leaves text out with an ellipsis: each part in order, close together."""
        parts = [p.strip(_EDGE) for p in needle.split("...")]
        parts = [p for p in parts if p]
        if len(parts) < 2:
            return None
        start = position = self.folded.find(parts[0])
        if start < 0:
            return None
        for part in parts:
            at = self.folded.find(part, position)
            # An ellipsis stands for a few words or sentences, not for pages.
            if at < 0 or at - position > 10 * len(needle):
                return None
            position = at + len(part)
        return start, position

    def _close(self, needle: str) -> tuple[int, int] | None:
        edits = max(MIN_EDITS, MAX_EDIT_SHARE * len(needle))
        cutoff = 100 * (1 - edits / (2 * len(needle)))
        found = fuzz.partial_ratio_alignment(needle, self.folded, score_cutoff=cutoff)
        if found is None or found.dest_end <= found.dest_start:
            return None
        return found.dest_start, found.dest_end

    def cite(self, quote: str) -> Citation:
        lines = self.locate(quote)
        if lines is None:
            return Citation(quote=quote, verified=False)
        return Citation(quote=quote, verified=True, start_line=lines[0], end_line=lines[1])


def cite_all(index: DocumentIndex, text: str) -> list[Citation]:
    """Every quote of a turn, verified against the document, in the order the turn has them."""
    return [index.cite(quote) for quote in find_quotes(text)]


@dataclass(frozen=True)
class Tally:
    verified: int = 0
    unverified: int = 0

    def __add__(self, other: Tally) -> Tally:
        return Tally(self.verified + other.verified, self.unverified + other.unverified)

    def as_dict(self) -> dict[str, int]:
        return {"verified": self.verified, "unverified": self.unverified}


def tally(citations: Iterable[Citation]) -> Tally:
    citations = list(citations)
    verified = sum(1 for c in citations if c.verified)
    return Tally(verified=verified, unverified=len(citations) - verified)


def answered(attacks: Sequence[Citation], answers: Sequence[Citation]) -> int:
    """How many verified attacks the answers cite again (their lines overlap): answered points."""
    cited = {line for c in answers for line in c.lines}
    return sum(1 for attack in attacks if attack.verified and cited.intersection(attack.lines))
