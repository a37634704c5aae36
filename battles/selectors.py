"""Reads: the event log, recent battles, transcripts. No writes here."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from battles.events import RecordedEvent
from battles.models import Battle, Event, Turn


def battle_list_recent(*, limit: int = 20) -> QuerySet[Battle]:
    return Battle.objects.select_related("document").order_by("-created_at")[:limit]


async def events_after(*, battle_id: object, after: int, limit: int = 1000) -> list[RecordedEvent]:
    """Stored events with seq > `after`, oldest first, at most `limit` of them."""
    rows = Event.objects.filter(battle_id=battle_id, seq__gt=after).order_by("seq")[:limit]
    return [RecordedEvent(e.seq, e.type, e.data, e.offset_ms) async for e in rows]


async def battle_status(*, battle_id: object) -> str | None:
    return await Battle.objects.filter(pk=battle_id).values_list("status", flat=True).afirst()


def battle_transcript(*, battle: Battle) -> dict[str, Any]:
    """The battle as plain data: what transcript.json serves and transcript.md renders."""
    turns = Turn.objects.filter(battle=battle).order_by("index")
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
            "models": {role: battle.model_for(role) for role in ("aggressor", "defender", "moderator")},
            "created_at": battle.created_at.isoformat(),
            "started_at": battle.started_at.isoformat() if battle.started_at else None,
            "finished_at": battle.finished_at.isoformat() if battle.finished_at else None,
            "error": battle.error or None,
        },
        "document": {
            "name": battle.document.original_name,
            "size": battle.document.size,
            "sha256": battle.document.sha256,
        },
        "turns": [
            {
                "turn": t.index,
                "round": t.round,
                "role": t.role,
                "model": t.model,
                "status": t.status,
                "content": t.content,
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
            }
            if battle.winner
            else None
        ),
        "usage": {"prompt_tokens": battle.prompt_tokens, "completion_tokens": battle.completion_tokens},
        "cost_usd": None if battle.cost_usd is None else float(battle.cost_usd),
    }
