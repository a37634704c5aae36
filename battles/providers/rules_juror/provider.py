"""litellm's view of `arena/rules`: the sparring model's stream, with the rules juror's answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from battles.providers import rules_juror
from battles.providers.sparring.provider import SparringLLM


class RulesJurorLLM(SparringLLM):
    model = rules_juror.MODEL

    def answer(self, messages: Sequence[dict[str, Any]], *, structured: bool) -> str:
        return rules_juror.reply(messages)
