"""The HTTP side of delivery, shared by the live arena and the admin replay: the SSE response with its
headers, and the configuration the arena page's script reads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from django.http import StreamingHttpResponse
from django.urls import reverse

from battles.models import Battle


def sse_response(stream: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """An SSE response that no cache or proxy holds back (no middleware here buffers it either)."""
    response = StreamingHttpResponse(stream, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer this response
    return response


def arena_config(battle: Battle, *, events_url: str, replay_speed: float | None = None) -> dict[str, Any]:
    """What arena.js needs to follow a battle (its `arena-config` JSON); `replay_speed` switches it to
    replay mode (the admin's replay page). `documentUrl` is the text the document panel shows and
    citations point into."""
    config: dict[str, Any] = {
        "eventsUrl": events_url,
        "documentUrl": reverse("battles:document_txt", args=[battle.pk]),
        "battleId": str(battle.pk),
        "rounds": battle.rounds,
        "status": battle.status,
    }
    if replay_speed is not None:
        config["replay"] = {"speed": replay_speed}
    return config
