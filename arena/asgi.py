"""ASGI entry point: daphne serves `arena.asgi:application`."""

from __future__ import annotations

import gc
import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from battles.constants import REQUEST_BODY_SLACK_BYTES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

django_application = get_asgi_application()

# Past this a body is refused outright; up to it, the upload view answers with its own form and reason.
REQUEST_BODY_LIMIT = settings.ARENA_MAX_UPLOAD_BYTES + REQUEST_BODY_SLACK_BYTES

# Imported once Django is set up: they reach the app's models.
from arena.asgi_wrappers import RequestBodyLimit, StreamsShareOneThread, Supervised  # noqa: E402
from battles import views  # noqa: E402
from battles.providers import llm  # noqa: E402

# litellm now, before the first request: imported later, it would hold up the event loop (and every
# stream) for seconds when the first battle starts.
llm.load()

application = RequestBodyLimit(
    Supervised(StreamsShareOneThread(django_application, views=frozenset({views.events}))),
    limit=REQUEST_BODY_LIMIT,
)

# The garbage collector, for a process holding thousands of long-lived connections. Everything loaded
# by now (Django, litellm: some 440,000 objects) lives as long as the process: frozen, it is left out
# of every collection, where each full one used to pause all streams for 150-400 ms. And the young
# generation is collected after 50,000 new objects rather than 700, so that the short-lived objects
# of a wave of writes are freed by reference counting first instead of being promoted, which made a
# full collection every few seconds at 1,000 spectators. Measured with the benchmark (docs/benchmarks.md).
gc.freeze()
gc.set_threshold(50_000, 20, 10)
