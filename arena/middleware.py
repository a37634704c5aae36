"""Project-wide response headers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve
from whitenoise.middleware import WhiteNoiseMiddleware


class ContentSecurityPolicyMiddleware:
    """Adds the Content-Security-Policy header (Django 5.2 has no built-in CSP). Sync and async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if iscoroutinefunction(self):
            return self._acall(request)
        return self._add_header(self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        return self._add_header(await self.get_response(request))

    @staticmethod
    def _add_header(response: HttpResponseBase) -> HttpResponseBase:
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):
    """whitenoise's middleware (static files), async, so that the requests it passes on do not go
    through a thread.

    whitenoise's own is sync only: Django then runs it in a thread that waits there while everything
    below it runs, so a stream's start held a thread for many trips through the event loop (with
    streams sharing one thread, one stream started at a time). Serving a static file, and finding one
    in autorefresh (DEBUG) mode, touch the disk and still run in a thread.
    """

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        super().__init__(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:  # type: ignore[override]
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)


class RequestBodyLimit:
    """ASGI wrapper: refuses request bodies over `limit` bytes with 413 before Django reads them.

    Django's ASGI handler reads (and spools to disk) a whole body before any view runs, so a limit
    checked in a view comes too late to protect the server. Bodies declared too large by
    Content-Length are refused at once; bodies without one are counted as they arrive.
    """

    def __init__(self, app: Callable, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        received = 0
        refused = False

        async def counting_receive() -> dict:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if not refused:
                await send(message)

        return await self.app(scope, counting_receive, guarded_send)

    @staticmethod
    async def _refuse(send: Callable) -> None:
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

    def __init__(self, app: Callable, *, views: frozenset[Callable]) -> None:
        self.app = app
        self.views = views
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streams")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and self._is_stream(scope["path"]):
            async with ThreadSensitiveContext(executor=self.executor):
                return await self.app(scope, receive, send)
        return await self.app(scope, receive, send)

    def _is_stream(self, path: str) -> bool:
        try:
            return resolve(path).func in self.views
        except Resolver404:
            return False
