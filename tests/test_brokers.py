"""The Redis broadcast against a real Redis: publish after commit, follow, fill gaps from the log."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import pytest
from asgiref.sync import sync_to_async

from battles import events, services
from battles.engine import BattleRun
from battles.events import RecordedEvent
from battles.live import brokers
from battles.live.brokers import RedisBroker, RedisFollower
from battles.models import Event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

# The longest a whole one-round battle may take to reach a follower (a deadline, not a measurement).
FOLLOW_TIMEOUT_SECONDS = 60


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch):
    """A quiet stream is checked against the log every 0.2 s instead of every second."""
    monkeypatch.setattr(brokers, "FOLLOW_CHECK_SECONDS", 0.2)


@pytest.fixture
async def broker(redis_url):
    broker = RedisBroker(redis_url)
    yield broker
    await broker.close()


@pytest.fixture
async def battle_id(make_battle) -> UUID:
    battle = await sync_to_async(make_battle)()
    return battle.pk


def token(seq: int) -> RecordedEvent:
    return RecordedEvent(seq, events.TOKEN, {"turn": 1, "role": "aggressor", "text": f"w{seq} "}, seq)


async def commit(battle_id: UUID, *seqs: int) -> list[RecordedEvent]:
    batch = [token(seq) for seq in seqs]
    await sync_to_async(services.events_append)(battle_id=battle_id, events=batch)
    return batch


async def test_a_follower_starts_from_the_log_then_reads_the_stream(broker, battle_id) -> None:
    await commit(battle_id, 1, 2)
    follower = broker.follower(battle_id)

    assert [e.seq for e in await follower.next(after=0)] == [1, 2]  # catch-up from the stored log
    # Published but not in this test's log: the follower can only have it from Redis.
    broker.publish(battle_id, [token(3), token(4)])
    await broker.flush()

    assert await follower.next(after=2) == [token(3), token(4)]


async def test_a_gap_in_the_stream_is_filled_from_the_log(broker, battle_id) -> None:
    await commit(battle_id, 1)
    follower = broker.follower(battle_id)
    assert [e.seq for e in await follower.next(after=0)] == [1]

    await commit(battle_id, 2, 3, 4)
    broker.publish(battle_id, [token(4)])  # 2 and 3 were never published (say, the runner died)
    await broker.flush()

    assert [e.seq for e in await follower.next(after=1)] == [2, 3, 4]


async def test_a_quiet_stream_still_delivers_what_the_log_has(broker, battle_id) -> None:
    follower = broker.follower(battle_id)
    assert await follower.next(after=0) == []
    await commit(battle_id, 1, 2)  # committed, publish lost

    assert [e.seq for e in await follower.next(after=0)] == [1, 2]


async def test_the_stream_skips_what_the_follower_already_has(broker, battle_id) -> None:
    await commit(battle_id, 1, 2)
    broker.publish(battle_id, [token(1), token(2)])
    await broker.flush()
    follower = broker.follower(battle_id)
    assert [e.seq for e in await follower.next(after=0)] == [1, 2]
    broker.publish(battle_id, [token(2), token(3)])  # 2 again: a duplicate delivery
    await broker.flush()

    assert [e.seq for e in await follower.next(after=2)] == [3]


async def test_without_redis_publishing_is_harmless_and_followers_use_the_log(battle_id, caplog) -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0")  # nothing listens there
    try:
        broker.publish(battle_id, [token(1)])
        await broker.flush()  # returns: the failure is logged, not raised
        await commit(battle_id, 1)

        assert [e.seq for e in await broker.follower(battle_id).next(after=0)] == [1]
    finally:
        await broker.close()
    assert "Could not publish events to Redis" in caplog.text
    assert "following battle" in caplog.text


async def test_a_running_battle_reaches_a_redis_follower_complete_and_in_order(
    broker, make_battle, monkeypatch
) -> None:
    monkeypatch.setattr(brokers, "broker", lambda: broker)
    battle = await sync_to_async(make_battle)(rounds=1)
    claimed = await sync_to_async(services.battle_start)(battle_id=battle.pk)
    follower = broker.follower(battle.pk)
    assert isinstance(follower, RedisFollower)
    assert await follower.next(after=0) == []  # following from before the start

    runner = asyncio.create_task(BattleRun(claimed, listeners=[brokers.publisher(battle.pk)]).run())
    heard: list[RecordedEvent] = []
    deadline = time.monotonic() + FOLLOW_TIMEOUT_SECONDS
    while not heard or not heard[-1].is_terminal:
        assert time.monotonic() < deadline, f"the follower stopped after {heard[-1:] or 'nothing'}"
        heard += await follower.next(after=heard[-1].seq if heard else 0)
    await runner

    stored = await sync_to_async(list)(Event.objects.filter(battle=battle).order_by("seq"))
    assert [(e.seq, e.type, e.data) for e in heard] == [(e.seq, e.type, e.data) for e in stored]
