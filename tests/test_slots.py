"""Open SSE streams per client IP (battles.live.slots, ARENA_MAX_STREAMS_PER_IP)."""

from __future__ import annotations

import gc

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from battles import services
from battles.exceptions import LimitExceeded
from battles.live.slots import StreamSlots


class Stream:
    """Stands for a response's stream: something that can be collected."""


def test_a_client_gets_as_many_slots_as_allowed_and_no_more(settings) -> None:
    settings.ARENA_MAX_STREAMS_PER_IP = 2
    slots = StreamSlots()
    slots.acquire("10.0.0.1")
    slots.acquire("10.0.0.1")

    with pytest.raises(LimitExceeded) as refused:
        slots.acquire("10.0.0.1")

    assert refused.value.retry_after == 10
    slots.acquire("10.0.0.2")  # another client is not affected
    slots.acquire(None)  # nor are clients without a valid address, counted together
    assert slots.open == {"10.0.0.1": 2, "10.0.0.2": 1, None: 1}


def test_release_frees_the_slot_once(settings) -> None:
    settings.ARENA_MAX_STREAMS_PER_IP = 1
    slots = StreamSlots()
    slot = slots.acquire("10.0.0.1")

    assert slot.release() is True
    assert slot.release() is False  # idempotent: the count is not taken down twice
    assert slots.open == {}
    other = slots.acquire("10.0.0.1")
    slot.release()
    assert slots.open == {"10.0.0.1": 1}  # the stale slot's second release left the new one alone
    assert other.release() is True


def test_a_bound_slot_is_freed_when_its_stream_is_collected(settings) -> None:
    settings.ARENA_MAX_STREAMS_PER_IP = 1
    slots = StreamSlots()
    stream = Stream()
    slots.acquire("10.0.0.1").bind(stream)
    with pytest.raises(LimitExceeded):
        slots.acquire("10.0.0.1")

    del stream
    gc.collect()

    assert slots.open == {}
    slots.acquire("10.0.0.1").release()


def test_a_bound_slot_released_first_is_not_released_again_on_collection(settings) -> None:
    slots = StreamSlots()
    stream = Stream()
    slot = slots.acquire("10.0.0.1")
    slot.bind(stream)
    assert slot.release() is True
    held = slots.acquire("10.0.0.1")

    del stream
    gc.collect()

    assert slots.open == {"10.0.0.1": 1}
    held.release()


@pytest.mark.django_db(transaction=True)
async def test_open_streams_per_client_ip(make_battle, settings) -> None:
    settings.ARENA_MAX_STREAMS_PER_IP = 2
    battle = await sync_to_async(make_battle)()
    await sync_to_async(services.battle_start)(battle_id=battle.pk)  # running elsewhere: streams stay open
    client = AsyncClient()
    url = f"/battles/{battle.pk}/events"

    first, second = await client.get(url), await client.get(url)
    third = await client.get(url)
    settings.ARENA_TRUSTED_PROXIES = 1
    other_ip = await client.get(url, headers={"X-Forwarded-For": "10.0.0.9"})

    assert (first.status_code, second.status_code, other_ip.status_code) == (200, 200, 200)
    assert third.status_code == 429 and third["Retry-After"] == "10"
    del first
    gc.collect()  # a stream that is gone gives its slot back
    assert (await client.get(url)).status_code == 200
