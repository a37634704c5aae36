"""Every error the arena raises to a caller. Views map them to HTTP responses, `runbattle` to exit codes.

Django-free: `battles.documents` and the engine raise them too.
"""

from __future__ import annotations


class BattleError(Exception):
    """Base class: `message` is one line, safe to show to anyone."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DocumentRejected(BattleError, ValueError):
    """An upload that cannot become a document (a ValueError too: bad input).

    `reason` (the same as `message`) is a one-line, user-facing sentence; `status` is the HTTP status
    a view should answer (400, or 413 for too large).
    """

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class LimitExceeded(BattleError):
    """A limit was reached: answer 429, with Retry-After in seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BattleStateError(BattleError):
    """A transition was attempted from the wrong state (someone else got there first)."""


class LeaseLost(BattleError):
    """This process no longer holds the battle's lease: another one took it over. Write nothing more."""


class ArenaFull(BattleError):
    """As many battles as ARENA_MAX_RUNNING_BATTLES already run: a new one has to wait."""


class BudgetExhausted(BattleError):
    """The battle's token budget (ARENA_MAX_TOKENS_PER_BATTLE) cannot pay for the next model call."""


class ProviderError(BattleError):
    """A model call failed. The message never carries provider bodies, keys or tracebacks."""

    def __init__(self, message: str, *, retryable: bool, timed_out: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.timed_out = timed_out  # the model did not answer in time (as opposed to refusing)
