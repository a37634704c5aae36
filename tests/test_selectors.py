"""Reads (battles.selectors): the log, battle state, takeover candidates, turns and transcripts."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from battles import events, selectors, services
from battles.events import RecordedEvent
from battles.models import Battle, Turn
from tests.support.logs import token
from tests.support.runs import DEAD, expire_lease

pytestmark = pytest.mark.django_db

# The async selectors run through async_to_sync: their queries then run on this test's thread, inside
# its transaction.
events_after = async_to_sync(selectors.events_after)
battle_status = async_to_sync(selectors.battle_status)
lease_expired = async_to_sync(selectors.lease_expired)


def add_turn(battle: Battle, index: int, status: str, content: str, *, minutes: int = 0) -> Turn:
    return Turn.objects.create(
        battle=battle,
        index=index,
        round=(index - 1) // 3 + 1,
        role=("aggressor", "defender", "moderator")[(index - 1) % 3],
        model="m",
        status=status,
        content=content,
        started_at=timezone.now() + timedelta(minutes=minutes),
    )


def test_events_after_pages_through_the_log_in_seq_order(make_battle) -> None:
    battle, other = make_battle(), make_battle()
    services.events_append(battle_id=battle.pk, events=[token(4), token(2), token(5)])  # stored out of order
    services.events_append(battle_id=battle.pk, events=[token(1), token(3)])
    services.events_append(battle_id=other.pk, events=[token(1, "other")])

    pages = [events_after(battle_id=battle.pk, after=after, limit=2) for after in (0, 2, 4, 5)]

    assert [[e.seq for e in page] for page in pages] == [[1, 2], [3, 4], [5], []]
    assert pages[0][0] == RecordedEvent(1, events.TOKEN, {"turn": 1, "role": "aggressor", "text": "x"}, 1)
    assert [e.seq for e in events_after(battle_id=battle.pk, after=0)] == [1, 2, 3, 4, 5]


def test_battle_status_and_lease_expired(make_battle) -> None:
    pending, running, abandoned = make_battle(), make_battle(), make_battle()
    for battle in (running, abandoned):
        services.battle_start(battle_id=battle.pk, owner=DEAD)
    expire_lease(abandoned.pk)

    assert battle_status(battle_id=pending.pk) == Battle.Status.PENDING
    assert battle_status(battle_id=running.pk) == Battle.Status.RUNNING
    assert battle_status(battle_id=uuid.uuid4()) is None  # no such battle
    assert [lease_expired(battle_id=b.pk) for b in (pending, running, abandoned)] == [False, False, True]


def test_battles_to_take_over_are_the_running_ones_whose_lease_ran_out(make_battle) -> None:
    pending, live, dead, released, over = (make_battle() for _ in range(5))
    for battle in (live, dead, released, over):
        services.battle_start(battle_id=battle.pk, owner=DEAD)
    expire_lease(dead.pk)
    services.lease_release(battle_id=released.pk, owner=DEAD)
    expire_lease(over.pk)
    services.battle_fail(battle_id=over.pk, error="Over.")

    assert set(selectors.battles_to_take_over()) == {dead.pk, released.pk}


def test_battle_progress_is_the_completed_turns_and_where_the_log_stands(make_battle) -> None:
    battle = make_battle()
    assert selectors.battle_progress(battle=battle) == selectors.Progress(
        completed=[], last_seq=0, last_offset_ms=0
    )
    first = add_turn(battle, 1, Turn.Status.COMPLETED, "A.")
    add_turn(battle, 2, Turn.Status.INTERRUPTED, "Cut")
    services.events_append(battle_id=battle.pk, events=[token(1), RecordedEvent(2, events.TOKEN, {}, 750)])

    progress = selectors.battle_progress(battle=battle)

    assert progress == selectors.Progress(completed=[first], last_seq=2, last_offset_ms=750)


def test_battle_turns_count_an_interrupted_then_retried_turn_once(make_battle) -> None:
    battle = make_battle(rounds=1)
    first = add_turn(battle, 1, Turn.Status.COMPLETED, "Attack.")
    add_turn(battle, 2, Turn.Status.INTERRUPTED, "Def", minutes=1)
    retried = add_turn(battle, 2, Turn.Status.COMPLETED, "Defence.", minutes=2)
    running = add_turn(battle, 3, Turn.Status.RUNNING, "Sco", minutes=3)

    turns = selectors.battle_turns(battle=battle)

    assert [(t.pk, t.index, t.content) for t in turns] == [
        (first.pk, 1, "Attack."),
        (retried.pk, 2, "Defence."),
        (running.pk, 3, "Sco"),
    ]


CITATION = {"quote": "Automated tests always pay off", "verified": True, "start_line": 3, "end_line": 3}
EVIDENCE = {"aggressor": {"verified": 1, "unverified": 0}, "defender": {"verified": 0, "unverified": 0}}


def test_the_transcript_of_a_finished_battle(make_battle) -> None:
    battle = make_battle(rounds=1, defender="openai/other")
    services.battle_start(battle_id=battle.pk)
    add_turn(battle, 1, Turn.Status.COMPLETED, "Attack.")
    Turn.objects.filter(battle=battle).update(prompt_tokens=30, completion_tokens=20)
    services.battle_finish(
        battle_id=battle.pk,
        winner="defender",
        aggressor_score=4.0,
        defender_score=7.5,
        summary="The defence held.",
        verdict_fallback=False,
        verdict_source="structured",
        verdict_details={"evidence": EVIDENCE},
        prompt_tokens=120,
        completion_tokens=80,
        cost_usd=0.25,
    )
    Turn.objects.filter(battle=battle).update(citations=[CITATION])
    battle = Battle.objects.select_related("document").get(pk=battle.pk)

    transcript = selectors.battle_transcript(battle=battle)

    assert battle.cost_usd == Decimal("0.25")
    assert transcript == {
        "battle": {
            "id": str(battle.pk),
            "status": "finished",
            "rounds": 1,
            "models": {
                "aggressor": "arena/sparring",
                "defender": "openai/other",
                "moderator": "arena/sparring",
            },
            "jury": [],
            "created_at": battle.created_at.isoformat(),
            "started_at": battle.started_at.isoformat(),
            "finished_at": battle.finished_at.isoformat(),
            "error": None,
        },
        "document": {
            "name": "essay.md",
            "size": battle.document.size,
            "sha256": battle.document.sha256,
            "flags": [],
        },
        "turns": [
            {
                "turn": 1,
                "round": 1,
                "role": "aggressor",
                "model": "m",
                "status": "completed",
                "content": "Attack.",
                "citations": [CITATION],
                "usage": {"prompt_tokens": 30, "completion_tokens": 20},
            }
        ],
        "verdict": {
            "winner": "defender",
            "scores": {"aggressor": 4.0, "defender": 7.5},
            "summary": "The defence held.",
            "fallback": False,
            "source": "structured",
            "evidence": EVIDENCE,
        },
        "usage": {"prompt_tokens": 120, "completion_tokens": 80},
        "cost_usd": 0.25,
    }


def test_the_transcript_of_a_battle_without_a_verdict(make_battle) -> None:
    battle = make_battle()
    services.battle_start(battle_id=battle.pk)
    services.battle_fail(battle_id=battle.pk, error="The model failed.")
    battle = Battle.objects.select_related("document").get(pk=battle.pk)

    transcript = selectors.battle_transcript(battle=battle)

    assert (transcript["battle"]["status"], transcript["battle"]["error"]) == ("failed", "The model failed.")
    assert (transcript["turns"], transcript["verdict"], transcript["cost_usd"]) == ([], None, None)
    assert transcript["battle"]["finished_at"] is not None
    pending = selectors.battle_transcript(battle=make_battle())
    assert (pending["battle"]["started_at"], pending["battle"]["finished_at"]) == (None, None)


def test_public_battles_come_newest_first_and_unlisted_ones_never(make_battle) -> None:
    made = [make_battle() for _ in range(4)]
    for age, battle in enumerate(made):
        Battle.objects.filter(pk=battle.pk).update(
            created_at=timezone.now() - timedelta(minutes=age),
            visibility=Battle.Visibility.UNLISTED if age == 0 else Battle.Visibility.PUBLIC,
        )

    assert [b.pk for b in selectors.battle_list_public(limit=2)] == [made[1].pk, made[2].pk]


def test_a_share_card_tells_the_result_and_the_summary(make_battle) -> None:
    battle = make_battle()
    Battle.objects.filter(pk=battle.pk).update(
        status=Battle.Status.FINISHED,
        winner=Battle.Winner.DEFENDER,
        aggressor_score=5.5,
        defender_score=7,
        summary="The Defender " + "held firm " * 40,
    )
    battle.refresh_from_db()

    card = selectors.battle_share_card(battle=battle, url="https://arena.example/battles/x/")

    assert card["title"] == f"{battle.document.original_name} · Boss Battle Arena"
    assert card["description"].startswith("The Defender wins, 5.5 to 7. The Defender held firm")
    assert len(card["description"]) == selectors.SHARE_DESCRIPTION_CHARS
    assert card["description"].endswith("…")
    assert card["url"] == "https://arena.example/battles/x/"
