"""What a battle has spent (tokens and cost), and what it may still spend (ARENA_MAX_TOKENS_PER_BATTLE)."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings

from battles.exceptions import BudgetExhausted
from battles.providers import llm

# A model call is not worth making with fewer tokens than this left for its answer.
MIN_TURN_TOKENS = 32


class Budget:
    """A battle's totals: every model call's tokens and price, counted as it completes."""

    def __init__(self, endpoints: Iterable[llm.Endpoint]) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        # Unknown (None) as soon as one model has no known price.
        self.cost_usd: float | None = (
            0.0 if all(llm.cost_usd(e, llm.Usage()) is not None for e in endpoints) else None
        )

    def count(self, endpoint: llm.Endpoint, usage: llm.Usage) -> None:
        """Add a model call's tokens and price to the totals."""
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        cost = llm.cost_usd(endpoint, usage)
        self.cost_usd = None if self.cost_usd is None or cost is None else self.cost_usd + cost

    def usage(self) -> dict[str, int]:
        """The totals as event data."""
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    def affordable_tokens(self, endpoint: llm.Endpoint, messages: list[dict[str, str]], *, cap: int) -> int:
        """The answer's max_tokens (at most `cap`) within what is left once `messages` are paid for.

        Raises BudgetExhausted when that is less than MIN_TURN_TOKENS. Counting tokens is slow: call
        it in a thread.
        """
        left = settings.ARENA_MAX_TOKENS_PER_BATTLE - self.prompt_tokens - self.completion_tokens
        left -= llm.count_message_tokens(endpoint.model, messages)
        if left < MIN_TURN_TOKENS:
            raise BudgetExhausted("The battle's token budget cannot pay for another model call.")
        return min(cap, left)
