"""Delivering a battle: to browsers over SSE (live, resumed, replayed) and to a terminal.

The hub runs battles through the engine (`battles.engine.BattleRun`) and fans their committed events
out to spectators; brokers carry them to other processes; the supervisor keeps a serving process's
background duties. Nothing here decides what a battle says.
"""
