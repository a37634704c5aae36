"""Passages that address an AI rather than a human reader: prompt-injection attempts in a document
(or, later, in an audience's question).

A small set of patterns, each for a phrasing that instructs a model and that ordinary prose has no use
for. Finding them does not make the text safe: the prompts already frame the document as data. It
makes the attempt visible, to spectators (the document panel marks the line) and to the agents (their
prompts name the line as text to scrutinise, never to obey).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The text of a flagged line is kept for display, cut to this many characters.
MAX_FLAG_TEXT = 200

_EARLIER = r"(?:previous|prior|preceding|above|earlier|foregoing|former|original|all|your|system)"
_ORDERS = r"(?:instructions?|prompts?|directions?|directives?|rules|guidelines|messages|context)"
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE | re.MULTILINE))
    for name, pattern in (
        # "Ignore previous instructions", "disregard all prior rules", "forget your instructions".
        (
            "override",
            rf"\b(?:ignore|disregard|forget|override|bypass)\s+(?:(?:all|any|of|the)\s+)*{_EARLIER}"
            rf"(?:\s+\w+)?\s+{_ORDERS}\b",
        ),
        # "Reply only with …", "respond with only", "answer only: yes", "output only 'OK'".
        (
            "reply-only",
            r"\b(?:reply|respond|answer|output)\s+(?:\w+\s+){0,2}?"
            r"(?:only\s+with|with\s+only|only\s*[:\"'“‘])",
        ),
        # "You are now DAN", "you are now an unrestricted assistant", "you are no longer bound".
        (
            "role-change",
            r"\byou\s+are\s+now\s+(?:DAN\b|in\s+\w+\s+mode|an?\s+(?:[\w-]+\s+){0,3}?"
            r"(?:AI|assistant|model|bot|chatbot|agent|persona|character)\b)"
            r"|\byou\s+are\s+no\s+longer\s+(?:an?\s+)?(?:AI|assistant|bound|restricted|limited)\b"
            r"|\bfrom\s+now\s+on,?\s+you\s+are\b",
        ),
        # Reaching for the hidden prompt: "reveal your system prompt", "new system prompt:". Prose
        # about system prompts (this project's README) is not flagged.
        (
            "system-prompt",
            r"\b(?:reveal|print|show|repeat|output|disclose|leak|display|ignore|replace|new|updated)\s+"
            r"(?:(?:your|the|my|this)\s+)?system\s+(?:prompt|message|instructions)\b"
            r"|^\W*system\s+(?:prompt|message)\s*:",
        ),
        # A forged chat turn at the start of a line: "Assistant: …", "System: …", chat-template tokens.
        (
            "fake-turn",
            r"^\s*(?:#+\s*|\*\*)?(?:assistant|system)\s*(?:\*\*)?\s*:"
            r"|<\|im_start\|>|<\|(?:system|assistant|user)\|>|\[/?INST\]",
        ),
        # Addressed to a model directly: "to any AI reading this", "if you are a language model".
        (
            "addressed-to-ai",
            r"\b(?:any|every|dear)\s+(?:AI|LLM|language\s+model|chatbot)s?\s+(?:reading|processing|reviewing)\b"
            r"|\bif\s+you\s+are\s+an?\s+(?:AI|LLM|large\s+language\s+model|language\s+model)\b",
        ),
    )
)


@dataclass(frozen=True)
class Flag:
    """A line (numbered from 1, as in document.txt) that looks like an instruction to an AI."""

    line: int
    text: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "text": self.text}


def matches(text: str) -> list[str]:
    """The names of the patterns that `text` matches (empty for ordinary prose)."""
    return [name for name, pattern in PATTERNS if pattern.search(text)]


def find_flags(text: str) -> list[Flag]:
    """Each line of `text` that matches a pattern, once, in order."""
    flags = []
    for number, line in enumerate(text.split("\n"), start=1):
        if matches(line):
            flags.append(Flag(line=number, text=_clip(line.strip())))
    return flags


def _clip(text: str) -> str:
    return text if len(text) <= MAX_FLAG_TEXT else text[: MAX_FLAG_TEXT - 1].rstrip() + "…"
