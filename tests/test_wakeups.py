"""Waking a channel's spectators: waves, the gap after a costly wave and its bound, timeouts."""

from __future__ import annotations

import asyncio
import time

from battles.live import wakeups
from battles.live.wakeups import Wakeups


async def waiting(wakeups: Wakeups, count: int, timeout: float = 60) -> list[asyncio.Task[bool]]:
    tasks = [asyncio.create_task(wakeups.wait(timeout)) for _ in range(count)]
    await asyncio.sleep(0)  # let them start waiting
    return tasks


async def test_news_wakes_every_waiter_in_one_wave() -> None:
    w = Wakeups(max_gap=0.25)
    tasks = await waiting(w, 100)

    w.notify()

    assert await asyncio.gather(*tasks) == [True] * 100
    assert w.waves == 1


async def test_a_waiter_times_out_without_news() -> None:
    w = Wakeups(max_gap=0.25)
    started = time.monotonic()

    assert await w.wait(0.1) is False
    assert 0.1 <= time.monotonic() - started < 0.1 + wakeups.TICK_SECONDS + 0.1


async def test_only_the_waiters_that_are_due_time_out() -> None:
    w = Wakeups(max_gap=0.25)
    soon, later = asyncio.create_task(w.wait(0.05)), asyncio.create_task(w.wait(60))

    assert await soon is False
    assert not later.done()
    w.notify()
    assert await later is True


async def test_after_a_costly_wave_the_next_waits_in_proportion() -> None:
    w = Wakeups(max_gap=10)
    cost, spectators = 0.02, 5

    async def costly_spectator() -> None:
        await w.wait(60)
        time.sleep(cost)  # its write, holding the event loop as writes do

    wave = [asyncio.create_task(costly_spectator()) for _ in range(spectators)]
    await asyncio.sleep(0)
    started = time.monotonic()
    w.notify()
    await asyncio.gather(*wave)
    tasks = await waiting(w, 3)
    for _ in range(5):
        w.notify()  # news arriving during the gap

    await asyncio.gather(*tasks)

    took = (spectators - 1) * cost  # until its last spectator ran
    assert time.monotonic() - started >= took * (1 + wakeups.WAVE_GAP_RATIO)
    assert w.waves == 2  # the five notifications were told in one wave


async def test_the_gap_is_bounded() -> None:
    w = Wakeups(max_gap=0.01)

    async def costly_spectator() -> None:
        await w.wait(60)
        time.sleep(0.1)

    wave = [asyncio.create_task(costly_spectator()) for _ in range(3)]
    await asyncio.sleep(0)
    w.notify()
    await asyncio.gather(*wave)
    wave_ended = time.monotonic()
    (task,) = await waiting(w, 1)
    w.notify()

    await task

    assert time.monotonic() - wave_ended < 0.1


async def test_cheap_waves_follow_each_other_at_once() -> None:
    w = Wakeups(max_gap=0.25)
    for wave in range(1, 51):
        (task,) = await waiting(w, 1)
        w.notify()
        await task
        assert w.waves == wave


async def test_a_spectator_that_leaves_does_not_hold_the_next_wave() -> None:
    w = Wakeups(max_gap=0.25)
    leaving, staying = await waiting(w, 2)
    leaving.cancel()  # gone while waiting
    w.notify()
    assert await staying is True

    woken_then_gone, staying = await waiting(w, 2)
    w.notify()
    woken_then_gone.cancel()  # gone after being woken, before it ran
    assert await staying is True
    (task,) = await waiting(w, 1)
    w.notify()
    assert await task is True


async def test_notify_now_does_not_wait_for_the_gap() -> None:
    w = Wakeups(max_gap=10)

    async def costly_spectator() -> None:
        await w.wait(60)
        time.sleep(0.1)

    wave = [asyncio.create_task(costly_spectator()) for _ in range(3)]
    await asyncio.sleep(0)
    w.notify()
    await asyncio.gather(*wave)
    wave_ended = time.monotonic()
    (task,) = await waiting(w, 1)

    w.notify_now()

    assert await task is True
    assert time.monotonic() - wave_ended < 0.1


async def test_a_large_wave_lets_other_work_run_between_its_slices() -> None:
    w = Wakeups(max_gap=0.25)
    order: list[str] = []

    async def spectator() -> None:
        await w.wait(60)
        order.append("spectator")

    tasks = [asyncio.create_task(spectator()) for _ in range(3 * wakeups.WAVE_SLICE)]
    await asyncio.sleep(0)
    w.notify()
    asyncio.get_running_loop().call_soon(order.append, "engine")  # e.g. a commit coming back

    await asyncio.gather(*tasks)

    assert w.waves == 1
    assert 0 < order.index("engine") <= wakeups.WAVE_SLICE  # after the first slice, not the last
