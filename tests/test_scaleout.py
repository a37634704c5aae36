"""Scale-out, end to end: daphne processes and `manage.py runbattle` on one PostgreSQL database with
the Redis broadcast, and what spectators see when the process running a battle is killed or stopped.

README "Scaling out" checked with real processes: one runner per battle however many spectators open
it at once, every spectator on every process gets exactly the stored log, a killed runner's battle is
taken over (by a process whose spectators watch it, or by the sweep when nobody does), a stopped one
is handed over. The single-process versions of takeover and handover are in tests/test_takeover.py.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from battles.engine.lease import HANDOVER_REASON
from battles.live.hub import TAKEOVER_REASON
from tests.support.documents import ESSAY
from tests.support.live import ROOT, LiveServer, PostgresDatabase, migrate
from tests.support.sse_client import Message, Parser
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

# Short, so that a killed runner's battle is taken over within a few seconds.
LEASE_SECONDS = "2"
# A turn of 60-120 words then lasts 1-2 s: long enough to cut a process off in the middle of one.
SPARRING_DELAY_MS = "15"
# A stream silent for longer than this (heartbeats come every second) has hung.
STREAM_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
# The longest a spectator watches one battle, reconnections included.
WATCH_SECONDS = 60.0
# The longest a test waits for something a battle does (its start, a few tokens, its end).
WAIT_SECONDS = 30.0
# A graceful shutdown waits up to 10 s (DRAIN_TIMEOUT_SECONDS) for its battles to be handed over.
SHUTDOWN_SECONDS = 15.0
# How long a spectator waits before reconnecting when a server refused it or was gone (as `retry:`).
RECONNECT_SECONDS = 0.1
TERMINAL = ("battle.completed", "battle.failed")

Logged = list[tuple[int, str, Any]]


@pytest.fixture(scope="module")
def database(postgres_url: str, redis_url: str) -> Iterator[PostgresDatabase]:
    """A migrated PostgreSQL database of this module's own; dropped, with the battles' Redis streams."""
    db = PostgresDatabase.create(postgres_url, f"test_arena_{os.getpid()}_scaleout")
    try:
        migrate(db.url)
        yield db
    finally:
        battle_ids = [str(pk) for (pk,) in db.fetch("SELECT id FROM battles_battle")]
        if battle_ids:
            with redis.Redis.from_url(redis_url) as client:
                client.delete(*(stream_key(battle_id) for battle_id in battle_ids))
        db.drop()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, database: PostgresDatabase, redis_url: str
) -> Iterator[list[LiveServer]]:
    """Two daphne processes on the module's database and Redis, as a deployment runs them.

    Shared by the module's tests (a start costs seconds); see `servers`.
    """
    folder = tmp_path_factory.mktemp("scaleout")
    env = {
        "ARENA_BROADCAST": "redis",
        "REDIS_URL": redis_url,
        "ARENA_LEASE_SECONDS": LEASE_SECONDS,
        "ARENA_SPARRING_DELAY_MS": SPARRING_DELAY_MS,
        "ARENA_SSE_HEARTBEAT_SECONDS": "1",
        "MEDIA_ROOT": str(folder / "media"),  # shared, as on a deployment's shared volume
    }
    servers = []
    for name in ("first", "second"):
        (folder / name).mkdir()
        servers.append(LiveServer(folder / name, database, **env))
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def servers(deployment: list[LiveServer]) -> Iterator[tuple[LiveServer, LiveServer]]:
    """The deployment's two servers, both running: one that is not (never started, or killed or
    stopped by a previous test) is started. What they log meanwhile is printed at the end (pytest
    shows it when the test fails), and must hold no traceback."""
    stopped = [s for s in deployment if s.process is None or s.process.poll() is not None]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(LiveServer.start, stopped))
    logged_before = {server.url: server.log.stat().st_size for server in deployment}
    first, second = deployment
    yield first, second
    logs = {}
    for server in deployment:
        with server.log.open("rb") as log:
            log.seek(logged_before[server.url])
            logs[server.url] = log.read().decode(errors="replace")
        print(f"--- {server.url} (pid {server.process and server.process.pid}) ---\n{logs[server.url]}")
    # Whatever a test checks, nothing may have crashed in a server meanwhile.
    crashed = [url for url, text in logs.items() if "Traceback" in text]
    assert not crashed, f"a server logged a traceback: {crashed}"


@dataclass
class Connection:
    """One HTTP response of a spectator's stream."""

    server: str
    status: int | None = None
    messages: list[Message] = field(default_factory=list)
    ending: str = ""  # "complete" when the response ended normally, else the error that ended it


class Spectator:
    """A viewer of one battle, in a thread of its own, reconnecting like EventSource behind a proxy.

    It connects to `servers[0]`; whenever a connection ends before battle.completed or battle.failed,
    it reconnects with Last-Event-ID to the next server of the list (staying on the last one). With a
    `barrier`, it first opens its connection, then sends its request when every party is ready.
    """

    def __init__(
        self, battle_id: str, servers: Sequence[str], *, barrier: threading.Barrier | None = None
    ) -> None:
        self.battle_id = battle_id
        self.servers = list(servers)
        self.barrier = barrier
        self.connections: list[Connection] = []
        self.done = False
        self.error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> Spectator:
        self._thread.start()
        return self

    def join(self) -> Spectator:
        self._thread.join(WATCH_SECONDS + 30)
        assert not self._thread.is_alive(), "the spectator is still watching past its deadline"
        if self.error:
            raise self.error
        return self

    @property
    def messages(self) -> list[Message]:
        with self._changed:
            return [m for c in self.connections for m in c.messages]

    def logged(self) -> Logged:
        """Every log event received, over every connection, as (seq, type, data)."""
        return logged(self.messages)

    def wait_for(self, condition: Callable[[list[Message]], bool], what: str) -> None:
        """Return once the messages received so far meet `condition` (fail after WAIT_SECONDS)."""
        with self._changed:
            self._changed.wait_for(lambda: self.done or condition(self.messages), WAIT_SECONDS)
        assert condition(self.messages), f"a spectator never saw {what}; it saw {self.logged()[-3:]}"

    def _watch(self) -> None:
        deadline = time.monotonic() + WATCH_SECONDS
        try:
            with httpx.Client(timeout=STREAM_TIMEOUT) as client:
                if self.barrier:
                    client.get(f"{self.servers[0]}/favicon.ico")  # the connection is open (keep-alive)
                    self.barrier.wait(WAIT_SECONDS)
                hop = 0
                while not self._finished() and time.monotonic() < deadline:
                    connection = Connection(self.servers[min(hop, len(self.servers) - 1)])
                    with self._changed:
                        self.connections.append(connection)
                    self._read(client, connection)
                    hop += 1
                    if not connection.messages:
                        time.sleep(RECONNECT_SECONDS)  # the reconnection delay, not a synchronisation
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            with self._changed:
                self.done = True
                self._changed.notify_all()

    def _read(self, client: httpx.Client, connection: Connection) -> None:
        seen = self.logged()
        headers = {"Last-Event-ID": str(seen[-1][0])} if seen else {}
        parser = Parser()
        try:
            url = f"{connection.server}/battles/{self.battle_id}/events"
            with client.stream("GET", url, headers=headers) as response:
                connection.status = response.status_code
                for text in response.iter_text():
                    messages = parser.feed(text)
                    with self._changed:
                        connection.messages += messages
                        self._changed.notify_all()
            connection.ending = "complete"
        except httpx.TransportError as exc:
            connection.ending = type(exc).__name__

    def _finished(self) -> bool:
        return any(m.event in TERMINAL for m in self.messages)


def logged(messages: Sequence[Message]) -> Logged:
    """The messages that are log events (they carry an id), as (seq, type, data)."""
    return [(int(m.id), m.event, m.json()) for m in messages if m.id is not None]


def started(messages: Sequence[Message]) -> bool:
    return any(m.event == "battle.started" for m in messages)


def tokens_of(turn: int, count: int) -> Callable[[Sequence[Message]], bool]:
    """Whether `count` tokens of turn `turn` have been received: that turn is under way."""

    def condition(messages: Sequence[Message]) -> bool:
        return sum(m.event == "token" and m.json()["turn"] == turn for m in messages) >= count

    return condition


def turn_started(turn: int) -> Callable[[Sequence[Message]], bool]:
    def condition(messages: Sequence[Message]) -> bool:
        return any(m.event == "turn.started" and m.json()["turn"] == turn for m in messages)

    return condition


def stream_key(battle_id: str) -> str:
    """The battle's Redis Stream (README "Scaling out"; `battles.brokers.stream_key`)."""
    return f"arena:battle:{battle_id}:events"


def battle_row(database: PostgresDatabase, battle_id: str) -> dict[str, Any]:
    columns = ("status", "lease_owner", "takeovers")
    [row] = database.fetch(
        f"SELECT {', '.join(columns)} FROM battles_battle WHERE id = %s", [uuid.UUID(battle_id)]
    )
    return dict(zip(columns, row, strict=True))


def runner_pid(database: PostgresDatabase, battle_id: str) -> int:
    """The pid of the process holding the battle's lease ("host:pid:token")."""
    owner = battle_row(database, battle_id)["lease_owner"]
    assert owner, "nobody holds the battle's lease"
    return int(owner.rsplit(":", 2)[1])


def assert_complete(log: Logged, *, turns: int = 3) -> None:
    """A whole battle: seq 1..N, started once, every turn completed once and in order with the text of
    its last attempt's tokens, and the verdict then battle.completed at the end."""
    assert [seq for seq, _, _ in log] == list(range(1, len(log) + 1))
    types = [type_ for _, type_, _ in log]
    assert types.count("battle.started") == 1 and types[0] == "battle.started"
    assert types[-2:] == ["verdict", "battle.completed"]
    texts: dict[int, str] = defaultdict(str)
    completed = []
    for _, type_, data in log:
        if type_ == "turn.started":
            texts[data["turn"]] = ""
        elif type_ == "token":
            texts[data["turn"]] += data["text"]
        elif type_ == "turn.completed":
            assert data["content"] == texts[data["turn"]]
            completed.append(data["turn"])
    assert completed == list(range(1, turns + 1))


def turns_started(log: Logged) -> list[int]:
    return [data["turn"] for _, type_, data in log if type_ == "turn.started"]


def interruptions(log: Logged) -> list[tuple[int, dict[str, Any]]]:
    """(index in the log, data) of every turn.interrupted."""
    return [(i, data) for i, (_, type_, data) in enumerate(log) if type_ == "turn.interrupted"]


def assert_restarted_after_cut(log: Logged, *, turn: int, reason: str) -> None:
    """Exactly one turn.interrupted: it closes `turn` in the middle of its tokens, and `turn` starts
    again right after it."""
    [(at, data)] = interruptions(log)
    assert data == {"turn": turn, "reason": reason}
    assert log[at - 1][1] == "token" and log[at - 1][2]["turn"] == turn  # cut off mid-turn
    assert log[at + 1][1:] == ("turn.started", {"turn": turn, "round": 1, "role": "defender"})
    assert turns_started(log) == [1, turn, turn, 3]  # turn 1 was not run again


class Runbattle:
    """`manage.py runbattle --rounds 1` in the background, its stdout read line by line as it comes."""

    def __init__(self, env: dict[str, str], document: Path, *, json_output: bool, stderr: Path) -> None:
        # Its own buffering, as in a terminal session piped elsewhere: what it prints must be flushed
        # by the command itself.
        env = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
        command = [sys.executable, "manage.py", "runbattle", str(document), "--rounds", "1"]
        self.stderr = stderr
        with stderr.open("w") as err:
            self.process = subprocess.Popen(
                command + (["--json"] if json_output else []),
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def next_line(self) -> str:
        try:
            line = self._lines.get(timeout=WAIT_SECONDS)
        except queue.Empty:
            raise AssertionError(f"runbattle printed no line in {WAIT_SECONDS} s") from None
        assert line is not None, f"runbattle ended (exit status {self.process.wait()})"
        return line

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def document(tmp_path: Path) -> Path:
    path = tmp_path / "essay.md"
    path.write_text(ESSAY)
    return path


@pytest.fixture
def runbattle(tmp_path: Path, document: Path) -> Iterator[Callable[..., Runbattle]]:
    """Start `runbattle` on `document`; every one is killed (if still running) at the end, and what
    it wrote on stderr is printed."""
    commands: list[Runbattle] = []

    def run(env: dict[str, str], *, json_output: bool) -> Runbattle:
        stderr = tmp_path / f"runbattle-{len(commands)}.stderr"
        commands.append(Runbattle(env, document, json_output=json_output, stderr=stderr))
        return commands[-1]

    try:
        yield run
    finally:
        for command in commands:
            command.stop()
            print(f"--- runbattle (pid {command.process.pid}), stderr ---")
            print(command.stderr.read_text(errors="replace"))


def test_spectators_on_two_servers_receive_exactly_the_stored_log(
    servers: tuple[LiveServer, LiveServer], database: PostgresDatabase
) -> None:
    first, second = servers
    battle_id = first.create_battle(ESSAY, rounds=1)

    starter = Spectator(battle_id, [first.url]).start()
    starter.wait_for(tokens_of(1, 1), "turn 1 under way")
    assert first.process is not None and runner_pid(database, battle_id) == first.process.pid
    # Three spectators on each server, joining at different points of the battle.
    during_turn_1 = [Spectator(battle_id, [url]).start() for url in (second.url, second.url, first.url)]
    for spectator in during_turn_1:
        spectator.wait_for(turn_started(2), "turn 2 start")
    during_turn_2 = [Spectator(battle_id, [url]).start() for url in (second.url, first.url)]
    spectators = [starter, *during_turn_1, *during_turn_2]
    for spectator in spectators:
        spectator.join()

    stored = database.stored_log(battle_id)
    assert_complete(stored)
    assert not interruptions(stored)
    for spectator in spectators:
        [connection] = spectator.connections  # one stream each, from start to end
        assert (connection.status, connection.ending) == (200, "complete")
        assert spectator.logged() == stored
        # `spectators` is sent only to a live stream: each of them watched the battle while it ran.
        assert any(m.event == "spectators" for m in spectator.messages)
    assert battle_row(database, battle_id)["status"] == "finished"


def test_a_battle_opened_by_twenty_spectators_at_once_on_two_servers_runs_once(
    servers: tuple[LiveServer, LiveServer], database: PostgresDatabase
) -> None:
    first, second = servers
    battle_id = first.create_battle(ESSAY, rounds=1)
    barrier = threading.Barrier(20)

    spectators = [
        Spectator(battle_id, [url], barrier=barrier).start()
        for _ in range(10)
        for url in (first.url, second.url)
    ]
    for spectator in spectators:
        spectator.join()

    stored = database.stored_log(battle_id)
    assert_complete(stored)
    assert turns_started(stored) == [1, 2, 3]  # each turn run once: one runner, never cut off
    assert not interruptions(stored)
    assert battle_row(database, battle_id) == {"status": "finished", "lease_owner": "", "takeovers": 0}
    for spectator in spectators:
        [connection] = spectator.connections
        assert (connection.status, connection.ending) == (200, "complete")
        assert spectator.logged() == stored


def test_a_battle_run_from_the_terminal_is_watched_live_through_another_server(
    servers: tuple[LiveServer, LiveServer],
    runbattle: Callable[..., Runbattle],
    database: PostgresDatabase,
    redis_url: str,
) -> None:
    server, _ = servers
    env = {**server.env, "ARENA_BASE_URL": server.url}
    command = runbattle(env, json_output=False)

    link = next(line for line in iter(command.next_line, None) if line.startswith("Watch it live: "))
    found = re.fullmatch(rf"Watch it live: {re.escape(server.url)}/battles/([0-9a-f-]{{36}})/\n", link)
    assert found, link
    battle_id = found.group(1)
    spectator = Spectator(battle_id, [server.url]).start().join()

    assert command.process.wait(timeout=WAIT_SECONDS) == 0
    stored = database.stored_log(battle_id)
    assert_complete(stored)
    [connection] = spectator.connections
    assert (connection.status, connection.ending) == (200, "complete")
    assert spectator.logged() == stored
    assert any(m.event == "spectators" for m in spectator.messages)  # a live stream, not a replay
    # The web process heard it through Redis: runbattle published every event of its battle there.
    with redis.Redis.from_url(redis_url) as client:
        entries = client.xrange(stream_key(battle_id))
    published = [json.loads(fields[b"event"]) for _, fields in entries]
    assert [(seq, type_, data) for seq, type_, data, _ in published] == stored


def test_the_sweep_continues_a_killed_terminal_battle_that_nobody_watches(
    servers: tuple[LiveServer, LiveServer],
    runbattle: Callable[..., Runbattle],
    database: PostgresDatabase,
) -> None:
    # Both servers have served requests, so both sweep for abandoned battles.
    command = runbattle(servers[0].env, json_output=True)
    printed = [json.loads(command.next_line())]
    battle_id = printed[0]["data"]["battle_id"]
    deadline = time.monotonic() + WAIT_SECONDS
    while sum(e["event"] == "token" and e["data"]["turn"] == 2 for e in printed) < 3:
        assert time.monotonic() < deadline, "runbattle did not reach turn 2 in time"
        printed.append(json.loads(command.next_line()))

    command.process.kill()
    assert command.process.wait() == -9
    wait_for(
        lambda: database.battle_status(battle_id) != "running", timeout=WAIT_SECONDS, what="the battle to end"
    )

    stored = database.stored_log(battle_id)
    assert_complete(stored)
    assert_restarted_after_cut(stored, turn=2, reason=TAKEOVER_REASON)
    assert battle_row(database, battle_id) == {"status": "finished", "lease_owner": "", "takeovers": 1}
    # A web process did it, though nobody watched the battle there.
    assert any(f"Taking battle {battle_id} over" in server.log.read_text() for server in servers)


def watched_mid_turn_two(
    runner: LiveServer, other: LiveServer, database: PostgresDatabase
) -> tuple[str, list[Spectator], list[Spectator]]:
    """A battle run by `runner`, three spectators on each server, all watching turn 2 under way.

    The runner's spectators fall back to `other`, as they would behind a proxy.
    """
    battle_id = runner.create_battle(ESSAY, rounds=1)
    starter = Spectator(battle_id, [runner.url, other.url]).start()
    starter.wait_for(started, "the battle start")
    assert runner.process is not None and runner_pid(database, battle_id) == runner.process.pid
    on_runner = [starter, *(Spectator(battle_id, [runner.url, other.url]).start() for _ in range(2))]
    on_other = [Spectator(battle_id, [other.url]).start() for _ in range(3)]
    for spectator in on_runner + on_other:
        spectator.wait_for(turn_started(2), "turn 2 start")  # everyone is watching
    starter.wait_for(tokens_of(2, 3), "turn 2 under way")  # about 100 words: well short of its end
    return battle_id, on_runner, on_other


def test_when_the_runner_is_killed_the_other_server_takes_over_and_nothing_is_lost(
    servers: tuple[LiveServer, LiveServer], database: PostgresDatabase
) -> None:
    doomed, survivor = servers
    battle_id, on_doomed, on_survivor = watched_mid_turn_two(doomed, survivor, database)

    doomed.kill()
    for spectator in on_doomed + on_survivor:
        spectator.join()

    stored = database.stored_log(battle_id)
    assert_complete(stored)
    assert_restarted_after_cut(stored, turn=2, reason=TAKEOVER_REASON)
    assert battle_row(database, battle_id) == {"status": "finished", "lease_owner": "", "takeovers": 1}
    for spectator in on_doomed:
        assert len(spectator.connections) >= 2
        assert spectator.connections[0].server == doomed.url
        assert {c.server for c in spectator.connections[1:]} == {survivor.url}
        assert spectator.logged() == stored  # resumed with Last-Event-ID: nothing lost or repeated
    for spectator in on_survivor:
        [connection] = spectator.connections  # it just kept watching
        assert (connection.status, connection.ending) == (200, "complete")
        assert spectator.logged() == stored

    transcript = httpx.get(f"{survivor.url}/battles/{battle_id}/transcript.json").json()
    completed = {data["turn"]: data["content"] for _, type_, data in stored if type_ == "turn.completed"}
    assert [(t["turn"], t["status"], t["content"]) for t in transcript["turns"]] == [
        (turn, "completed", completed[turn]) for turn in (1, 2, 3)
    ]


def test_a_stopped_runner_hands_its_battle_over_and_ends_its_streams_cleanly(
    servers: tuple[LiveServer, LiveServer], database: PostgresDatabase
) -> None:
    stopping, staying = servers
    battle_id, on_stopping, on_staying = watched_mid_turn_two(stopping, staying, database)

    assert stopping.terminate(timeout=SHUTDOWN_SECONDS) == 0  # SIGTERM; exits in time, status 0
    for spectator in on_stopping + on_staying:
        spectator.join()

    stored = database.stored_log(battle_id)
    assert_complete(stored)
    assert_restarted_after_cut(stored, turn=2, reason=HANDOVER_REASON)
    # Handed over on purpose: not counted as a takeover.
    assert battle_row(database, battle_id) == {"status": "finished", "lease_owner": "", "takeovers": 0}
    for spectator in on_stopping:
        cut, *rest = spectator.connections
        assert (cut.server, cut.status, cut.ending) == (stopping.url, 200, "complete")  # not a reset
        last = logged(cut.messages)[-1]
        assert last[1:] == ("turn.interrupted", {"turn": 2, "reason": HANDOVER_REASON})
        assert rest and {c.server for c in rest} == {staying.url}
        assert spectator.logged() == stored
    for spectator in on_staying:
        [connection] = spectator.connections
        assert (connection.status, connection.ending) == (200, "complete")
        assert spectator.logged() == stored
