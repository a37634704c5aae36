"""Fan-out: channels, cursors, slow spectators, and the hub that starts or follows battles."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from battles import services
from battles.events import RecordedEvent
from battles.live import channel as channels
from battles.live.channel import Channel
from battles.live.hub import hub
from battles.live.streams import spectate
from battles.models import Battle, Event
from tests.support.sse_client import Message, Parser

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_hub():
    yield
    hub.channels.clear()


def token(seq: int, text: str = "x") -> RecordedEvent:
    return RecordedEvent(seq, "token", {"turn": 1, "role": "aggressor", "text": text}, seq)


def finished(seq: int) -> RecordedEvent:
    return RecordedEvent(seq, "battle.completed", {}, seq)


async def collect(stream: AsyncIterator[bytes]) -> list[Message]:
    parser = Parser()
    return [m async for chunk in stream for m in parser.feed(chunk.decode())]


def ids(messages: list[Message]) -> list[int]:
    return [int(m.id) for m in messages if m.id is not None]


async def test_every_follower_gets_every_frame_and_stops_at_the_end() -> None:
    channel = Channel(uuid.uuid4())
    followers = [asyncio.create_task(collect(channels.follow(channel, after=0))) for _ in range(3)]
    channel.publish([token(1), token(2)])
    await asyncio.sleep(0)  # let the followers take the first batch
    channel.publish([token(3), finished(4)])

    results = await asyncio.gather(*followers)

    assert all(ids(messages) == [1, 2, 3, 4] for messages in results)


async def test_a_follower_can_start_anywhere() -> None:
    channel = Channel(uuid.uuid4())
    channel.publish([token(1), token(2), token(3), finished(4)])
    assert ids(await collect(channels.follow(channel, after=2))) == [3, 4]


async def test_frames_are_encoded_once_and_shared() -> None:
    channel = Channel(uuid.uuid4())
    channel.publish([token(1)])
    assert channel.frames[0] is channel.frames[0]
    assert channel.frames == [b'id: 1\nevent: token\ndata: {"turn":1,"role":"aggressor","text":"x"}\n\n']


async def test_publishing_skips_known_events_and_refuses_gaps() -> None:
    channel = Channel(uuid.uuid4())
    channel.publish([token(1), token(2)])
    channel.publish([token(2), token(3)])  # an overlapping tail read
    assert channel.last_seq == 3
    with pytest.raises(ValueError, match="Gap"):
        channel.publish([token(5)])


async def test_a_slow_spectator_is_dropped_without_stalling_the_others(settings) -> None:
    settings.ARENA_SSE_MAX_LAG_EVENTS = 5
    channel = Channel(uuid.uuid4())
    slow = channels.follow(channel, after=0)
    fast = asyncio.create_task(collect(channels.follow(channel, after=0)))
    channel.publish([token(1)])
    assert b"id: 1\n" in await anext(slow)
    for seq in range(2, 12):  # ten events while the slow one does not read
        channel.publish([token(seq)])
        await asyncio.sleep(0)
    channel.publish([finished(12)])

    assert ids(await fast) == list(range(1, 13))
    with pytest.raises(StopAsyncIteration):  # too far behind: disconnected, to catch up from the log
        await anext(slow)


async def test_concurrent_spectators_of_a_pending_battle_start_it_once(make_battle) -> None:
    battle = await sync_to_async(make_battle)(rounds=1)

    results = await asyncio.gather(*(collect(spectate(battle.pk, after=0)) for _ in range(10)))

    stored = [e.seq async for e in Event.objects.filter(battle=battle).order_by("seq")]
    assert all(ids(messages) == stored for messages in results)
    assert await Event.objects.filter(battle=battle, type="battle.started").acount() == 1
    assert (await Battle.objects.aget(pk=battle.pk)).status == Battle.Status.FINISHED
    assert hub.channels == {}  # the channel is gone once the battle is over


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


async def test_a_battle_running_elsewhere_is_followed_through_its_log(make_battle, settings) -> None:
    settings.ARENA_TAIL_POLL_SECONDS = 0.01
    battle = await sync_to_async(make_battle)(rounds=1)
    await sync_to_async(services.battle_start)(battle_id=battle.pk)  # "another process" claimed it
    append = sync_to_async(services.events_append)
    await append(battle_id=battle.pk, events=[token(1), token(2)])

    watcher = asyncio.create_task(collect(spectate(battle.pk, after=0)))
    while battle.pk not in hub.channels or hub.channels[battle.pk].last_seq < 2:
        await asyncio.sleep(0.01)
    await append(battle_id=battle.pk, events=[token(3), finished(4)])

    assert ids(await watcher) == [1, 2, 3, 4]


async def test_a_spectator_far_behind_catches_up_in_bounded_writes_and_is_not_dropped(settings) -> None:
    settings.ARENA_SSE_MAX_LAG_EVENTS = channels.CATCH_UP_FRAMES  # less than the backlog below
    channel = Channel(uuid.uuid4())
    backlog = 3 * channels.CATCH_UP_FRAMES + 5
    channel.publish([token(seq) for seq in range(1, backlog + 1)] + [finished(backlog + 1)])

    chunks = [chunk async for chunk in channels.follow(channel, after=0)]

    assert [chunk.count(b"\nid: ") + chunk.startswith(b"id: ") for chunk in chunks] == [
        channels.CATCH_UP_FRAMES
    ] * 3 + [6]
    assert ids(await collect(channels.follow(channel, after=0))) == list(range(1, backlog + 2))
