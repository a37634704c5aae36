"""Project-wide Django middleware: the Content-Security-Policy header, static files served async.

The ASGI wrappers around Django are in `arena.asgi_wrappers`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
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
