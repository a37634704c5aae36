"""`manage.py runbattle`: end to end as a subprocess the way a user runs it (the stored log in JSON
mode, human mode, colour on a terminal, exit statuses), and in-process through call_command for what
needs no process of its own (bad input, choosing models, a failure in human mode), since every new
process spends seconds importing litellm."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import call_command
from pytest_django.fixtures import Settings

from battles.models import Battle, Document
from tests.support.documents import ESSAY
from tests.support.live import ROOT, LiveDatabase, base_env
from tests.support.openai_server import OpenAIServer, Script

ROLES = ("aggressor", "defender", "moderator")
# The longest a runbattle process may take to end once it was started (a deadline, not a measurement;
# the five end-to-end runs share the machine's two cores).
PROCESS_TIMEOUT_SECONDS = 120


@pytest.fixture
def essay(tmp_path: Path) -> Path:
    path = tmp_path / "essay.md"
    path.write_text(ESSAY)
    return path


class Background:
    """A runbattle process started alongside the others, with a database of its own; what it prints
    goes to files (or through a terminal), read once it has ended."""

    def __init__(
        self,
        folder: Path,
        env: dict[str, str],
        args: list[str | Path],
        *,
        database: LiveDatabase,
        terminal: bool,
    ) -> None:
        folder.mkdir()
        self.database = database
        self.stdout, self.stderr = folder / "stdout", folder / "stderr"
        self._copier: threading.Thread | None = None
        command = [sys.executable, "manage.py", "runbattle", *map(str, args)]
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            if not terminal:
                self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err)
                return
            leader, follower = pty.openpty()
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=follower, stderr=err)
            os.close(follower)
            self._copier = threading.Thread(target=self._copy, args=(leader,), daemon=True)
            self._copier.start()

    def _copy(self, leader: int) -> None:
        """Drain the terminal into the stdout file until the child closes it."""
        with self.stdout.open("ab") as out:
            try:
                while chunk := os.read(leader, 65536):
                    out.write(chunk)
            except OSError:  # the child closed the terminal
                pass
            finally:
                os.close(leader)

    def result(self) -> subprocess.CompletedProcess[str]:
        """Wait for it to end (failing past PROCESS_TIMEOUT_SECONDS); its exit status and output."""
        returncode = self.process.wait(timeout=PROCESS_TIMEOUT_SECONDS)
        if self._copier is not None:
            self._copier.join(timeout=PROCESS_TIMEOUT_SECONDS)
            assert not self._copier.is_alive(), "the terminal stayed open after the process ended"
        return subprocess.CompletedProcess(
            self.process.args,
            returncode,
            self.stdout.read_bytes().decode(errors="replace"),
            self.stderr.read_text(),
        )

    def raw_output(self) -> bytes:
        self.result()
        return self.stdout.read_bytes()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, live_database: LiveDatabase, provider: OpenAIServer
) -> Iterator[dict[str, Background]]:
    """The end-to-end runs of this module, all started at once: each process spends seconds importing
    before it does anything, and side by side those seconds overlap. Each has a copy of the module's
    migrated database, so that none waits on another's writes."""
    folder = tmp_path_factory.mktemp("runbattle")
    essay = folder / "essay.md"
    essay.write_text(ESSAY)
    provider.queue(Script(status=500))  # for the failing provider's run, the only one that calls it
    failing = {"ARENA_API_BASE": provider.api_base, "ARENA_PROVIDER_RETRIES": "0"}
    plans: dict[str, tuple[dict[str, str], list[str | Path], bool]] = {
        "json": ({}, [essay, "--rounds", "2", "--json"], False),
        "human": ({}, [essay, "--rounds", "1"], False),
        "terminal": ({}, [essay, "--rounds", "1"], True),
        "failing provider": (failing, [essay, "--json", "--model", "openai/fake"], False),
        "missing key": ({}, [essay, "--model", "openai/gpt-4o-mini", "--json"], False),
    }
    started: dict[str, Background] = {}
    try:
        for name, (extra, args, terminal) in plans.items():
            database = live_database.copy()
            env = {
                **base_env(),
                "DATABASE_URL": database.url,
                "MEDIA_ROOT": str(folder / f"{name}-media"),
                "ARENA_BASE_URL": "http://arena.test:8000/",
                **extra,
            }
            env.pop("NO_COLOR", None)  # the terminal's run shows colour whatever this shell asks for
            if name == "missing key":
                env.pop("OPENAI_API_KEY", None)
            started[name] = Background(folder / name, env, args, database=database, terminal=terminal)
        yield started
    finally:
        for run in started.values():
            run.stop()
            run.database.drop()


@dataclass
class Ran:
    """What an in-process run of the command printed, and its exit status."""

    returncode: int
    stdout: str
    stderr: str


class Terminal(io.StringIO):
    """Captured output that says it is a terminal, as a user's is."""

    def isatty(self) -> bool:
        return True


def runbattle_here(*args: str | Path, stdout: io.StringIO | None = None) -> Ran:
    """The command in this process (`call_command`), its output captured (in `stdout` when given),
    its sys.exit caught."""
    out, err = stdout or io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exit_:
        call_command("runbattle", *map(str, args), stdout=out, stderr=err)
    code = exit_.value.code
    return Ran(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())


@pytest.fixture
def fake_provider(openai_server: OpenAIServer, settings: Settings) -> Iterator[OpenAIServer]:
    """Every role's calls to the local fake server, as ARENA_API_BASE sets it for a process."""
    settings.ARENA_ROLE_API_BASES = dict.fromkeys(ROLES, openai_server.api_base)
    yield openai_server


@pytest.mark.e2e
def test_json_mode_prints_exactly_the_stored_log(runs: dict[str, Background]) -> None:
    result = runs["json"].result()
    live_database = runs["json"].database

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(set(line) == {"id", "event", "data"} for line in lines)
    assert [line["id"] for line in lines] == list(range(1, len(lines) + 1))
    assert lines[0]["event"] == "battle.started" and lines[-1]["event"] == "battle.completed"
    battle_id = lines[0]["data"]["battle_id"]
    # stdout stays pure JSON lines; the arena link goes to stderr.
    assert f"Watch it live: http://arena.test:8000/battles/{battle_id}/" in result.stderr
    stored = live_database.stored_log(battle_id)
    assert [(line["id"], line["event"], line["data"]) for line in lines] == stored
    assert live_database.fetch(
        "SELECT status, rounds FROM battles_battle WHERE id = %s", [uuid.UUID(battle_id)]
    ) == [("finished", 2)]


@pytest.mark.e2e
def test_human_mode_streams_turns_and_ends_with_verdict_totals_and_id(runs: dict[str, Background]) -> None:
    result = runs["human"].result()
    live_database = runs["human"].database

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b[" not in out  # no colour when not on a terminal
    headers = [line for line in out.splitlines() if line.startswith("── Round")]
    assert [h.split(" ─")[0] for h in headers] == [
        "── Round 1 · Aggressor",
        "── Round 1 · Defender",
        "── Round 1 · Moderator",
    ]
    assert '"Code without tests is never safe to change, and everyone knows it."' in out
    assert "\nVerdict: " in out
    assert "Tokens: " in out and "cost: $0.000000" in out
    battle_id = out.strip().splitlines()[-1].split()[2]
    assert live_database.battle_status(battle_id) == "finished"
    assert out.splitlines()[1] == f"Watch it live: http://arena.test:8000/battles/{battle_id}/"


@pytest.mark.e2e
def test_colour_on_a_terminal(runs: dict[str, Background]) -> None:
    result = runs["terminal"].result()
    assert result.returncode == 0, result.stderr
    output = runs["terminal"].raw_output()
    assert b"\x1b[31m\xe2\x94\x80\xe2\x94\x80 Round 1 \xc2\xb7 Aggressor" in output


@pytest.mark.parametrize(
    "options, no_color, terminal, coloured",
    [
        ([], None, True, True),  # on a terminal by default: what the next two turn off
        (["--no-color"], None, True, False),
        ([], "1", True, False),
        (["--force-color"], None, False, True),
        (["--force-color"], "1", False, True),  # --force-color wins over NO_COLOR
    ],
    ids=["terminal", "--no-color", "NO_COLOR", "--force-color", "--force-color and NO_COLOR"],
)
@pytest.mark.django_db(transaction=True)
def test_colour_follows_no_color_force_color_and_the_no_color_variable(
    essay: Path,
    monkeypatch: pytest.MonkeyPatch,
    options: list[str],
    no_color: str | None,
    terminal: bool,
    coloured: bool,
) -> None:
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)

    result = runbattle_here(essay, "--rounds", "1", *options, stdout=Terminal() if terminal else None)

    assert result.returncode == 0, result.stderr
    assert "── Round 1 · Aggressor" in result.stdout and "\nVerdict: " in result.stdout
    if coloured:
        assert "\x1b[31m── Round 1 · Aggressor" in result.stdout
        assert "\x1b[0m" in result.stdout
    else:
        assert "\x1b" not in result.stdout


@pytest.mark.django_db(transaction=True)
def test_role_models_can_be_chosen(fake_provider: OpenAIServer, essay: Path) -> None:
    fake_provider.queue(
        Script(text="I attack."), Script(text="I defend."), Script(text="SCORES: aggressor=5 defender=5")
    )
    result = runbattle_here(
        essay, "--rounds", "1", "--json", "--model", "openai/fake", "--defender-model", "openai/other"
    )
    assert result.returncode == 0, result.stderr
    started = json.loads(result.stdout.splitlines()[0])["data"]
    assert started["agents"] == [
        {"role": "aggressor", "model": "openai/fake"},
        {"role": "defender", "model": "openai/other"},
        {"role": "moderator", "model": "openai/fake"},
    ]
    assert [r["model"] for r in fake_provider.requests] == ["fake", "other", "fake", "fake"]  # + the verdict


@pytest.mark.e2e
def test_a_failing_provider_exits_1_with_battle_failed(runs: dict[str, Background]) -> None:
    result = runs["failing provider"].result()
    assert result.returncode == 1
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["event"] == "battle.failed"
    assert last["data"] == {"error": "The model provider had an internal error.", "retryable": True}
    assert "sk-SECRET-fake" not in result.stdout + result.stderr


@pytest.mark.django_db(transaction=True)
def test_jury_picks_the_jurors(essay: Path, settings: Settings) -> None:
    settings.ARENA_SPARRING_DELAY_MS = 0
    result = runbattle_here(essay, "--rounds", "1", "--jury", "arena/rules, arena/sparring", "--json")
    assert result.returncode == 0
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    verdict = next(e["data"] for e in printed if e["event"] == "verdict")
    assert [j["model"] for j in verdict["jury"]] == ["arena/rules", "arena/sparring"]
    assert verdict["source"] == "jury"
    assert Battle.objects.get(pk=printed[0]["data"]["battle_id"]).jury == ["arena/rules", "arena/sparring"]
    # An empty --jury is no jury even when ARENA_JURY has one.
    settings.ARENA_JURY = ["arena/rules"]
    result = runbattle_here(essay, "--rounds", "1", "--jury", "", "--json")
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    verdict = next(e["data"] for e in printed if e["event"] == "verdict")
    assert "jury" not in verdict


@pytest.mark.django_db(transaction=True)
def test_a_failing_provider_is_reported_in_human_mode(fake_provider: OpenAIServer, essay: Path) -> None:
    fake_provider.queue(Script(status=401))
    result = runbattle_here(essay, "--model", "openai/fake")
    assert result.returncode == 1
    assert "Battle failed: The model provider rejected the credentials (check the API key)." in result.stdout
    assert "cost: unknown" in result.stdout
    assert result.stdout.rstrip().endswith("(failed)")
    assert fake_provider.requests[0]["model"] == "fake"  # a keyless local server is still called


@pytest.mark.e2e
def test_a_missing_api_key_is_explained(runs: dict[str, Background]) -> None:
    result = runs["missing key"].result()
    assert result.returncode == 1
    assert json.loads(result.stdout.splitlines()[-1])["data"] == {
        "error": "No API key is configured for this model's provider (set its key, e.g. OPENAI_API_KEY).",
        "retryable": False,
    }


@pytest.mark.parametrize(
    "make_input, extra, reason",
    [
        (lambda d: d / "missing.txt", [], "no such file"),
        (lambda d: d, [], "is a directory"),
        (lambda d: _write(d / "empty.txt", b""), [], "empty"),
        (lambda d: _write(d / "image.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4), [], "PNG"),
        (
            lambda d: _write(d / "ok.txt", ESSAY.encode()),
            ["--rounds", "11"],
            "Rounds must be between 1 and 10.",
        ),
    ],
)
@pytest.mark.django_db
def test_bad_input_exits_2_with_one_line_on_stderr_and_stores_nothing(
    tmp_path: Path,
    make_input,
    extra: list[str],
    reason: str,
) -> None:
    before = Battle.objects.count(), Document.objects.count()
    result = runbattle_here(make_input(tmp_path), *extra)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("runbattle: ")
    assert reason.lower() in result.stderr.lower()
    assert (Battle.objects.count(), Document.objects.count()) == before


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
