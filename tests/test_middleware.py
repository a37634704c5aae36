"""Project-wide middleware (arena/middleware.py): static files through the async whitenoise."""

from __future__ import annotations

from django.test import AsyncClient, Client


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
