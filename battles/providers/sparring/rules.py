"""The sparring model's rules: how each role answers the prompt it is given, without any AI.

It reads the same prompt a real model gets: it finds the document between its markers, the
transcript and the task line, and answers in its role. The Aggressor quotes real sentences of the
document and attacks them, the Defender answers those quotes, the Moderator scores the round and, in
the last round, gives the verdict in the format `battles.engine.verdict` parses (and as JSON when the
structured verdict request asks for it). Deterministic: the same prompt always gives the same answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from battles.engine.prompts import EVIDENCE_HEADER, TASK_LINE, TRANSCRIPT_HEADER
from battles.engine.verdict import Scores, parse_round_scores
from battles.models import Role

# Two quotes per round keeps each turn readable (about 100–200 words).
QUOTES_PER_ROUND = 2
# Sentences shorter than this are headings or fragments; longer ones are trimmed in quotes.
MIN_SENTENCE_WORDS = 5
MAX_QUOTE_CHARS = 240

DOCUMENT = re.compile(r"<<<DOCUMENT (\w+)[^\n]*>>>\n(.*?)\n<<<END DOCUMENT \1>>>", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_QUOTE_LINE = re.compile(r'^\d+\.\s+"(.+)"\s*$', re.MULTILINE)

ABSOLUTES = (
    "always",
    "never",
    "all",
    "every",
    "none",
    "guaranteed",
    "certainly",
    "obviously",
    "clearly",
    "undoubtedly",
    "only",
    "must",
    "best",
    "perfect",
    "impossible",
    "everyone",
)
VAGUE = (
    "some",
    "many",
    "often",
    "might",
    "could",
    "probably",
    "various",
    "several",
    "soon",
    "significant",
    "significantly",
    "etc",
    "stuff",
    "things",
    "basically",
    "very",
)
CODE_SMELLS = ("todo", "fixme", "hack", "eval(", "except:", "password", "global ", "sleep(", "xxx")
EVIDENCE = (
    "because",
    "for example",
    "for instance",
    "according to",
    "measured",
    "data",
    "study",
    "source",
    "shows",
    "tested",
    "%",
)


@dataclass
class Weakness:
    sentence: str
    position: int
    absolutes: list[str] = field(default_factory=list)
    vague: list[str] = field(default_factory=list)
    numbers: list[str] = field(default_factory=list)
    smells: list[str] = field(default_factory=list)

    @property
    def score(self) -> int:
        length_penalty = 1 if len(self.sentence.split()) > 35 else 0
        return (
            2 * len(self.absolutes)
            + len(self.vague)
            + 2 * len(self.smells)
            + (1 if self.numbers and not _has_evidence(self.sentence) else 0)
            + length_penalty
        )


@dataclass(frozen=True)
class Prompt:
    """What the sparring model understood from the messages it was given."""

    role: str
    round: int
    rounds: int
    document: str
    transcript: list[tuple[int, str, str]]  # (round, role, content)


def parse_prompt(messages: Sequence[dict[str, Any]]) -> Prompt:
    system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    user = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") != "system")
    role = next((r.value for r in Role if f"You are the {r.label}" in system), Role.AGGRESSOR.value)
    task = None
    for task in TASK_LINE.finditer(user):  # noqa: B007 - the last one is the real task
        pass
    round_number, rounds = (int(task.group(1)), int(task.group(2))) if task else (1, 1)
    doc = DOCUMENT.search(user)
    document = doc.group(2) if doc else user
    after_doc = user[doc.end() :] if doc else ""
    return Prompt(role, round_number, rounds, document, _parse_transcript(after_doc))


def _parse_transcript(text: str) -> list[tuple[int, str, str]]:
    headers = list(TRANSCRIPT_HEADER.finditer(text))
    entries = []
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        body = text[header.end() : end]
        body = TASK_LINE.split(body)[0] if TASK_LINE.search(body) else body
        body = body.split(f"\n\n{EVIDENCE_HEADER} for ")[0]  # the arena's note to the Moderator
        entries.append((int(header.group(1)), header.group(2).lower(), body.strip()))
    return entries


def sentences(document: str) -> list[str]:
    """The document's sentences worth quoting, in order, as they appear in the text."""
    found = []
    for raw in _SENTENCE_END.split(document):
        sentence = raw.strip()
        if sentence.startswith(("#", "[Truncated:", "```")):  # headings, our own note, code fences
            continue
        sentence = sentence.lstrip(">*-• ").strip()
        if len(sentence.split()) >= MIN_SENTENCE_WORDS and '"' not in sentence:
            found.append(sentence[:MAX_QUOTE_CHARS])
    return found


def weaknesses(document: str) -> list[Weakness]:
    """The document's sentences, weakest first (ties in document order)."""
    ranked = []
    for position, sentence in enumerate(sentences(document)):
        words = re.findall(r"[a-z']+", sentence.lower())
        lowered = sentence.lower()
        ranked.append(
            Weakness(
                sentence=sentence,
                position=position,
                absolutes=sorted({w for w in words if w in ABSOLUTES}),
                vague=sorted({w for w in words if w in VAGUE}),
                numbers=re.findall(r"\d[\d,.]*%?", sentence),
                smells=[s.strip() for s in CODE_SMELLS if s in lowered],
            )
        )
    return sorted(ranked, key=lambda w: (-w.score, w.position))


def _has_evidence(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in EVIDENCE)


def _pick(options: Sequence[str], *seed: object) -> str:
    digest = hashlib.sha256("|".join(map(str, seed)).encode()).digest()
    return options[digest[0] % len(options)]


def targets_for_round(document: str, round_number: int) -> list[Weakness]:
    ranked = weaknesses(document)
    if not ranked:
        return []
    start = (round_number - 1) * QUOTES_PER_ROUND
    return [ranked[(start + i) % len(ranked)] for i in range(min(QUOTES_PER_ROUND, len(ranked)))]


def _attack_lines(w: Weakness) -> list[str]:
    lines = []
    if w.smells:
        lines.append(f"It carries a warning sign ({', '.join(w.smells)}): this is unfinished or unsafe work.")
    if w.absolutes:
        words = ", ".join(f"'{a}'" for a in w.absolutes)
        lines.append(
            f"{words}: an absolute claim that one counter-example breaks, and no evidence is offered."
        )
    if w.numbers and not _has_evidence(w.sentence):
        lines.append(f"The figure {w.numbers[0]} comes with no source, no baseline and no method.")
    if w.vague:
        words = ", ".join(f"'{v}'" for v in w.vague)
        lines.append(f"{words}: vague wording. How many, how often, measured how?")
    if len(w.sentence.split()) > 35:
        lines.append(f"At {len(w.sentence.split())} words the sentence buries its own claim.")
    if not lines:
        lines.append(
            _pick(
                (
                    "It asserts without showing: no example, number or source stands behind it.",
                    "Nothing in the document supports this; the reader is asked to take it on faith.",
                    "It states a conclusion and skips the reasoning that should lead to it.",
                ),
                w.sentence,
            )
        )
    return lines


def aggressor_reply(prompt: Prompt) -> str:
    targets = targets_for_round(prompt.document, prompt.round)
    if not targets:
        return "There is nothing here to attack: the document makes no claim at all, which is its weakness."
    opening = _pick(
        (
            "I go straight for the weakest claims.",
            "Here is where this document breaks.",
            "Two sentences carry more weight than they can bear.",
        ),
        prompt.document[:200],
        prompt.round,
    )
    parts = [f"Round {prompt.round}. {opening}"]
    for number, w in enumerate(targets, start=1):
        parts.append(f'{number}. "{w.sentence}"\n' + " ".join(_attack_lines(w)))
    parts.append("Until these points are answered, the document does not hold up.")
    return "\n\n".join(parts)


def defender_reply(prompt: Prompt) -> str:
    attack = next(
        (c for r, role, c in reversed(prompt.transcript) if role == Role.AGGRESSOR and r == prompt.round), ""
    )
    quotes = _QUOTE_LINE.findall(attack)
    if not quotes:
        return "The Aggressor quoted nothing from the document, so there is nothing to answer: it stands."
    all_sentences = sentences(prompt.document)
    support = sum(1 for s in all_sentences if _has_evidence(s) or re.search(r"\d", s))
    parts = [f"Round {prompt.round}. Every point, answered."]
    for number, quote in enumerate(quotes, start=1):
        parts.append(f'{number}. "{quote}"\n' + " ".join(_defence_lines(quote, all_sentences)))
    if support:
        parts.append(f"The document backs its claims with evidence or figures in {support} other place(s).")
    else:
        parts.append("The document is a statement of intent; judged as such, it is clear and coherent.")
    return "\n\n".join(parts)


def _defence_lines(quote: str, all_sentences: list[str]) -> list[str]:
    lines = []
    if quote in all_sentences:
        index = all_sentences.index(quote)
        if index + 1 < len(all_sentences):
            lines.append(f'Read in context, the next sentence says: "{all_sentences[index + 1]}"')
    else:
        lines.append("That is not what the document says, word for word.")
    lowered = quote.lower()
    if any(w in ABSOLUTES for w in re.findall(r"[a-z']+", lowered)):
        lines.append("The strong wording states a commitment, not a law of nature.")
    if re.search(r"\d", quote):
        lines.append("A concrete figure is checkable, which is more than the attack offers.")
    if not lines[1:]:
        lines.append(
            _pick(
                (
                    "The point is plain and the attack names no concrete flaw in it.",
                    "The sentence does its job: it tells the reader what to expect.",
                    "Calling it unsupported is not a counter-argument.",
                ),
                quote,
            )
        )
    return lines


def round_scores(prompt: Prompt) -> Scores:
    """Aggressor: how many real weaknesses it quoted. Defender: how much of it the document supports."""
    attack = next(
        (c for r, role, c in reversed(prompt.transcript) if role == Role.AGGRESSOR and r == prompt.round), ""
    )
    defence = next(
        (c for r, role, c in reversed(prompt.transcript) if role == Role.DEFENDER and r == prompt.round), ""
    )
    by_sentence = {w.sentence: w for w in weaknesses(prompt.document)}
    quotes = _QUOTE_LINE.findall(attack)
    flaws = sum(by_sentence[q].score for q in quotes if q in by_sentence)
    answered = len(_QUOTE_LINE.findall(defence))
    context_hits = defence.count("Read in context")
    aggressor = min(9, 3 + flaws)
    defender = min(9, 3 + answered + context_hits + (1 if "evidence or figures" in defence else 0))
    return Scores(aggressor=float(aggressor), defender=float(defender))


def moderator_reply(prompt: Prompt) -> str:
    scores = round_scores(prompt)
    leader = (
        "the Aggressor"
        if scores.aggressor > scores.defender
        else "the Defender"
        if scores.defender > scores.aggressor
        else "neither side"
    )
    parts = [
        f"Round {prompt.round} ruling. On balance, {leader} made the stronger case this round.",
        f"SCORES: aggressor={scores.aggressor:g} defender={scores.defender:g}",
    ]
    if prompt.round == prompt.rounds:
        verdict = final_verdict(prompt)
        parts += [
            f"WINNER: {verdict.winner}",
            f"FINAL SCORES: aggressor={verdict.scores.aggressor:g} defender={verdict.scores.defender:g}",
            f"SUMMARY: {verdict.summary}",
        ]
    return "\n".join(parts)


@dataclass(frozen=True)
class FinalVerdict:
    winner: str
    scores: Scores
    summary: str


def final_verdict(prompt: Prompt) -> FinalVerdict:
    """The verdict on the whole battle: the mean of every round's scores (this round's included)."""
    earlier = [
        parse_round_scores(content)
        for r, role, content in prompt.transcript
        if role == Role.MODERATOR and r < prompt.round
    ]
    history = [s for s in earlier if s] + [round_scores(prompt)]
    aggressor = round(sum(s.aggressor for s in history) / len(history), 1)
    defender = round(sum(s.defender for s in history) / len(history), 1)
    winner = "aggressor" if aggressor > defender else "defender" if defender > aggressor else "draw"
    outcome = {
        "aggressor": "the attacks exposed weaknesses the defence could not cover",
        "defender": "the document withstood the attacks, which the defence answered from its own text",
        "draw": "attack and defence cancelled each other out",
    }[winner]
    summary = (
        f"Over {len(history)} round(s), {outcome}. The Aggressor averaged {aggressor:g} and "
        f"the Defender {defender:g} out of 10."
    )
    return FinalVerdict(winner, Scores(aggressor=aggressor, defender=defender), summary)


def verdict_reply(prompt: Prompt) -> str:
    """The answer to the structured verdict request: the JSON object `battles.engine.verdict` asks for."""
    verdict = final_verdict(prompt)
    return json.dumps(
        {
            "winner": verdict.winner,
            "aggressor": verdict.scores.aggressor,
            "defender": verdict.scores.defender,
            "summary": verdict.summary,
        }
    )


REPLIES = {Role.AGGRESSOR: aggressor_reply, Role.DEFENDER: defender_reply, Role.MODERATOR: moderator_reply}


def reply(messages: Sequence[dict[str, Any]], *, structured: bool = False) -> str:
    """The answer to `messages`; `structured` when a JSON answer is asked for (response_format)."""
    prompt = parse_prompt(messages)
    if structured:
        return verdict_reply(prompt)
    return REPLIES[Role(prompt.role)](prompt)


def words(text: str) -> list[str]:
    """Split into streamable pieces that concatenate back to exactly `text`."""
    return re.findall(r"\S+\s*|\s+", text)


async def stream_words(text: str, *, delay_seconds: float, max_tokens: int | None) -> AsyncIterator[str]:
    for count, piece in enumerate(words(text)):
        if max_tokens is not None and count >= max_tokens:
            return
        if delay_seconds and count:
            await asyncio.sleep(delay_seconds)
        yield piece
