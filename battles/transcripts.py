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
    if battle["error"]:
        lines.append(f"- Error: {_inline(battle['error'])}")
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
    usage = transcript["usage"]
    cost = "unknown" if transcript["cost_usd"] is None else f"${transcript['cost_usd']:.6f}"
    lines += [
        "",
        f"Tokens: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion; cost: {cost}",
        "",
    ]
    return "\n".join(lines)
