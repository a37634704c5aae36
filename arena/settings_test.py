"""Settings for the test suite: the real settings with fast, isolated defaults."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("ARENA_SPARRING_DELAY_MS", "0")

from arena.settings import *  # noqa: E402,F403

MEDIA_ROOT = os.environ.get("MEDIA_ROOT") or tempfile.mkdtemp(prefix="arena-test-media-")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
