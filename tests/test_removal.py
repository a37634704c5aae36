"""Removing a battle people are watching (battles.live.removal): they see it end, then it is gone."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from battles import events, services
from battles.live.hub import hub
from battles.live.removal import DELETED_REASON, battle_remove
from battles.live.streams import spectate
from battles.models import Battle, Document, Event, Turn
from tests.support.logs import finished, token
from tests.support.sse_client import Message, Parser, collect
from tests.support.waiting import async_wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_hub")]

DELETED = {"error": DELETED_REASON, "retryable": False}


async def watch_until_token(battle_id) -> tuple[list[Message], Parser, object]:
    parser = Parser()
    stream = spectate(battle_id, after=0)
    seen: list[Message] = []
    async for chunk in stream:
        seen += parser.feed(chunk.decode())
        if any(m.event == events.TOKEN for m in seen):
            break
    return seen, parser, stream


async def gone(battle: Battle) -> bool:
    return not (
        await Battle.objects.filter(pk=battle.pk).aexists()
        or await Event.objects.filter(battle_id=battle.pk).aexists()
        or await Turn.objects.filter(battle_id=battle.pk).aexists()
        or await Document.objects.filter(pk=battle.document_id).aexists()
    )


@pytest.mark.usefixtures("paced_sparring")
async def test_spectators_of_a_battle_run_here_see_it_end_then_it_is_gone(make_battle) -> None:
    battle = await sync_to_async(make_battle)(rounds=2)
    seen, parser, stream = await watch_until_token(battle.pk)
    other = asyncio.create_task(collect(spectate(battle.pk, after=0)))
    await async_wait_for(lambda: hub.channels[battle.pk].spectators == 2, what="the second spectator")
    run = hub.runs[battle.pk]

    assert await battle_remove(battle.pk)

    async for chunk in stream:  # the stream ends on its own after the failure
        seen += parser.feed(chunk.decode())
    for messages in (seen, await asyncio.wait_for(other, timeout=30)):
        logged = [m for m in messages if m.id is not None]
        assert (logged[-1].event, logged[-1].json()) == (events.BATTLE_FAILED, DELETED)
        assert [int(m.id) for m in logged] == list(range(1, len(logged) + 1))  # no gap before it
    assert run.task is not None
    await asyncio.wait([run.task], timeout=30)  # a deadline, should the run go on
    assert run.task.cancelled()  # stopped without writing anything more (it would have failed it)
    assert await gone(battle)
    assert hub.runs == {} and battle.pk not in hub.channels


async def test_a_pending_battle_is_ended_and_deleted(make_battle) -> None:
    battle = await sync_to_async(make_battle)()
    assert await battle_remove(battle.pk)
    assert await gone(battle)
    assert not await battle_remove(battle.pk)  # an unknown battle: nothing to do


async def test_spectators_of_a_battle_run_elsewhere_see_it_end(make_battle, settings) -> None:
    settings.ARENA_TAIL_POLL_SECONDS = 0.01
    battle = await sync_to_async(make_battle)(rounds=1)
    await sync_to_async(services.battle_start)(battle_id=battle.pk)  # "another process" runs it
    await sync_to_async(services.events_append)(battle_id=battle.pk, events=[token(1), token(2)])
    watcher = asyncio.create_task(collect(spectate(battle.pk, after=0)))
    await async_wait_for(
        lambda: battle.pk in hub.channels and hub.channels[battle.pk].last_seq == 2,
        what="the follower to publish the first two events",
    )

    assert await battle_remove(battle.pk)

    logged = [m for m in await asyncio.wait_for(watcher, timeout=30) if m.id is not None]
    assert [(int(m.id), m.event) for m in logged] == [
        (1, events.TOKEN),
        (2, events.TOKEN),
        (3, events.BATTLE_FAILED),
    ]
    assert logged[-1].json() == DELETED
    # Its runner's next write is refused: the battle is no longer running (it no longer exists).
    assert await gone(battle)


async def test_a_finished_battle_is_deleted_as_it_is(make_battle) -> None:
    battle = await sync_to_async(make_battle)(rounds=1)
    await sync_to_async(services.battle_start)(battle_id=battle.pk)
    await sync_to_async(services.events_append)(battle_id=battle.pk, events=[finished(1)])
    await Battle.objects.filter(pk=battle.pk).aupdate(status=Battle.Status.FINISHED)

    assert await battle_remove(battle.pk)
    assert await gone(battle)
