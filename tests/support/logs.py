"""Battle logs in tests: events to publish or append, the stored log, and what a complete log is."""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

from battles import events
from battles.events import RecordedEvent
from battles.models import Event


def token(seq: int, text: str = "x") -> RecordedEvent:
    return RecordedEvent(seq, events.TOKEN, {"turn": 1, "role": "aggressor", "text": text}, seq)


def finished(seq: int) -> RecordedEvent:
    return RecordedEvent(seq, events.BATTLE_COMPLETED, {}, seq)


def stored_events(battle_id: UUID) -> list[RecordedEvent]:
    """The battle's stored log, oldest first (a sync query: wrap it in sync_to_async in async tests)."""
    return [
        RecordedEvent(e.seq, e.type, e.data, e.offset_ms)
        for e in Event.objects.filter(battle_id=battle_id).order_by("seq")
    ]


def assert_consistent(log: list[RecordedEvent], *, rounds: int) -> None:
    """Gapless, one start, and every completed turn's content equals its last attempt's tokens."""
    assert [e.seq for e in log] == list(range(1, len(log) + 1))
    assert all(a.offset_ms <= b.offset_ms for a, b in zip(log, log[1:], strict=False))
    assert [e.type for e in log].count(events.BATTLE_STARTED) == 1
    assert [e.type for e in log[-2:]] == [events.VERDICT, events.BATTLE_COMPLETED]
    texts: dict[int, str] = defaultdict(str)
    completed = []
    for event in log:
        turn = event.data.get("turn")
        if event.type == events.TURN_STARTED:
            texts[turn] = ""
        elif event.type == events.TOKEN:
            texts[turn] += event.data["text"]
        elif event.type == events.TURN_COMPLETED:
            assert event.data["content"] == texts[turn]
            completed.append(turn)
    assert completed == list(range(1, rounds * 3 + 1))
