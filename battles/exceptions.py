"""The arena's errors. Views map them to HTTP responses, `runbattle` to exit codes."""

from __future__ import annotations


class BattleError(Exception):
    """Base class: `message` is one line, safe to show to anyone."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BattleStateError(BattleError):
    """A transition was attempted from the wrong state (someone else got there first)."""


class LeaseLost(BattleError):
    """This process no longer holds the battle's lease: another one took it over. Write nothing more."""


class ArenaFull(BattleError):
    """As many battles as ARENA_MAX_RUNNING_BATTLES already run: a new one has to wait."""


class ProviderError(BattleError):
    """A model call failed. The message never carries provider bodies, keys or tracebacks."""

    def __init__(self, message: str, *, retryable: bool, timed_out: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.timed_out = timed_out  # the model did not answer in time (as opposed to refusing)
