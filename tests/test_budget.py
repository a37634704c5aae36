"""What a battle spends and may still spend (battles.engine.budget, ARENA_MAX_TOKENS_PER_BATTLE)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from battles.engine import run_battle
from battles.engine.budget import MIN_TURN_TOKENS, Budget
from battles.exceptions import BudgetExhausted
from battles.models import Battle, Event
from battles.providers import llm

FREE = llm.Endpoint("arena/sparring")
PRICED = llm.Endpoint("openai/gpt-4o-mini")
SELF_HOSTED = llm.Endpoint("openai/gpt-4o-mini", api_base="http://127.0.0.1:8080/v1")
MESSAGES = [{"role": "user", "content": "Is this claim supported by the survey?"}]


def test_the_totals_add_every_call_up() -> None:
    budget = Budget([FREE, PRICED])
    budget.count(PRICED, llm.Usage(prompt_tokens=1000, completion_tokens=500))
    budget.count(FREE, llm.Usage(prompt_tokens=10, completion_tokens=5))

    assert budget.usage() == {"prompt_tokens": 1010, "completion_tokens": 505}
    expected = llm.cost_usd(PRICED, llm.Usage(prompt_tokens=1000, completion_tokens=500))
    assert expected and budget.cost_usd == pytest.approx(expected)


def test_the_cost_is_unknown_as_soon_as_one_model_has_no_price() -> None:
    assert Budget([FREE, SELF_HOSTED]).cost_usd is None
    budget = Budget([FREE])
    budget.count(SELF_HOSTED, llm.Usage(prompt_tokens=1, completion_tokens=1))  # priced by nobody
    assert budget.cost_usd is None


def test_a_call_gets_what_is_left_at_most_its_cap(settings) -> None:
    prompt = llm.count_message_tokens(FREE.model, MESSAGES)
    settings.ARENA_MAX_TOKENS_PER_BATTLE = 1000
    budget = Budget([FREE])
    budget.count(FREE, llm.Usage(prompt_tokens=600, completion_tokens=200))

    assert budget.affordable_tokens(FREE, MESSAGES, cap=400) == 1000 - 800 - prompt
    assert budget.affordable_tokens(FREE, MESSAGES, cap=50) == 50


def test_a_call_that_cannot_be_paid_for_is_refused(settings) -> None:
    prompt = llm.count_message_tokens(FREE.model, MESSAGES)
    settings.ARENA_MAX_TOKENS_PER_BATTLE = prompt + MIN_TURN_TOKENS
    assert Budget([FREE]).affordable_tokens(FREE, MESSAGES, cap=400) == MIN_TURN_TOKENS

    settings.ARENA_MAX_TOKENS_PER_BATTLE = prompt + MIN_TURN_TOKENS - 1
    with pytest.raises(BudgetExhausted):
        Budget([FREE]).affordable_tokens(FREE, MESSAGES, cap=400)


@pytest.mark.django_db(transaction=True)
async def test_a_battle_ends_cleanly_when_its_token_budget_runs_out(make_battle, settings) -> None:
    settings.ARENA_MAX_TOKENS_PER_BATTLE = 3000
    battle = await sync_to_async(make_battle)(rounds=3)

    finished = await run_battle(battle.pk)

    assert finished.status == Battle.Status.FINISHED
    assert finished.prompt_tokens + finished.completion_tokens <= 3000
    turns = await finished.turns.acount()
    assert 0 < turns < 9
    log = [e async for e in Event.objects.filter(battle=battle).order_by("seq")]
    assert [e.type for e in log[-2:]] == ["verdict", "battle.completed"]
    assert log[-2].data["fallback"] is True
    assert log[-2].data["summary"].startswith("The battle ran out of its token budget (3000 tokens)")
