"""The runner's lease (battles.engine.lease): renewals, a runner that lost it, and the handover.

Takeover by another process is in tests/test_services.py (the claim), tests/test_engine.py (the run
that continues) and tests/test_hub.py (a follower that continues it); across processes in
tests/test_scaleout.py.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.utils import timezone

from battles import events, selectors, services
from battles.engine import BattleRun, lease
from battles.engine.lease import HANDOVER_REASON
from battles.events import RecordedEvent
from battles.exceptions import LeaseLost
from battles.models import Battle, Turn
from tests.support.clock import overlay
from tests.support.logs import assert_consistent, stored_events
from tests.support.runs import DEAD, OTHER, expire_lease, run_until

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_lease_is_renewed_every_third_of_it_until_another_process_has_it(
    make_battle, settings, monkeypatch
) -> None:
    battle = await sync_to_async(make_battle)()
    await sync_to_async(services.battle_start)(battle_id=battle.pk, owner=DEAD)
    started = timezone.now()
    await Battle.objects.filter(pk=battle.pk).aupdate(lease_expires_at=started)
    leases: list[Any] = []  # the lease's end at each pause between renewals

    async def pause(seconds: float) -> None:  # virtual time: the test does not wait for the period
        leases.append(
            await Battle.objects.filter(pk=battle.pk).values_list("lease_expires_at", flat=True).aget()
        )
        if len(leases) == 3:  # meanwhile another process takes the battle over
            await Battle.objects.filter(pk=battle.pk).aupdate(lease_owner=OTHER)

    monkeypatch.setattr(lease, "asyncio", overlay(asyncio, sleep=pause))
    lost: list[bool] = []

    await asyncio.wait_for(  # a deadline, should it never notice
        lease.keep_lease(battle_id=battle.pk, owner=DEAD, on_lost=lambda: lost.append(True)), timeout=60
    )

    assert lease.renewal_seconds() == settings.ARENA_LEASE_SECONDS / 3
    assert lost == [True]  # told once, then it stopped
    assert len(leases) == 3
    assert leases[0] == started
    for renewed in leases[1:]:  # each renewal pushed the lease's end a whole lease ahead
        assert renewed >= started + timedelta(seconds=settings.ARENA_LEASE_SECONDS)


async def test_a_failed_renewal_is_tried_again_at_the_next_period(make_battle, monkeypatch, caplog) -> None:
    battle = await sync_to_async(make_battle)()
    await sync_to_async(services.battle_start)(battle_id=battle.pk, owner=DEAD)
    pauses: list[float] = []
    renew = services.lease_renew

    def flaky_renew(**kwargs: Any) -> None:
        if len(pauses) == 1:
            raise RuntimeError("the database hiccuped")
        if len(pauses) == 3:
            raise LeaseLost("taken over")
        renew(**kwargs)

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(services, "lease_renew", flaky_renew)
    monkeypatch.setattr(lease, "asyncio", overlay(asyncio, sleep=pause))
    lost: list[bool] = []

    await asyncio.wait_for(
        lease.keep_lease(battle_id=battle.pk, owner=DEAD, on_lost=lambda: lost.append(True)), timeout=60
    )

    assert len(pauses) == 3 and lost == [True]  # the hiccup did not end the heartbeat
    assert "Could not renew the lease" in caplog.text


def test_the_release_write_closes_the_turn_under_way_and_frees_the_lease(make_battle) -> None:
    battle = make_battle()
    services.battle_start(battle_id=battle.pk, owner=DEAD)
    services.turn_start(battle=battle, index=1, round_number=1, role="aggressor")

    lease.release_write(battle_id=battle.pk, owner=DEAD, partial_turn="Half a")()

    turn = Turn.objects.get(battle=battle)
    assert (turn.status, turn.content) == (Turn.Status.INTERRUPTED, "Half a")
    released = Battle.objects.get(pk=battle.pk)
    assert (released.status, released.lease_owner) == (Battle.Status.RUNNING, "")
    assert selectors.battles_to_take_over() == [battle.pk]  # anyone may continue it at once


def test_a_release_between_turns_touches_no_turn(make_battle) -> None:
    battle = make_battle()
    services.battle_start(battle_id=battle.pk, owner=DEAD)
    services.turn_start(battle=battle, index=1, round_number=1, role="aggressor")
    services.turn_complete(
        battle_id=battle.pk, index=1, content="Done.", prompt_tokens=1, completion_tokens=1
    )

    lease.release_write(battle_id=battle.pk, owner=DEAD, partial_turn=None)()

    assert Turn.objects.get(battle=battle).status == Turn.Status.COMPLETED
    assert Battle.objects.get(pk=battle.pk).lease_owner == ""


@pytest.mark.usefixtures("paced_sparring")
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
    seq_at_takeover = (await sync_to_async(stored_events)(battle.pk))[-1].seq

    await task  # its next write is refused; it stops quietly

    log = await sync_to_async(stored_events)(battle.pk)
    assert log[-1].seq == seq_at_takeover and log[-1].type == events.TURN_INTERRUPTED
    still = await Battle.objects.aget(pk=battle.pk)
    assert (still.status, still.lease_owner) == (Battle.Status.RUNNING, OTHER)
    with pytest.raises(LeaseLost):
        await sync_to_async(services.append_with)(
            battle_id=battle.pk, events=[RecordedEvent(seq_at_takeover + 1, "token", {}, 0)], owner=DEAD
        )


@pytest.mark.usefixtures("paced_sparring")
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
    log = await sync_to_async(stored_events)(battle.pk)
    assert log[-1].type == events.TURN_INTERRUPTED
    assert log[-1].data == {"turn": 2, "reason": HANDOVER_REASON}
    assert await sync_to_async(selectors.battles_to_take_over)() == [battle.pk]

    taken = await sync_to_async(services.battle_take_over)(battle_id=battle.pk, reason="x", owner=OTHER)
    progress = await sync_to_async(selectors.battle_progress)(battle=taken)
    await BattleRun(taken, progress=progress, owner=OTHER).run()

    finished = await Battle.objects.aget(pk=battle.pk)
    assert finished.status == Battle.Status.FINISHED
    assert finished.takeovers == 0  # handed over on purpose: not a crash
    log = await sync_to_async(stored_events)(battle.pk)
    assert_consistent(log, rounds=1)
    assert [e.type for e in log].count(events.TURN_INTERRUPTED) == 1  # the taker found nothing to close


async def test_a_heartbeat_that_finds_the_battle_over_does_not_cancel_its_end(
    make_battle, monkeypatch
) -> None:
    """The heartbeat's renewal fails once the battle is finished (it is no longer running); if that
    happens while the run is still writing the battle's end, the run must end normally."""
    battle = await sync_to_async(make_battle)(rounds=1)
    claimed = await sync_to_async(services.battle_start)(battle_id=battle.pk)
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    battle_finish = services.battle_finish

    def finish(**kwargs: Any) -> None:
        battle_finish(**kwargs)
        loop.call_soon_threadsafe(finished.set)

    async def heartbeat(*, battle_id: Any, owner: str, on_lost: Any) -> None:
        await finished.wait()
        on_lost()  # what keep_lease does when its renewal finds the battle no longer running

    monkeypatch.setattr(services, "battle_finish", finish)
    monkeypatch.setattr(lease, "keep_lease", heartbeat)

    await asyncio.wait_for(BattleRun(claimed).run(), timeout=60)

    assert finished.is_set()
    assert (await Battle.objects.aget(pk=battle.pk)).status == Battle.Status.FINISHED
    assert (await sync_to_async(stored_events)(battle.pk))[-1].type == events.BATTLE_COMPLETED
