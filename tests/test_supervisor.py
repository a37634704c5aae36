"""A serving process's background duties (battles.live.supervisor): the sweep for abandoned battles.

The graceful shutdown on SIGTERM is checked with real processes (tests/test_live.py,
tests/test_scaleout.py); the drain it runs, in tests/test_hub.py.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from battles import services
from battles.live import supervisor
from battles.live.hub import hub
from battles.models import Battle
from tests.support.logs import assert_consistent, stored_events
from tests.support.runs import DEAD, abandoned_mid_turn, expire_lease
from tests.support.waiting import async_wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_hub")]


def test_the_sweep_comes_every_half_lease(settings) -> None:
    settings.ARENA_LEASE_SECONDS = 8
    assert supervisor.sweep_interval_seconds() == 4


@pytest.mark.usefixtures("paced_sparring")
async def test_the_sweep_continues_a_battle_nobody_watches(make_battle) -> None:
    battle = await abandoned_mid_turn(make_battle, turn=3)

    assert await supervisor.sweep_once() == [battle.pk]
    channel = hub.channels[battle.pk]
    await async_wait_for(lambda: channel.closed, timeout=60, what="the continued battle to end")

    finished = await Battle.objects.aget(pk=battle.pk)
    assert finished.status == Battle.Status.FINISHED
    assert_consistent(await sync_to_async(stored_events)(battle.pk), rounds=1)


async def test_the_sweep_leaves_live_leases_and_what_this_process_already_serves(
    make_battle, monkeypatch
) -> None:
    alive, abandoned = await sync_to_async(make_battle)(), await sync_to_async(make_battle)()
    for battle in (alive, abandoned):
        await sync_to_async(services.battle_start)(battle_id=battle.pk, owner=DEAD)
    await sync_to_async(expire_lease)(abandoned.pk)
    adopted: list[object] = []
    monkeypatch.setattr(hub, "_channel", adopted.append)  # set about it, without running it here

    assert await supervisor.sweep_once() == [abandoned.pk]
    hub.channels[abandoned.pk] = object()  # type: ignore[assignment]  # now served here
    assert await supervisor.sweep_once() == []
    assert adopted == [abandoned.pk]


async def test_a_draining_process_adopts_nothing(make_battle) -> None:
    battle = await sync_to_async(make_battle)()
    await sync_to_async(services.battle_start)(battle_id=battle.pk, owner=DEAD)
    await sync_to_async(expire_lease)(battle.pk)
    hub.draining = True

    assert await supervisor.sweep_once() == []
    assert hub.channels == {}
