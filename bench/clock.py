"""The benchmark's token source: tokens at an exact rate, each carrying the moment it was sent.

A token's text is `<sent_ns>:<late_us> `: `sent_ns` is `time.monotonic_ns()` when the token is
yielded, `late_us` how far behind its schedule that was (a busy event loop makes the producer late).
CLOCK_MONOTONIC is shared by every process on one Linux machine, so the load process subtracts
`sent_ns` from its own clock to get a token's latency. The arena (through the `bench/clock` litellm
provider, see `bench.provider`) and the peer (`bench.peer`) send the very same tokens.

Pure and Django-free: the peer imports it without Django or litellm.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

# The load: one battle whose model streams 50 tokens a second.
TOKENS_PER_SECOND = 50
# `"text":"<sent_ns>:<late_us> "` as it appears in a token event's JSON data.
TEXT_PATTERN = re.compile(rb'"text":"(\d+):(\d+) ')


def token_text(*, sent_ns: int, late_ns: int) -> str:
    return f"{sent_ns}:{late_ns // 1000} "


async def ticks(*, rate: float = TOKENS_PER_SECOND, count: int | None = None) -> AsyncIterator[str]:
    """`count` token texts (endless with None), one every 1/rate seconds on an absolute schedule.

    A late token does not shift the ones after it: the rate holds on average, and `late_us` says how
    late each one was.
    """
    period_ns = round(1e9 / rate)
    due = time.monotonic_ns()
    sent = 0
    while count is None or sent < count:
        now = time.monotonic_ns()
        if now < due:
            await asyncio.sleep((due - now) / 1e9)
            now = time.monotonic_ns()
        yield token_text(sent_ns=now, late_ns=max(0, now - due))
        sent += 1
        due += period_ns
