"""Waking a channel's spectators: waves, the gap after a costly wave and its bound, timeouts."""

from __future__ import annotations

import asyncio

import pytest

from battles.live import wakeups
from battles.live.wakeups import Wakeups
from tests.support.clock import VirtualLoop, overlay


@pytest.fixture
async def loop(monkeypatch: pytest.MonkeyPatch) -> VirtualLoop:
    """The wake-ups' loop on virtual time: a wave's gap and a tick are checked where they are due,
    however long the machine takes to get there."""
    virtual = VirtualLoop(asyncio.get_running_loop())
    monkeypatch.setattr(wakeups, "asyncio", overlay(asyncio, get_running_loop=lambda: virtual))
    return virtual


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


async def test_a_waiter_times_out_without_news(loop: VirtualLoop) -> None:
    w = Wakeups(max_gap=0.25)
    started = loop.time()
    waiter = asyncio.create_task(w.wait(0.1))

    await loop.advance_to(started + 0.1 - wakeups.CLOCK_SLACK_SECONDS * 2)
    assert not waiter.done()  # never before its timeout
    await loop.advance_to(started + 0.1 + wakeups.TICK_SECONDS)
    assert waiter.done() and waiter.result() is False  # at the latest one tick after it


async def test_only_the_waiters_that_are_due_time_out() -> None:
    w = Wakeups(max_gap=0.25)
    soon, later = asyncio.create_task(w.wait(0.05)), asyncio.create_task(w.wait(60))

    assert await soon is False
    assert not later.done()
    w.notify()
    assert await later is True


async def test_after_a_costly_wave_the_next_waits_in_proportion(loop: VirtualLoop) -> None:
    w = Wakeups(max_gap=10)
    cost, spectators = 0.02, 5

    async def costly_spectator() -> None:
        await w.wait(60)
        loop.spend(cost)  # its write, holding the event loop as writes do

    wave = [asyncio.create_task(costly_spectator()) for _ in range(spectators)]
    await asyncio.sleep(0)
    started = loop.time()
    w.notify()
    await asyncio.gather(*wave)
    tasks = await waiting(w, 3)
    for _ in range(5):
        w.notify()  # news arriving during the gap

    took = (spectators - 1) * cost  # until its last spectator ran
    due = started + took * (1 + wakeups.WAVE_GAP_RATIO)
    await loop.advance_to(due - 1e-6)
    assert not any(task.done() for task in tasks)  # the gap is not cut short
    await loop.advance_to(due + 1e-6)
    assert all(task.done() for task in tasks)
    assert await asyncio.gather(*tasks) == [True] * 3
    assert w.waves == 2  # the five notifications were told in one wave


async def test_the_gap_is_bounded(loop: VirtualLoop) -> None:
    w = Wakeups(max_gap=0.01)

    async def costly_spectator(cost: float) -> None:
        await w.wait(60)
        loop.spend(cost)

    # The wave takes 0.2 s (its last spectator runs then), so its proportional gap would be 0.1 s.
    wave = [asyncio.create_task(costly_spectator(cost)) for cost in (0.1, 0.1, 0.0)]
    await asyncio.sleep(0)
    w.notify()
    await asyncio.gather(*wave)
    wave_ended = loop.time()
    (task,) = await waiting(w, 1)
    w.notify()

    await loop.advance_to(wave_ended + 0.01 - 1e-6)
    assert not task.done()
    await loop.advance_to(wave_ended + 0.01 + 1e-6)  # max_gap after the wave, not 0.1 s
    assert task.done() and task.result() is True


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


async def test_notify_now_does_not_wait_for_the_gap(loop: VirtualLoop) -> None:
    w = Wakeups(max_gap=10)

    async def costly_spectator(cost: float) -> None:
        await w.wait(60)
        loop.spend(cost)

    # The wave takes 0.2 s (its last spectator runs then): the next one waits 0.1 s after it.
    wave = [asyncio.create_task(costly_spectator(cost)) for cost in (0.1, 0.1, 0.0)]
    await asyncio.sleep(0)
    w.notify()
    await asyncio.gather(*wave)
    wave_ended = loop.time()
    (task,) = await waiting(w, 1)
    w.notify()  # news during the gap waits for its end...
    await loop.advance_to(wave_ended)
    assert not task.done()

    w.notify_now()  # ...but the stream's end does not

    await loop.advance_to(wave_ended)  # no time passes
    assert task.done() and task.result() is True


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
