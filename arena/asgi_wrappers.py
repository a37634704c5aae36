"""The ASGI wrappers around Django's application, outermost first in `arena.asgi`:

- `RequestBodyLimit` refuses oversized request bodies before Django reads them;
- `Supervised` starts the process's background duties (`battles.live.supervisor`) with its first
  connection and counts the requests under way, so that a graceful shutdown lets them finish;
- `StreamsShareOneThread` gives every live SSE stream one shared thread for its sync work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeAlias

from asgiref.sync import ThreadSensitiveContext
from django.urls import Resolver404, resolve

from battles.live import supervisor

# ASGI as django-stubs types Django's own handler, so that it fits these wrappers: a scope and the
# messages are dicts whose keys depend on their "type".
Scope: TypeAlias = dict[str, Any]
Message: TypeAlias = Mapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestBodyLimit:
    """ASGI wrapper: refuses request bodies over `limit` bytes with 413 before Django reads them.

    Django's ASGI handler reads (and spools to disk) a whole body before any view runs, so a limit
    checked in a view comes too late to protect the server. Bodies declared too large by
    Content-Length are refused at once; bodies without one are counted as they arrive.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        return await self.app(scope, counting_receive, guarded_send)

    @staticmethod
    async def _refuse(send: Send) -> None:
        body = b"Request body too large."
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class StreamsShareOneThread:
    """ASGI wrapper: the sync work of every live SSE stream runs on one thread they share.

    Django's ASGI handler gives each request a thread of its own for its sync work (the request
    signals, sync-only middleware such as whitenoise's, the async ORM's queries), kept until the
    response ends. A live stream lasts as long as its spectator watches: thousands of spectators would
    hold thousands of idle threads, each with its own database connection (about 200 KB and three file
    descriptors apiece). A stream does sync work only as it starts and ends, so they all share one
    thread (and one connection) instead. Other requests keep a thread each.

    Preconditions of asgiref's shared-executor context, which the stream view meets: it runs one call
    at a time, and no task the request starts outlives it with thread-sensitive calls (the battle's
    producer starts in a fresh context).
    """

    def __init__(self, app: ASGIApp, *, views: frozenset[Callable[..., object]]) -> None:
        self.app = app
        self.views = views
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streams")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._is_stream(scope["path"]):
            async with ThreadSensitiveContext(executor=self.executor):
                return await self.app(scope, receive, send)
        return await self.app(scope, receive, send)

    def _is_stream(self, path: str) -> bool:
        try:
            return resolve(path).func in self.views
        except Resolver404:
            return False


class Supervised:
    """ASGI wrapper: starts the process's background duties with the first connection, and counts
    the requests under way so that a graceful shutdown lets them finish."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight = 0
        self._idle: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        supervisor.start(self)
        self.in_flight += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def wait_idle(self, timeout: float) -> None:
        """Wait until no request is under way (its response fully sent), at most `timeout` seconds."""
        if self.in_flight:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._idle.wait()
