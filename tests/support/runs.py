"""Runs of a battle in one test process, stopped the way a dead or stalled runner stops.

A "dead" runner is a run stopped without cleanup; its lease is then made to run out. The
multi-process versions (daphne processes, kill -9) are in tests/test_scaleout.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from battles import events, services
from battles.engine import BattleRun
from battles.engine.lease import StopReason
from battles.events import RecordedEvent
from battles.models import Battle
from tests.support.logs import stored_events

# Lease owners that are not this process.
DEAD = "dead-host:1:00000000"
OTHER = "other-host:2:11111111"


def expire_lease(battle_id: UUID) -> None:
    """Time passes: the runner's lease runs out."""
    Battle.objects.filter(pk=battle_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


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


async def abandoned_mid_turn(make_battle: Callable[..., Battle], *, turn: int = 2, rounds: int = 1) -> Battle:
    """A battle whose runner died while turn `turn` was streaming, its lease run out.

    Run it with the `paced_sparring` fixture, so that a turn is always under way for a while.
    """
    battle = await sync_to_async(make_battle)(rounds=rounds)
    claimed = await sync_to_async(services.battle_start)(battle_id=battle.pk, owner=DEAD)
    await run_and_kill(
        BattleRun(claimed, owner=DEAD), lambda e: e.type == events.TOKEN and e.data["turn"] == turn
    )
    log = await sync_to_async(stored_events)(battle.pk)
    assert log[-1].type == events.TOKEN and log[-1].data["turn"] == turn  # the setup held: mid-turn
    await sync_to_async(expire_lease)(battle.pk)
    return battle
