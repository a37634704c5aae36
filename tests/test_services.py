"""Every write (battles.services): uploads, guarded transitions, the lease's claims, fenced appends."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.utils import timezone

from battles import events, selectors, services
from battles.constants import MAX_ROUNDS
from battles.events import RecordedEvent
from battles.exceptions import ArenaFull, BattleError, BattleStateError, DocumentRejected, LeaseLost
from battles.models import Battle, Document, Event, Turn
from tests.support.documents import ESSAY
from tests.support.logs import stored_events, token
from tests.support.runs import DEAD, OTHER, abandoned_mid_turn, expire_lease

pytestmark = pytest.mark.django_db

FINISH = {
    "winner": "defender",
    "aggressor_score": 4.0,
    "defender_score": 7.5,
    "summary": "The defence held.",
    "verdict_fallback": False,
    "verdict_source": "structured",
    "prompt_tokens": 120,
    "completion_tokens": 80,
    "cost_usd": 0.0012345678,
}


def stored_files() -> set[Path]:
    return {p for p in Path(django_settings.MEDIA_ROOT).rglob("*") if p.is_file()}


# --- Uploads -------------------------------------------------------------------------------------


def test_document_create_stores_the_text_under_a_generated_name() -> None:
    document = services.document_create(data=ESSAY.encode(), name="../essay.md")

    assert (document.original_name, document.size) == ("essay.md", len(ESSAY.encode()))
    assert document.text == ESSAY and document.content_type == "text/markdown"
    assert Path(document.file.path).read_bytes() == ESSAY.encode()
    assert "essay" not in Path(document.file.path).name


@pytest.mark.parametrize(
    "data", [b"", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), b"x" * (2 * 1024 * 1024 + 1)]
)
def test_document_create_stores_nothing_on_rejection(data: bytes) -> None:
    files = stored_files()

    with pytest.raises(DocumentRejected):
        services.document_create(data=data, name="upload.txt")

    assert not Document.objects.exists()
    assert stored_files() == files


def test_battle_create_takes_the_configured_models_unless_told(essay_document: Document, settings) -> None:
    battle = services.battle_create(
        document=essay_document, models={"defender": "openai/other", "moderator": ""}
    )

    assert battle.status == Battle.Status.PENDING and battle.rounds == settings.ARENA_ROUNDS
    assert [battle.model_for(role) for role in ("aggressor", "defender", "moderator")] == [
        settings.ARENA_ROLE_MODELS["aggressor"],
        "openai/other",
        settings.ARENA_ROLE_MODELS["moderator"],  # an empty choice is no choice
    ]


@pytest.mark.parametrize("rounds", [0, MAX_ROUNDS + 1])
def test_battle_create_refuses_rounds_out_of_range(essay_document: Document, rounds: int) -> None:
    with pytest.raises(BattleError, match="Rounds must be between"):
        services.battle_create(document=essay_document, rounds=rounds)
    assert not Battle.objects.exists()


def test_an_upload_whose_battle_is_refused_leaves_no_document() -> None:
    files = stored_files()

    with pytest.raises(BattleError):
        services.battle_create_from_upload(data=ESSAY.encode(), name="essay.md", rounds=MAX_ROUNDS + 1)

    assert not Document.objects.exists() and not Battle.objects.exists()
    assert stored_files() == files


def test_battle_retry_copies_the_document_rounds_and_models(make_battle) -> None:
    battle = make_battle(rounds=2, aggressor="openai/other")

    again = services.battle_retry(battle=battle, client_ip="10.1.2.3")

    assert again.pk != battle.pk and again.status == Battle.Status.PENDING
    assert (again.document_id, again.rounds, again.aggressor_model, again.client_ip) == (
        battle.document_id,
        2,
        "openai/other",
        "10.1.2.3",
    )


# --- Transitions ---------------------------------------------------------------------------------


def test_battle_start_claims_once_and_raises_the_second_time(make_battle) -> None:
    battle = make_battle()

    started = services.battle_start(battle_id=battle.pk, owner=DEAD)

    assert started.status == Battle.Status.RUNNING and started.started_at is not None
    with pytest.raises(BattleStateError):
        services.battle_start(battle_id=battle.pk, owner=OTHER)
    assert Battle.objects.get(pk=battle.pk).lease_owner == DEAD  # the second claim changed nothing


def test_battle_start_refuses_when_the_arena_is_full_and_leaves_it_pending(make_battle) -> None:
    running, waiting = make_battle(), make_battle()
    services.battle_start(battle_id=running.pk)

    with pytest.raises(ArenaFull):
        services.battle_start(battle_id=waiting.pk, max_running=1)

    assert Battle.objects.get(pk=waiting.pk).status == Battle.Status.PENDING
    assert services.battle_start(battle_id=waiting.pk, max_running=2).status == Battle.Status.RUNNING


def test_battle_finish_stores_the_verdict_and_ends_the_lease(make_battle) -> None:
    battle = make_battle()
    services.battle_start(battle_id=battle.pk)

    services.battle_finish(battle_id=battle.pk, **FINISH)

    done = Battle.objects.get(pk=battle.pk)
    assert done.status == Battle.Status.FINISHED and done.finished_at is not None
    assert (done.winner, done.aggressor_score, done.defender_score, done.summary) == (
        "defender",
        4.0,
        7.5,
        "The defence held.",
    )
    assert (done.lease_owner, done.lease_expires_at) == ("", None)
    assert str(done.cost_usd) == "0.001235"  # six decimals


@pytest.mark.parametrize("status", [Battle.Status.PENDING, Battle.Status.FINISHED, Battle.Status.FAILED])
def test_battle_finish_and_battle_fail_raise_when_the_battle_is_not_running(make_battle, status: str) -> None:
    battle = make_battle()
    Battle.objects.filter(pk=battle.pk).update(status=status)

    with pytest.raises(BattleStateError):
        services.battle_finish(battle_id=battle.pk, **FINISH)
    with pytest.raises(BattleStateError):
        services.battle_fail(battle_id=battle.pk, error="Too late.")

    unchanged = Battle.objects.get(pk=battle.pk)
    assert (unchanged.status, unchanged.winner, unchanged.error) == (status, "", "")


def test_battle_fail_keeps_the_reason_and_what_was_spent(make_battle) -> None:
    battle = make_battle()
    services.battle_start(battle_id=battle.pk)

    services.battle_fail(battle_id=battle.pk, error="The model failed.", prompt_tokens=5, completion_tokens=3)

    failed = Battle.objects.get(pk=battle.pk)
    assert (failed.status, failed.error, failed.prompt_tokens, failed.completion_tokens) == (
        Battle.Status.FAILED,
        "The model failed.",
        5,
        3,
    )
    assert failed.cost_usd is None


def test_battle_mark_failed_closes_the_log_and_refuses_a_battle_that_is_not_running(make_battle) -> None:
    battle = make_battle()
    with pytest.raises(BattleStateError):
        services.battle_mark_failed(battle_id=battle.pk, reason="Stuck.")
    services.battle_start(battle_id=battle.pk)
    services.events_append(battle_id=battle.pk, events=[RecordedEvent(1, events.BATTLE_STARTED, {}, 0)])

    services.battle_mark_failed(battle_id=battle.pk, reason="Stuck.")

    assert [(e.seq, e.type, e.data) for e in stored_events(battle.pk)] == [
        (1, events.BATTLE_STARTED, {}),
        (2, events.BATTLE_FAILED, {"error": "Stuck.", "retryable": True}),
    ]
    assert Battle.objects.get(pk=battle.pk).status == Battle.Status.FAILED


def test_turns_complete_once_and_interrupt_only_what_is_under_way(make_battle) -> None:
    battle = make_battle()
    services.battle_start(battle_id=battle.pk)
    assert services.turn_interrupt(battle_id=battle.pk) is False  # no turn under way: nothing changed
    services.turn_start(battle=battle, index=1, round_number=1, role="aggressor")

    services.turn_complete(
        battle_id=battle.pk, index=1, content="Done.", prompt_tokens=3, completion_tokens=2
    )

    with pytest.raises(BattleStateError):
        services.turn_complete(
            battle_id=battle.pk, index=1, content="Again.", prompt_tokens=1, completion_tokens=1
        )
    assert services.turn_interrupt(battle_id=battle.pk) is False
    services.turn_start(battle=battle, index=2, round_number=1, role="defender")
    assert services.turn_interrupt(battle_id=battle.pk, content="Half") is True
    turns = list(
        Turn.objects.filter(battle=battle).order_by("index").values_list("index", "status", "content")
    )
    assert turns == [(1, Turn.Status.COMPLETED, "Done."), (2, Turn.Status.INTERRUPTED, "Half")]


# --- The lease -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_starting_a_battle_takes_a_lease_that_only_its_owner_can_renew(make_battle) -> None:
    battle = await sync_to_async(make_battle)()
    started = await sync_to_async(services.battle_start)(battle_id=battle.pk, owner=DEAD)

    assert started.lease_owner == DEAD
    assert started.lease_expires_at > timezone.now()
    await sync_to_async(services.lease_renew)(battle_id=battle.pk, owner=DEAD)
    with pytest.raises(LeaseLost):
        await sync_to_async(services.lease_renew)(battle_id=battle.pk, owner=OTHER)


def test_lease_release_frees_only_the_owners_lease_and_says_when_it_changed_nothing(make_battle) -> None:
    battle = make_battle()
    assert services.lease_release(battle_id=battle.pk, owner=DEAD) is False  # pending: no lease
    services.battle_start(battle_id=battle.pk, owner=DEAD)

    assert services.lease_release(battle_id=battle.pk, owner=OTHER) is False
    assert Battle.objects.get(pk=battle.pk).lease_owner == DEAD
    assert services.lease_release(battle_id=battle.pk, owner=DEAD) is True
    assert services.lease_release(battle_id=battle.pk, owner=DEAD) is False  # already released
    released = Battle.objects.get(pk=battle.pk)
    assert (released.status, released.lease_owner) == (Battle.Status.RUNNING, "")
    assert released.lease_expires_at <= timezone.now()


@pytest.mark.django_db(transaction=True)
async def test_a_battle_with_a_live_lease_cannot_be_taken_over(make_battle) -> None:
    battle = await sync_to_async(make_battle)()
    await sync_to_async(services.battle_start)(battle_id=battle.pk, owner=DEAD)

    taken = await sync_to_async(services.battle_take_over)(battle_id=battle.pk, reason="x", owner=OTHER)

    assert taken is None
    assert await sync_to_async(selectors.battles_to_take_over)() == []


def test_a_take_over_closes_the_turn_under_way_with_one_event(make_battle) -> None:
    battle = make_battle()
    services.battle_start(battle_id=battle.pk, owner=DEAD)
    services.events_append(battle_id=battle.pk, events=[token(1), token(2)])
    services.turn_start(battle=battle, index=1, round_number=1, role="aggressor")
    expire_lease(battle.pk)

    taken = services.battle_take_over(battle_id=battle.pk, reason="gone", owner=OTHER)

    assert taken is not None and (taken.lease_owner, taken.takeovers) == (OTHER, 1)
    assert taken.lease_expires_at > timezone.now()
    last = stored_events(battle.pk)[-1]
    assert (last.seq, last.type, last.data) == (3, events.TURN_INTERRUPTED, {"turn": 1, "reason": "gone"})
    assert last.offset_ms >= 2  # never before the event it follows
    assert Turn.objects.get(battle=battle).status == Turn.Status.INTERRUPTED


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("paced_sparring")
async def test_only_one_of_two_processes_wins_the_takeover(make_battle) -> None:
    battle = await abandoned_mid_turn(make_battle)

    first = await sync_to_async(services.battle_take_over)(battle_id=battle.pk, reason="r", owner=OTHER)
    second = await sync_to_async(services.battle_take_over)(
        battle_id=battle.pk, reason="r", owner="third:3:x"
    )

    assert first is not None and second is None
    log = await sync_to_async(stored_events)(battle.pk)
    assert [e.type for e in log].count(events.TURN_INTERRUPTED) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("paced_sparring")
async def test_a_battle_cut_off_too_often_is_failed_with_a_reason(make_battle) -> None:
    battle = await abandoned_mid_turn(make_battle)
    await Battle.objects.filter(pk=battle.pk).aupdate(takeovers=services.MAX_TAKEOVERS)

    taken = await sync_to_async(services.battle_take_over)(battle_id=battle.pk, reason="r", owner=OTHER)

    assert taken is None
    failed = await Battle.objects.aget(pk=battle.pk)
    assert failed.status == Battle.Status.FAILED
    assert "cut off" in failed.error
    log = await sync_to_async(stored_events)(battle.pk)
    assert log[-1].type == events.BATTLE_FAILED and log[-1].data["error"] == failed.error
    assert [e.seq for e in log] == list(range(1, len(log) + 1))


# --- Appending ----------------------------------------------------------------------------------


def test_append_with_an_owner_renews_its_lease_and_writes_both(make_battle) -> None:
    battle = make_battle()
    services.battle_start(battle_id=battle.pk, owner=DEAD)
    Battle.objects.filter(pk=battle.pk).update(lease_expires_at=timezone.now())
    before = timezone.now()
    written: list[bool] = []

    services.append_with(
        battle_id=battle.pk, events=[token(1)], write=lambda: written.append(True), owner=DEAD
    )

    assert [e.seq for e in stored_events(battle.pk)] == [1] and written == [True]
    renewed = Battle.objects.get(pk=battle.pk).lease_expires_at
    assert renewed >= before + timedelta(seconds=django_settings.ARENA_LEASE_SECONDS)


def test_append_with_a_wrong_owner_raises_lease_lost_and_writes_nothing(make_battle) -> None:
    battle = make_battle()
    services.battle_start(battle_id=battle.pk, owner=OTHER)
    written: list[bool] = []

    with pytest.raises(LeaseLost):
        services.append_with(
            battle_id=battle.pk, events=[token(1)], write=lambda: written.append(True), owner=DEAD
        )

    assert not Event.objects.filter(battle=battle).exists()
    assert written == []
    assert Battle.objects.get(pk=battle.pk).lease_owner == OTHER


def test_a_failing_write_takes_its_events_with_it(make_battle) -> None:
    battle = make_battle()

    def fail() -> None:
        raise RuntimeError("the write failed")

    with pytest.raises(RuntimeError):
        services.append_with(battle_id=battle.pk, events=[token(1)], write=fail)

    assert not Event.objects.filter(battle=battle).exists()


def test_battle_end_closes_the_log_of_a_battle_under_way_once(make_battle) -> None:
    running, pending = make_battle(), make_battle()
    services.battle_start(battle_id=running.pk)

    for battle in (running, pending):
        final = services.battle_end(battle_id=battle.pk, reason="Deleted by its owner.", retryable=False)
        assert final is not None
        assert (final.type, final.data) == (
            "battle.failed",
            {"error": "Deleted by its owner.", "retryable": False},
        )
        stored = Event.objects.filter(battle=battle).order_by("seq").last()
        assert (stored.seq, stored.type) == (final.seq, "battle.failed")
        battle.refresh_from_db()
        assert (battle.status, battle.error, battle.lease_owner) == ("failed", "Deleted by its owner.", "")
        # Over: nothing more to end, and no second battle.failed.
        assert services.battle_end(battle_id=battle.pk, reason="Again.", retryable=False) is None
        assert Event.objects.filter(battle=battle, type="battle.failed").count() == 1
    assert services.battle_end(battle_id=uuid.uuid4(), reason="Unknown.", retryable=False) is None


def test_visibility_is_unlisted_by_default_and_can_be_flipped(make_battle, settings) -> None:
    assert make_battle().visibility == Battle.Visibility.UNLISTED
    settings.ARENA_DEFAULT_VISIBILITY = "public"
    battle = make_battle()
    assert battle.visibility == Battle.Visibility.PUBLIC

    services.battle_visibility_set(battle_id=battle.pk, visibility=Battle.Visibility.UNLISTED)
    battle.refresh_from_db()
    assert battle.visibility == Battle.Visibility.UNLISTED
    with pytest.raises(BattleError):
        services.battle_visibility_set(battle_id=battle.pk, visibility="secret")
    with pytest.raises(Battle.DoesNotExist):
        services.battle_visibility_set(battle_id=uuid.uuid4(), visibility=Battle.Visibility.PUBLIC)


def test_a_retry_keeps_the_visibility_and_belongs_to_whoever_asked(make_battle) -> None:
    battle = make_battle(visibility=Battle.Visibility.PUBLIC, owner_hash="a" * 64)
    retried = services.battle_retry(battle=battle, owner_hash="b" * 64)
    assert (retried.visibility, retried.owner_hash) == (Battle.Visibility.PUBLIC, "b" * 64)
