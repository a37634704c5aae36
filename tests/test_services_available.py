"""The real services the scale-out work builds on: PostgreSQL takes the migrations, Redis answers.

Skipped with the reason on a machine without them; failed in CI (see tests/services.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from tests.support.live import PostgresDatabase, migrate
from tests.support.services import POSTGRES, require


@pytest.fixture
def fresh_postgres_database(postgres_url: str) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase.create(postgres_url, f"test_arena_{os.getpid()}_fresh_{uuid.uuid4().hex[:8]}")
    yield database
    database.drop()


@pytest.mark.postgres
def test_migrations_apply_on_a_fresh_postgresql_database(fresh_postgres_database: PostgresDatabase) -> None:
    migrate(fresh_postgres_database.url)

    tables = {
        name
        for (name,) in fresh_postgres_database.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    }
    assert {"battles_document", "battles_battle", "battles_turn", "battles_event"} <= tables
    constraints = {
        name
        for (name,) in fresh_postgres_database.fetch(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'battles_event'::regclass"
        )
    }
    assert {"event_unique_seq_per_battle", "event_seq_positive"} <= constraints


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.mark.redis
async def test_redis_stores_and_expires_a_key(redis_client: aioredis.Redis) -> None:
    key = f"arena-test:{uuid.uuid4().hex}"  # a unique key: the database is shared, never flushed

    assert await redis_client.ping() is True
    assert await redis_client.set(key, "hello", px=60_000) is True
    assert await redis_client.get(key) == b"hello"
    assert 0 < await redis_client.pttl(key) <= 60_000
    assert await redis_client.delete(key) == 1


@pytest.mark.redis
async def test_redis_delivers_a_published_message_to_a_subscriber(redis_client: aioredis.Redis) -> None:
    channel = f"arena-test:{uuid.uuid4().hex}"
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(channel)
        confirmation = await pubsub.get_message(timeout=5)
        assert confirmation and confirmation["type"] == "subscribe"

        receivers = await redis_client.publish(channel, "event 1")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)

    assert receivers == 1
    assert message and message["data"] == b"event 1"


def test_an_unreachable_service_is_a_skip_on_a_laptop_and_a_failure_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = "postgres://postgres:s3cret@127.0.0.1:1/postgres"  # port 1: nothing listens there
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require(POSTGRES, closed)
    assert str(skipped.value).startswith(
        "PostgreSQL is not reachable at postgres://postgres:***@127.0.0.1:1/"
    )
    assert "set TEST_POSTGRES_URL" in str(skipped.value) and "s3cret" not in str(skipped.value)

    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require(POSTGRES, closed)
