"""The ASGI wrappers around Django's application (arena/asgi_wrappers.py)."""

from __future__ import annotations

import asyncio
import threading
import uuid

from asgiref.sync import ThreadSensitiveContext, sync_to_async

from arena.asgi_wrappers import RequestBodyLimit, StreamsShareOneThread
from battles import views


async def _asgi(app: RequestBodyLimit, headers: list, chunks: list[bytes]) -> tuple[list[dict], bool]:
    sent: list[dict] = []
    called = False
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def inner(scope: dict, receive, send) -> None:  # noqa: ANN001
        nonlocal called
        called = True
        while (await receive())["type"] == "http.request":
            pass

    app.app = inner
    await app({"type": "http", "method": "POST", "headers": headers}, receive, send)
    return sent, called


async def test_oversized_request_bodies_are_refused_before_django_reads_them() -> None:
    app = RequestBodyLimit(None, limit=100)  # type: ignore[arg-type]

    sent, called = await _asgi(app, [(b"content-length", b"101")], [b"x" * 101])
    assert sent[0]["status"] == 413 and called is False

    sent, called = await _asgi(app, [], [b"x" * 60, b"x" * 60])  # no Content-Length: counted
    assert sent[0]["status"] == 413

    sent, called = await _asgi(app, [(b"content-length", b"100")], [b"x" * 100])
    assert sent == [] and called is True


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
