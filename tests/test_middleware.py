"""Project-wide ASGI wrappers and middleware (arena/middleware.py)."""

from __future__ import annotations

import asyncio
import threading
import uuid

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.test import AsyncClient, Client

from arena.asgi_wrappers import StreamsShareOneThread
from battles import views


async def django_like(scope: dict, receive, send) -> None:  # noqa: ANN001
    """Does what Django's ASGI handler does with a request's sync work: a thread-sensitive context per
    request, so each request's sync calls get a thread of their own unless a wrapper says otherwise."""
    async with ThreadSensitiveContext():
        scope["threads"] = {await sync_to_async(threading.get_ident)() for _ in range(3)}


async def request(app: StreamsShareOneThread, path: str) -> set[int]:
    scope = {"type": "http", "path": path}
    await app(scope, None, None)
    return scope["threads"]


async def test_live_streams_share_one_thread_for_their_sync_work() -> None:
    app = StreamsShareOneThread(django_like, views=frozenset({views.events}))
    streams = [f"/battles/{uuid.uuid4()}/events" for _ in range(10)]

    used = await asyncio.gather(*(request(app, path) for path in streams))

    shared = app.executor.submit(threading.get_ident).result()
    assert all(threads == {shared} for threads in used)


async def test_other_requests_keep_a_thread_each() -> None:
    app = StreamsShareOneThread(django_like, views=frozenset({views.events}))
    shared = app.executor.submit(threading.get_ident).result()

    pages = await asyncio.gather(
        *(request(app, path) for path in ["/", f"/battles/{uuid.uuid4()}/", "/nowhere"])
    )

    assert all(len(threads) == 1 and shared not in threads for threads in pages)
    assert len(set.union(*pages)) == 3  # a thread per request, as Django does it


def test_static_files_are_served_by_the_sync_handler(client: Client) -> None:
    response = client.get("/static/battles/arena.js")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert b"EventSource" in b"".join(response.streaming_content)


async def test_static_files_and_pages_go_through_the_async_handler(async_client: AsyncClient) -> None:
    static = await async_client.get("/static/battles/arena.css")
    missing = await async_client.get("/static/battles/nothing-here.css")

    assert static.status_code == 200 and static["Content-Type"].startswith("text/css")
    assert missing.status_code == 404
