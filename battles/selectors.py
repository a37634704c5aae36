"""Reads: the event log, recent battles, transcripts. No writes here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.db.models import QuerySet

from battles.constants import ROLES
from battles.events import RecordedEvent
from battles.models import Battle, Event, Turn


def battle_list_public(*, limit: int = 20) -> QuerySet[Battle]:
    """The newest public battles: the only ones a visitor may browse to (an unlisted battle is
    reachable by its link alone)."""
    return (
        Battle.objects.filter(visibility=Battle.Visibility.PUBLIC)
        .select_related("document")
        .order_by("-created_at")[:limit]
    )


# Link previews cut the description around here; a longer one is shortened with an ellipsis.
SHARE_DESCRIPTION_CHARS = 200


def battle_share_card(*, battle: Battle, url: str) -> dict[str, str]:
    """What a public battle's link preview shows (Open Graph, Twitter card): the document's name, the
    result and the verdict's summary. Never call it for an unlisted battle."""
    if battle.status == Battle.Status.FINISHED:
        if battle.winner == Battle.Winner.DRAW:
            result = "A draw"
        else:
            result = f"The {Battle.Winner(battle.winner).label} wins" if battle.winner else "Finished"
        if battle.aggressor_score is not None and battle.defender_score is not None:
            result += f", {battle.aggressor_score:g} to {battle.defender_score:g}"
        description = f"{result}. {battle.summary}".strip()
    elif battle.status == Battle.Status.FAILED:
        description = "The battle stopped before its verdict."
    else:
        description = "Live: an Aggressor attacks it, a Defender defends it, a Moderator judges."
    if len(description) > SHARE_DESCRIPTION_CHARS:
        description = description[: SHARE_DESCRIPTION_CHARS - 1].rstrip() + "…"
    return {
        "title": f"{battle.document.original_name} · Boss Battle Arena",
        "description": description,
        "url": url,
    }


async def events_after(*, battle_id: UUID, after: int, limit: int = 1000) -> list[RecordedEvent]:
    """Stored events with seq > `after`, oldest first, at most `limit` of them."""
    rows = Event.objects.filter(battle_id=battle_id, seq__gt=after).order_by("seq")[:limit]
    return [RecordedEvent(e.seq, e.type, e.data, e.offset_ms) async for e in rows]


async def battle_status(*, battle_id: UUID) -> str | None:
    return await Battle.objects.filter(pk=battle_id).values_list("status", flat=True).afirst()


def battles_to_take_over() -> list[UUID]:
    """Running battles whose runner's lease has run out (it died or handed them over)."""
    return list(Battle.objects.abandoned().values_list("pk", flat=True))


async def lease_expired(*, battle_id: UUID) -> bool:
    """Whether the battle is running and its runner's lease has run out."""
    return await Battle.objects.abandoned().filter(pk=battle_id).aexists()


@dataclass(frozen=True)
class Progress:
    """How far a running battle got: what a process taking it over continues from."""

    completed: list[Turn]  # turns 1..n, in order
    last_seq: int
    last_offset_ms: int


def battle_progress(*, battle: Battle) -> Progress:
    """Precondition: the caller holds the battle's lease, so nothing is appended meanwhile."""
    completed = list(Turn.objects.filter(battle=battle, status=Turn.Status.COMPLETED).order_by("index"))
    last = Event.objects.filter(battle=battle).order_by("-seq").first()
    return Progress(
        completed=completed,
        last_seq=last.seq if last else 0,
        last_offset_ms=last.offset_ms if last else 0,
    )


def battle_turns(*, battle: Battle) -> list[Turn]:
    """The battle's turns, one per index: a turn cut off and started again counts once, as its retry."""
    latest: dict[int, Turn] = {}
    for turn in Turn.objects.filter(battle=battle).order_by("index", "started_at", "pk"):
        latest[turn.index] = turn
    return list(latest.values())


def battle_transcript(*, battle: Battle) -> dict[str, Any]:
    """The battle as plain data: what transcript.json serves and transcript.md renders."""
    turns = battle_turns(battle=battle)
    scores = (
        {"aggressor": battle.aggressor_score, "defender": battle.defender_score}
        if battle.status == Battle.Status.FINISHED
        else None
    )
    return {
        "battle": {
            "id": str(battle.pk),
            "status": battle.status,
            "rounds": battle.rounds,
            "models": {role: battle.model_for(role) for role in ROLES},
            "jury": battle.jury,
            "created_at": battle.created_at.isoformat(),
            "started_at": battle.started_at.isoformat() if battle.started_at else None,
            "finished_at": battle.finished_at.isoformat() if battle.finished_at else None,
            "error": battle.error or None,
        },
        "document": {
            "name": battle.document.original_name,
            "size": battle.document.size,
            "sha256": battle.document.sha256,
            "flags": battle.document.flags,
        },
        "turns": [
            {
                "turn": t.index,
                "round": t.round,
                "role": t.role,
                "model": t.model,
                "status": t.status,
                "content": t.content,
                "citations": t.citations,
                "usage": {"prompt_tokens": t.prompt_tokens, "completion_tokens": t.completion_tokens},
            }
            for t in turns
        ],
        "verdict": (
            {
                "winner": battle.winner,
                "scores": scores,
                "summary": battle.summary,
                "fallback": battle.verdict_fallback,
                "source": battle.verdict_source,
                # evidence, and with a jury: jury, agreement, moderator (as in the verdict event)
                **battle.verdict_details,
            }
            if battle.winner
            else None
        ),
        "usage": {"prompt_tokens": battle.prompt_tokens, "completion_tokens": battle.completion_tokens},
        "cost_usd": None if battle.cost_usd is None else float(battle.cost_usd),
    }
