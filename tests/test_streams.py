"""The byte streams a client opens (battles.live.streams): a spectator's, live or from the log."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import AsyncClient

from battles import services
from battles.live.streams import spectate
from battles.models import Battle, Event
from tests.support.sse_client import collect, ids

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_hub")]


async def queries_while(coroutine: object) -> list[str]:
    """SQL run while `coroutine` runs, on the thread where every database call of this test happens."""
    seen: list[str] = []

    def record(execute, sql, params, many, context):  # noqa: ANN001
        seen.append(sql)
        return execute(sql, params, many, context)

    await sync_to_async(connection.execute_wrappers.append)(record)
    try:
        await coroutine  # type: ignore[misc]
    finally:
        await sync_to_async(connection.execute_wrappers.remove)(record)
    return seen


async def test_live_fan_out_makes_no_query_per_spectator(make_battle) -> None:
    one, many = await sync_to_async(make_battle)(rounds=1), await sync_to_async(make_battle)(rounds=1)

    async def watch(battle: Battle, spectators: int) -> None:
        await asyncio.gather(*(collect(spectate(battle.pk, after=0)) for _ in range(spectators)))

    alone = await queries_while(watch(one, 1))
    crowd = await queries_while(watch(many, 20))

    assert len(crowd) == len(alone)
    assert not [sql for sql in crowd if sql.startswith("SELECT") and "battles_event" in sql]


async def test_a_finished_battle_is_read_from_the_log(make_battle) -> None:
    battle = await sync_to_async(make_battle)(rounds=1)
    first = await collect(spectate(battle.pk, after=0))

    again = await collect(spectate(battle.pk, after=5))

    assert ids(again) == ids(first)[5:]
    assert ids(first)[-1] == await Event.objects.filter(battle=battle).acount()


async def test_a_stream_stays_open_at_most_the_configured_time(make_battle, settings) -> None:
    settings.ARENA_MAX_STREAM_SECONDS = 0.3
    settings.ARENA_TAIL_POLL_SECONDS = 0.05
    battle = await sync_to_async(make_battle)()
    await sync_to_async(services.battle_start)(battle_id=battle.pk)  # nothing will ever happen

    response = await AsyncClient().get(f"/battles/{battle.pk}/events")
    # A deadline should it never close: that is the failure this test is about, not a measurement.
    body = await asyncio.wait_for(_read(response), timeout=60)

    assert body.startswith("retry: ")  # it closed by itself; the browser reconnects and resumes


async def _read(response) -> str:  # noqa: ANN001
    return b"".join([chunk async for chunk in response.streaming_content]).decode()
