"""Running a battle: the turn loop, its event log, its lease, its token budget, prompts and verdict.

The engine knows nothing of how a battle reaches anyone: it reports committed events to the listeners
it is given. `BattleRun` is its one entry point (`run_battle` claims a pending battle, then runs it).
"""

from battles.engine.run import BattleRun, run_battle

__all__ = ["BattleRun", "run_battle"]
