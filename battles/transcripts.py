"""Transcripts as Markdown. The text is untrusted: it is put in fenced blocks that it cannot close."""

from __future__ import annotations

import re
from typing import Any


def _fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _inline(text: str) -> str:
    """A one-line value with Markdown and HTML specials neutralised."""
    text = " ".join(str(text).split())
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~])", r"\\\1", text)


def _citation(citation: dict[str, Any]) -> str:
    quote = f"“{_inline(citation['quote'])}”"
    if not citation["verified"]:
        return f"Not found in the document: {quote}"
    start, end = citation["start_line"], citation["end_line"]
    where = f"line {start}" if start == end else f"lines {start}–{end}"
    return f"Verified ({where}): {quote}"


def _scores(scores: dict[str, Any] | None) -> str:
    scores = scores or {}
    return f"aggressor {scores.get('aggressor')}, defender {scores.get('defender')}"


def _evidence_and_jury(verdict: dict[str, Any]) -> list[str]:
    lines = []
    evidence = verdict.get("evidence")
    if evidence:
        lines += ["", "Evidence (quotes found in the document / not found):", ""]
        lines += [
            f"- {side.capitalize()}: {counts['verified']} verified, {counts['unverified']} not found"
            for side, counts in evidence.items()
        ]
    if verdict.get("jury"):
        lines += ["", f"The jury (agreement {verdict['agreement']:.0%}):", ""]
        for juror in verdict["jury"]:
            if juror.get("answered") is False:
                held = "gave no verdict: a draw"
            elif juror["consistent"]:
                held = "held when the sides were swapped"
            else:
                held = "changed when swapped: a draw"
            lines.append(
                f"- {_inline(juror['model'])}: {juror['winner']} ({_scores(juror['scores'])}; {held})"
            )
        moderator = verdict["moderator"]
        lines += ["", f"The Moderator's own ruling: {moderator['winner']} ({_scores(moderator['scores'])})"]
    return lines


def render_markdown(transcript: dict[str, Any]) -> str:
    battle, document = transcript["battle"], transcript["document"]
    lines = [
        f"# Battle over {_inline(document['name'])}",
        "",
        f"- Battle: `{battle['id']}`",
        f"- Status: {battle['status']}",
        f"- Rounds: {battle['rounds']}",
        *(f"- {role.capitalize()}: {_inline(model)}" for role, model in battle["models"].items()),
    ]
    if battle.get("jury"):
        lines.append(f"- Jury: {', '.join(_inline(model) for model in battle['jury'])}")
    if battle["error"]:
        lines.append(f"- Error: {_inline(battle['error'])}")
    if document.get("flags"):
        lines += ["", "Lines of the document that address an AI rather than a reader (treated as text):", ""]
        lines += [f"- Line {flag['line']}: {_inline(flag['text'])}" for flag in document["flags"]]
    for turn in transcript["turns"]:
        fence = _fence(turn["content"])
        note = " (interrupted)" if turn["status"] == "interrupted" else ""
        lines += [
            "",
            f"## Round {turn['round']} · {turn['role'].capitalize()}{note}",
            "",
            f"{fence}text",
            turn["content"],
            fence,
        ]
        if turn.get("citations"):
            lines += ["", "Quotes checked against the document:", ""]
            lines += [f"- {_citation(citation)}" for citation in turn["citations"]]
    verdict = transcript["verdict"]
    if verdict:
        scores = verdict["scores"] or {}
        lines += [
            "",
            "## Verdict",
            "",
            f"- Winner: {verdict['winner']}",
            f"- Scores: aggressor {scores.get('aggressor')}, defender {scores.get('defender')}",
            "",
            _inline(verdict["summary"]),
        ]
        if verdict["fallback"]:
            lines += ["", "_Derived: the Moderator's verdict could not be parsed._"]
        elif verdict.get("source") == "text":
            lines += ["", "_Read from the Moderator's last turn (no structured verdict)._"]
        lines += _evidence_and_jury(verdict)
    usage = transcript["usage"]
    cost = "unknown" if transcript["cost_usd"] is None else f"${transcript['cost_usd']:.6f}"
    lines += [
        "",
        f"Tokens: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion; cost: {cost}",
        "",
    ]
    return "\n".join(lines)
