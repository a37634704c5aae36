"""Leases, takeover and handover, in one process: a "dead" runner is a run stopped without cleanup.

The multi-process versions (two daphne processes, kill -9) are in tests/test_scaleout.py.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from battles import events, selectors, services
from battles.engine import BattleRun
from battles.engine.lease import HANDOVER_REASON, StopReason
from battles.events import RecordedEvent
from battles.exceptions import LeaseLost
from battles.live import supervisor
from battles.live.hub import TAKEOVER_REASON, hub
from battles.live.streams import spectate
from battles.models import Battle, Event, Turn
from tests.support.sse_client import Parser

pytestmark = pytest.mark.django_db(transaction=True)

DEAD = "dead-host:1:00000000"
OTHER = "other-host:2:11111111"


@pytest.fixture(autouse=True)
def fresh_hub():
    yield
    hub.channels.clear()
    hub.runs.clear()
    hub.draining = False


def stored_log(battle_id: object) -> list[RecordedEvent]:
    return [
        RecordedEvent(e.seq, e.type, e.data, e.offset_ms)
        for e in Event.objects.filter(battle_id=battle_id).order_by("seq")
    ]


def expire_lease(battle_id: object) -> None:
    """Time passes: the runner's lease runs out."""
    Battle.objects.filter(pk=battle_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


@pytest.fixture(autouse=True)
def paced_sparring(settings):
    """A pause per word, so that a turn is always under way for a while (never done in one step)."""
    settings.ARENA_SPARRING_DELAY_MS = 2


async def run_until(run: BattleRun, condition: Callable[[RecordedEvent], bool]) -> asyncio.Task[None]:
    """Start `run`; return once an event meeting `condition` is committed, the run still going."""
    reached = asyncio.Event()
    run.listeners.append(lambda batch: any(condition(e) for e in batch) and reached.set())
    task = asyncio.create_task(run.run())
    await reached.wait()
    return task


async def run_and_kill(run: BattleRun, condition: Callable[[RecordedEvent], bool]) -> None:
    """Run until an event meeting `condition` is committed, then stop the way a killed process
    stops: from that moment nothing more is emitted (what was already emitted is committed)."""

    def listener(batch: list[RecordedEvent]) -> None:
        if any(condition(e) for e in batch):
            run._stop(StopReason.LEASE_LOST)

    run.listeners.append(listener)
    with pytest.raises(asyncio.CancelledError):
        await run.run()


async def abandoned_mid_turn(make_battle, *, turn: int = 2, rounds: int = 1) -> Battle:
    """A battle whose runner died while turn `turn` was streaming, its lease run out."""
    battle = await sync_to_async(make_battle)(rounds=rounds)
    claimed = await sync_to_async(services.battle_start)(battle_id=battle.pk, owner=DEAD)
    await run_and_kill(
        BattleRun(claimed, owner=DEAD), lambda e: e.type == events.TOKEN and e.data["turn"] == turn
    )
    log = await sync_to_async(stored_log)(battle.pk)
    assert log[-1].type == events.TOKEN and log[-1].data["turn"] == turn  # the setup held: mid-turn
    await sync_to_async(expire_lease)(battle.pk)
    return battle


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


async def test_starting_a_battle_takes_a_lease_that_only_its_owner_can_renew(make_battle) -> None:
    battle = await sync_to_async(make_battle)()
    started = await sync_to_async(services.battle_start)(battle_id=battle.pk, owner=DEAD)

    assert started.lease_owner == DEAD
    assert started.lease_expires_at > timezone.now()
    await sync_to_async(services.lease_renew)(battle_id=battle.pk, owner=DEAD)
    with pytest.raises(LeaseLost):
        await sync_to_async(services.lease_renew)(battle_id=battle.pk, owner=OTHER)


async def test_a_battle_with_a_live_lease_cannot_be_taken_over(make_battle) -> None:
    battle = await sync_to_async(make_battle)()
    await sync_to_async(services.battle_start)(battle_id=battle.pk, owner=DEAD)

    taken = await sync_to_async(services.battle_take_over)(battle_id=battle.pk, reason="x", owner=OTHER)

    assert taken is None
    assert await sync_to_async(selectors.battles_to_take_over)() == []


async def test_a_taken_over_battle_continues_from_its_last_completed_turn(make_battle) -> None:
    battle = await abandoned_mid_turn(make_battle, turn=2)
    assert await sync_to_async(selectors.battles_to_take_over)() == [battle.pk]

    taken = await sync_to_async(services.battle_take_over)(battle_id=battle.pk, reason="gone", owner=OTHER)
    progress = await sync_to_async(selectors.battle_progress)(battle=taken)
    await BattleRun(taken, progress=progress, owner=OTHER).run()

    log = await sync_to_async(stored_log)(battle.pk)
    assert_consistent(log, rounds=1)
    interrupted = [e for e in log if e.type == events.TURN_INTERRUPTED]
    assert [e.data for e in interrupted] == [{"turn": 2, "reason": "gone"}]
    # Turn 2 started twice: before the crash, and again after the turn.interrupted that closed it.
    restarts = [e.seq for e in log if e.type == events.TURN_STARTED and e.data["turn"] == 2]
    assert len(restarts) == 2 and restarts[0] < interrupted[0].seq < restarts[1]
    assert [e.type for e in log].count(events.TURN_STARTED) == 4  # turn 1 was not run again

    finished = await Battle.objects.aget(pk=battle.pk)
    assert finished.status == Battle.Status.FINISHED
    assert (finished.takeovers, finished.lease_owner, finished.lease_expires_at) == (1, "", None)
    turns = await sync_to_async(list)(Turn.objects.filter(battle=battle).order_by("index", "started_at"))
    assert [(t.index, t.status) for t in turns] == [
        (1, "completed"),
        (2, "interrupted"),
        (2, "completed"),
        (3, "completed"),
    ]
    # The transcript counts the retried turn once, with its complete text.
    transcript = await sync_to_async(selectors.battle_transcript)(battle=finished)
    assert [(t["turn"], t["status"]) for t in transcript["turns"]] == [
        (1, "completed"),
        (2, "completed"),
        (3, "completed"),
    ]
    completed = {e.data["turn"]: e.data["content"] for e in log if e.type == events.TURN_COMPLETED}
    assert [t["content"] for t in transcript["turns"]] == [completed[1], completed[2], completed[3]]


async def test_only_one_of_two_processes_wins_the_takeover(make_battle) -> None:
    battle = await abandoned_mid_turn(make_battle)

    first = await sync_to_async(services.battle_take_over)(battle_id=battle.pk, reason="r", owner=OTHER)
    second = await sync_to_async(services.battle_take_over)(
        battle_id=battle.pk, reason="r", owner="third:3:x"
    )

    assert first is not None and second is None
    log = await sync_to_async(stored_log)(battle.pk)
    assert [e.type for e in log].count(events.TURN_INTERRUPTED) == 1


async def test_a_runner_that_lost_its_lease_writes_nothing_more(make_battle) -> None:
    battle = await sync_to_async(make_battle)(rounds=1)
    claimed = await sync_to_async(services.battle_start)(battle_id=battle.pk, owner=DEAD)
    stale = BattleRun(claimed, owner=DEAD)
    task = await run_until(stale, lambda e: e.type == events.TOKEN and e.data["turn"] == 1)
    # The runner stalls past its lease and another process takes the battle over meanwhile.

    @sync_to_async
    def stall_and_take_over() -> Battle | None:
        with transaction.atomic():  # so the runner cannot renew its lease in between
            expire_lease(battle.pk)
            return services.battle_take_over(battle_id=battle.pk, reason="stalled", owner=OTHER)

    assert await stall_and_take_over() is not None
    seq_at_takeover = (await sync_to_async(stored_log)(battle.pk))[-1].seq

    await task  # its next write is refused; it stops quietly

    log = await sync_to_async(stored_log)(battle.pk)
    assert log[-1].seq == seq_at_takeover and log[-1].type == events.TURN_INTERRUPTED
    still = await Battle.objects.aget(pk=battle.pk)
    assert (still.status, still.lease_owner) == (Battle.Status.RUNNING, OTHER)
    with pytest.raises(LeaseLost):
        await sync_to_async(services.append_with)(
            battle_id=battle.pk, events=[RecordedEvent(seq_at_takeover + 1, "token", {}, 0)], owner=DEAD
        )


async def test_a_battle_cut_off_too_often_is_failed_with_a_reason(make_battle) -> None:
    battle = await abandoned_mid_turn(make_battle)
    await Battle.objects.filter(pk=battle.pk).aupdate(takeovers=services.MAX_TAKEOVERS)

    taken = await sync_to_async(services.battle_take_over)(battle_id=battle.pk, reason="r", owner=OTHER)

    assert taken is None
    failed = await Battle.objects.aget(pk=battle.pk)
    assert failed.status == Battle.Status.FAILED
    assert "cut off" in failed.error
    log = await sync_to_async(stored_log)(battle.pk)
    assert log[-1].type == events.BATTLE_FAILED and log[-1].data["error"] == failed.error
    assert [e.seq for e in log] == list(range(1, len(log) + 1))


async def test_a_spectator_already_watching_sees_the_battle_go_on(make_battle, settings) -> None:
    """Its stream's follower notices the dead runner's lease and this process continues the battle."""
    battle = await abandoned_mid_turn(make_battle, turn=2)

    parser = Parser()
    messages = [m async for chunk in spectate(battle.pk, after=0) for m in parser.feed(chunk.decode())]

    streamed = [RecordedEvent(int(m.id), m.event, m.json(), 0) for m in messages if m.id is not None]
    stored = await sync_to_async(stored_log)(battle.pk)
    assert [(e.seq, e.type, e.data) for e in streamed] == [(e.seq, e.type, e.data) for e in stored]
    assert_consistent(stored, rounds=1)
    assert [e.data for e in stored if e.type == events.TURN_INTERRUPTED] == [
        {"turn": 2, "reason": TAKEOVER_REASON}
    ]


async def test_the_sweep_continues_a_battle_nobody_watches(make_battle) -> None:
    battle = await abandoned_mid_turn(make_battle, turn=3)

    assert await supervisor.sweep_once() == [battle.pk]
    channel = hub.channels[battle.pk]
    while not channel.closed:
        await channel.wait(timeout=5)

    finished = await Battle.objects.aget(pk=battle.pk)
    assert finished.status == Battle.Status.FINISHED
    assert_consistent(await sync_to_async(stored_log)(battle.pk), rounds=1)


async def test_a_handed_over_battle_is_released_at_once_and_continued(make_battle) -> None:
    battle = await sync_to_async(make_battle)(rounds=1)
    claimed = await sync_to_async(services.battle_start)(battle_id=battle.pk)
    run = BattleRun(claimed)
    task = await run_until(run, lambda e: e.type == events.TOKEN and e.data["turn"] == 2)

    run.hand_over()
    with pytest.raises(asyncio.CancelledError):
        await task

    released = await Battle.objects.aget(pk=battle.pk)
    assert released.status == Battle.Status.RUNNING and released.lease_owner == ""
    log = await sync_to_async(stored_log)(battle.pk)
    assert log[-1].type == events.TURN_INTERRUPTED
    assert log[-1].data == {"turn": 2, "reason": HANDOVER_REASON}
    assert await sync_to_async(selectors.battles_to_take_over)() == [battle.pk]

    taken = await sync_to_async(services.battle_take_over)(battle_id=battle.pk, reason="x", owner=OTHER)
    progress = await sync_to_async(selectors.battle_progress)(battle=taken)
    await BattleRun(taken, progress=progress, owner=OTHER).run()

    finished = await Battle.objects.aget(pk=battle.pk)
    assert finished.status == Battle.Status.FINISHED
    assert finished.takeovers == 0  # handed over on purpose: not a crash
    log = await sync_to_async(stored_log)(battle.pk)
    assert_consistent(log, rounds=1)
    assert [e.type for e in log].count(events.TURN_INTERRUPTED) == 1  # the taker found nothing to close


async def test_draining_hands_battles_over_and_ends_every_stream(make_battle, settings) -> None:
    settings.ARENA_SPARRING_DELAY_MS = 20  # slow enough to be mid-turn when the drain comes
    battle = await sync_to_async(make_battle)(rounds=1)
    parser = Parser()
    stream = spectate(battle.pk, after=0)
    seen = []
    async for chunk in stream:
        seen += parser.feed(chunk.decode())
        if any(m.event == events.TOKEN for m in seen):
            break
    await hub.drain()
    async for chunk in stream:  # the stream ends on its own: the browser reconnects elsewhere
        seen += parser.feed(chunk.decode())

    assert seen[-1].event == events.TURN_INTERRUPTED
    assert not any(m.event in events.TERMINAL_TYPES for m in seen)
    released = await Battle.objects.aget(pk=battle.pk)
    assert (released.status, released.lease_owner) == (Battle.Status.RUNNING, "")
    assert hub.runs == {}
