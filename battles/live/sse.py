"""Server-Sent Events framing, pure and Django-free (https://html.spec.whatwg.org/#server-sent-events).

`data:` is always one line of compact JSON: json.dumps escapes CR and LF inside strings, so no text
can end a field or an event early. Frames are bytes, encoded once per event and shared by every
spectator.
"""

from __future__ import annotations

import json
from typing import Any

from battles.events import RecordedEvent

PING = b": ping\n\n"


def last_event_id(header: str | None, query: str | None) -> int:
    """Where a client resumes: the Last-Event-ID header, else ?last_event_id=, else 0 (the start)."""
    raw = header or query or "0"
    if not raw.isdigit():
        raise ValueError("Last-Event-ID must be a whole number.")
    return int(raw)


def retry(milliseconds: int) -> bytes:
    """Tells EventSource how long to wait before reconnecting."""
    return f"retry: {int(milliseconds)}\n\n".encode()


def encode_json(data: Any) -> str:
    """Compact one-line JSON that always has a UTF-8 form.

    A lone surrogate (a provider may send half an emoji) has none: such data is written with \\uXXXX
    escapes instead, which parse back to exactly the same text.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text


def frame(event_type: str, data: Any, *, id: int | None = None) -> bytes:
    """One SSE event. Without `id` the browser's last event id is left unchanged."""
    if "\n" in event_type or "\r" in event_type:
        raise ValueError("An event type cannot contain a line break.")
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {event_type}\ndata: {encode_json(data)}\n\n".encode()


def encode_event(event: RecordedEvent) -> bytes:
    return frame(event.type, event.data, id=event.seq)
