"""Settings of the arena under benchmark: the real settings, every role on `bench/clock`, and the
limits meant for the public internet lifted for thousands of spectators from 127.0.0.1.

Everything else (DEBUG off, logging, the memory broadcast, SQLite in WAL mode, heartbeats, the lag
limit) is as deployed. `bench.run` passes DATABASE_URL, MEDIA_ROOT and SECRET_KEY.
"""

from __future__ import annotations

from arena.settings import *  # noqa: F403
from bench import provider

provider.register()

ARENA_MODEL = provider.MODEL
ARENA_ROLE_MODELS = dict.fromkeys(("aggressor", "defender", "moderator"), provider.MODEL)
ARENA_MODEL_CHOICES = [provider.MODEL]
# The longest battle there is (10 rounds, 30 turns) with turns of realistic length (20 s at 50 tokens
# a second): ten minutes of tokens, more than any step needs, and the turn events between them.
ARENA_ROUNDS = 10
ARENA_MAX_TOKENS_PER_TURN = 1000
ARENA_MAX_TOKENS_PER_BATTLE = 10_000_000
# Every spectator comes from 127.0.0.1, and every step creates a battle.
ARENA_MAX_STREAMS_PER_IP = 100_000
ARENA_BATTLES_PER_IP_PER_HOUR = 100_000
