"""One live battle's fan-out (battles.live.channel): frames, cursors, slow spectators, catching up."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from battles.events import RecordedEvent
from battles.live import channel as channels
from battles.live.channel import Channel
from tests.support.logs import finished, token
from tests.support.sse_client import collect, ids


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


async def test_frames_are_encoded_once_and_shared(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = []
    encode = channels.sse.encode_event

    def counting_encode(event: RecordedEvent) -> bytes:
        encoded.append(event.seq)
        return encode(event)

    monkeypatch.setattr(channels.sse, "encode_event", counting_encode)
    channel = Channel(uuid.uuid4())
    channel.publish([token(1)])
    frame = b'id: 1\nevent: token\ndata: {"turn":1,"role":"aggressor","text":"x"}\n\n'

    writes = [await anext(channels.follow(channel, after=0)) for _ in range(3)]

    assert channel.frames == [frame]
    assert all(write.endswith(frame) for write in writes)  # after the spectator count
    assert encoded == [1]  # once, whoever reads it


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
