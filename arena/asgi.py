"""ASGI entry point: daphne serves `arena.asgi:application`."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from arena.middleware import RequestBodyLimit, StreamsShareOneThread

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

django_application = get_asgi_application()

# Past this a body is refused outright; up to it, the upload view answers with its own form and reason.
REQUEST_BODY_LIMIT = settings.ARENA_MAX_UPLOAD_BYTES + 1024 * 1024

# Imported once Django is set up: the sweep and graceful shutdown start with the first connection.
from battles import views  # noqa: E402
from battles.supervisor import Supervised  # noqa: E402

application = RequestBodyLimit(
    Supervised(StreamsShareOneThread(django_application, views=frozenset({views.events}))),
    limit=REQUEST_BODY_LIMIT,
)
