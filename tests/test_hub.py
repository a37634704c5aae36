"""The process's battle runner (battles.live.hub): claims, the queue, following a battle run elsewhere,
takeover by a follower, and the drain of a graceful shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from battles import events, services
from battles.events import RecordedEvent
from battles.exceptions import ArenaFull
from battles.live import hub as hubs
from battles.live.hub import TAKEOVER_REASON, hub
from battles.live.streams import spectate
from battles.models import Battle, Event
from tests.support.logs import assert_consistent, finished, stored_events, token
from tests.support.runs import abandoned_mid_turn
from tests.support.sse_client import Parser, collect, ids
from tests.support.waiting import async_wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_hub")]


async def test_concurrent_spectators_of_a_pending_battle_start_it_once(make_battle) -> None:
    battle = await sync_to_async(make_battle)(rounds=1)

    results = await asyncio.gather(*(collect(spectate(battle.pk, after=0)) for _ in range(10)))

    stored = [e.seq async for e in Event.objects.filter(battle=battle).order_by("seq")]
    assert all(ids(messages) == stored for messages in results)
    assert await Event.objects.filter(battle=battle, type="battle.started").acount() == 1
    assert (await Battle.objects.aget(pk=battle.pk)).status == Battle.Status.FINISHED
    assert hub.channels == {}  # the channel is gone once the battle is over


async def test_a_battle_running_elsewhere_is_followed_through_its_log(make_battle, settings) -> None:
    settings.ARENA_TAIL_POLL_SECONDS = 0.01
    battle = await sync_to_async(make_battle)(rounds=1)
    await sync_to_async(services.battle_start)(battle_id=battle.pk)  # "another process" claimed it
    append = sync_to_async(services.events_append)
    await append(battle_id=battle.pk, events=[token(1), token(2)])

    watcher = asyncio.create_task(collect(spectate(battle.pk, after=0)))
    await async_wait_for(
        lambda: battle.pk in hub.channels and hub.channels[battle.pk].last_seq >= 2,
        what="the follower to publish the first two events",
    )
    await append(battle_id=battle.pk, events=[token(3), finished(4)])

    assert ids(await watcher) == [1, 2, 3, 4]


async def test_a_pending_battle_waits_for_a_free_slot_before_it_starts(
    make_battle, settings, monkeypatch
) -> None:
    settings.ARENA_MAX_RUNNING_BATTLES = 1
    monkeypatch.setattr(hubs, "QUEUE_POLL_SECONDS", 0.02)
    running, queued = await sync_to_async(make_battle)(), await sync_to_async(make_battle)(rounds=1)
    await sync_to_async(services.battle_start)(battle_id=running.pk)
    refused: list[object] = []  # the queue's claims that found the arena full
    battle_start = services.battle_start

    def counted_battle_start(**kwargs: Any) -> Battle:
        try:
            return battle_start(**kwargs)
        except ArenaFull:
            refused.append(kwargs["battle_id"])
            raise

    monkeypatch.setattr(services, "battle_start", counted_battle_start)

    watcher = asyncio.create_task(collect(spectate(queued.pk, after=0)))
    # The queue's claims, not a fixed sleep: ten of them refused, each a chance to start it wrongly.
    await async_wait_for(lambda: len(refused) >= 10, what="ten claims by the queue")
    assert set(refused) == {queued.pk}
    assert (await Battle.objects.aget(pk=queued.pk)).status == Battle.Status.PENDING
    assert not watcher.done()

    await sync_to_async(services.battle_mark_failed)(battle_id=running.pk, reason="Freed.")
    messages = await asyncio.wait_for(watcher, timeout=60)  # a deadline, should the queue hang

    assert (await Battle.objects.aget(pk=queued.pk)).status == Battle.Status.FINISHED
    assert ids(messages) == [e.seq async for e in Event.objects.filter(battle=queued).order_by("seq")]


@pytest.mark.usefixtures("paced_sparring")
async def test_a_spectator_already_watching_sees_the_battle_go_on(make_battle, settings) -> None:
    """Its stream's follower notices the dead runner's lease and this process continues the battle."""
    battle = await abandoned_mid_turn(make_battle, turn=2)

    parser = Parser()
    messages = [m async for chunk in spectate(battle.pk, after=0) for m in parser.feed(chunk.decode())]

    streamed = [RecordedEvent(int(m.id), m.event, m.json(), 0) for m in messages if m.id is not None]
    stored = await sync_to_async(stored_events)(battle.pk)
    assert [(e.seq, e.type, e.data) for e in streamed] == [(e.seq, e.type, e.data) for e in stored]
    assert_consistent(stored, rounds=1)
    assert [e.data for e in stored if e.type == events.TURN_INTERRUPTED] == [
        {"turn": 2, "reason": TAKEOVER_REASON}
    ]


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


@pytest.mark.usefixtures("paced_sparring")
async def test_spectators_see_the_end_of_a_battle_ended_by_another_process(make_battle) -> None:
    """An operator elsewhere marks the battle failed: the run here stops at its next write, and its
    spectators get that `battle.failed` from the log before their stream closes."""
    battle = await sync_to_async(make_battle)(rounds=2)
    parser = Parser()
    stream = spectate(battle.pk, after=0)
    seen = []
    async for chunk in stream:
        seen += parser.feed(chunk.decode())
        if any(m.event == events.TOKEN for m in seen):
            break

    await sync_to_async(services.battle_mark_failed)(battle_id=battle.pk, reason="Ended elsewhere.")
    async for chunk in stream:
        seen += parser.feed(chunk.decode())

    logged = [m for m in seen if m.id is not None]
    assert (logged[-1].event, logged[-1].json()["error"]) == (events.BATTLE_FAILED, "Ended elsewhere.")
    assert ids(seen) == [e.seq async for e in Event.objects.filter(battle=battle).order_by("seq")]
