"""The reference peer: a minimal sse-starlette app on uvicorn broadcasting the benchmark's tokens.

Written the way the usual Python SSE app is: one producer, an `asyncio.Queue` per spectator, and
`EventSourceResponse` sending one event per token. It streams the same tokens as the arena (see
`bench.clock`), with the same event shape (`id: <seq>`, `event: token`, JSON data), so the load
process measures both the same way.

    python -m bench.peer --port 8001      # GET /events
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import uvicorn
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from bench import clock

subscribers: set[asyncio.Queue[tuple[int, str]]] = set()


async def produce() -> None:
    seq = 0
    async for text in clock.ticks():
        seq += 1
        data = json.dumps({"turn": 1, "role": "aggressor", "text": text}, separators=(",", ":"))
        for queue in subscribers:
            queue.put_nowait((seq, data))


async def events(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    subscribers.add(queue)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        try:
            while True:
                seq, data = await queue.get()
                yield ServerSentEvent(data=data, event="token", id=str(seq))
        finally:
            subscribers.discard(queue)

    return EventSourceResponse(stream())


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    producer = asyncio.create_task(produce())
    try:
        yield
    finally:
        producer.cancel()


app = Starlette(routes=[Route("/events", events)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    # uvicorn's defaults without its optional speed-ups (uvloop, httptools), as `pip install uvicorn`
    # gives; named here so an environment that has them measures the same peer.
    uvicorn.run(app, host=args.host, port=args.port, loop="asyncio", http="h11", log_level="warning")


if __name__ == "__main__":
    main()
