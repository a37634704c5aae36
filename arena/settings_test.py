"""Settings for the test suite: the real settings with fast, isolated defaults."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("ARENA_SPARRING_DELAY_MS", "0")

from arena.settings import *  # noqa: E402,F403
from arena.settings import DATABASES  # noqa: E402

MEDIA_ROOT = os.environ.get("MEDIA_ROOT") or tempfile.mkdtemp(prefix="arena-test-media-")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # pytest-django creates this database on DATABASE_URL's server and drops it at the end. The pid
    # keeps two runs at once (two checkouts, two `make test`) from dropping each other's database;
    # tests/live.py names the live servers' databases after it (test_arena_<pid>_live…).
    DATABASES["default"]["TEST"] = {"NAME": f"test_arena_{os.getpid()}"}
