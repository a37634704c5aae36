"""Project-wide Django middleware: the Content-Security-Policy header, static files served async.

The ASGI wrappers around Django are in `arena.asgi_wrappers`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware

# The next middleware (or the view), sync or async: Django passes either.
GetResponse: TypeAlias = Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]
AsyncGetResponse: TypeAlias = Callable[[HttpRequest], Awaitable[HttpResponseBase]]


class ContentSecurityPolicyMiddleware:
    """Adds the Content-Security-Policy header (Django 5.2 has no built-in CSP). Sync and async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        # Taken before the check: to mypy, iscoroutinefunction(self) makes `self` a bare coroutine
        # function, which has no `_acall`.
        acall = self._acall
        if iscoroutinefunction(self):
            return acall(request)
        # Not marked a coroutine function in __init__: get_response is sync and returns a response.
        return self._add_header(cast(HttpResponseBase, self.get_response(request)))

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        return self._add_header(await cast(Awaitable[HttpResponseBase], self.get_response(request)))

    @staticmethod
    def _add_header(response: HttpResponseBase) -> HttpResponseBase:
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):  # type: ignore[misc]  # whitenoise has no types
    """whitenoise's middleware (static files), async, so that the requests it passes on do not go
    through a thread.

    whitenoise's own is sync only: Django then runs it in a thread that waits there while everything
    below it runs, so a stream's start held a thread for many trips through the event loop (with
    streams sharing one thread, one stream started at a time). Serving a static file, and finding one
    in autorefresh (DEBUG) mode, touch the disk and still run in a thread.
    """

    sync_capable = False
    async_capable = True
    # Declared only (whitenoise has no types): async_capable alone, so Django passes an async one.
    get_response: AsyncGetResponse

    def __init__(self, get_response: AsyncGetResponse) -> None:
        super().__init__(get_response)
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            response: HttpResponseBase = await sync_to_async(self.serve)(static_file, request)
            return response
        return await self.get_response(request)
