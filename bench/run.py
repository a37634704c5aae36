"""`make bench`: the arena and the reference peer, side by side, at more and more spectators.

For each N in the ladder and each target (the arena under daphne, the sse-starlette peer on
uvicorn) it starts a fresh server pinned to one core, a fresh battle for the arena, and the load
process (`bench.load`) pinned to the other core; it stops a target's ladder at the first step that
breaks (p99 over a second, or any error, gap or undelivered token). Results go to
`docs/benchmarks.json`, the report to `docs/benchmarks.md` (see `bench.report`) and the plot to
`docs/benchmarks-p99.png` (when matplotlib is installed: `bench/requirements.txt`).

    python -m bench.run                          # the full ladder, about ten minutes
    python -m bench.run --steps 100,1000 --window 5 --out /tmp/bench
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from bench import clock, load, report

ROOT = Path(__file__).resolve().parent.parent
STEPS = (100, 500, 1000, 2000, 5000)
TARGETS = ("arena", "peer")
# A step breaks beyond this p99, and at any error, gap or undelivered token; the ladder stops there.
BREAK_P99_MS = 1000.0
# Before each step, up to QUIET_WAIT_SECONDS for the machine's other work to fall to QUIET_CPU_PERCENT
# of a core; the step runs anyway after that, and the report shows what else was running.
QUIET_CPU_PERCENT = 15.0
QUIET_WAIT_SECONDS = 120.0
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
# The load process connects, waits, measures and parses: allow for thousands of slow connections.
LOAD_TIMEOUT_SECONDS = 600.0
DOCUMENT = b"# The benchmark\n\nOne battle, many spectators: every token reaches every one of them.\n"
PACKAGES = ("Django", "daphne", "Twisted", "litellm", "uvicorn", "sse-starlette", "starlette", "h11")


@dataclass
class Cores:
    """Where the server and the load run: one core each when taskset exists and there are two."""

    server: str | None
    load: str | None

    @classmethod
    def detect(cls) -> Cores:
        if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
            first, second = sorted(os.sched_getaffinity(0))[:2]
            return cls(str(first), str(second))
        return cls(None, None)

    def pin(self, core: str | None, command: Sequence[str]) -> list[str]:
        return ["taskset", "-c", core, *command] if core is not None else list(command)


@dataclass
class Bench:
    folder: Path
    cores: Cores
    warmup: float
    window: float
    grace: float
    profile: Path | None = None  # a folder for py-spy profiles of each step's window
    template: Path | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    def run(self, steps: Sequence[int], targets: Sequence[str], log: Callable[[str], None]) -> None:
        broken: set[str] = set()
        for spectators in steps:
            for target in targets:
                if target in broken:
                    continue
                log(f"{target}: {spectators} spectators …")
                result = self.step(target, spectators)
                self.results.append(result)
                log(f"{target}: {spectators} spectators: {report.one_line(result)}")
                if result["broken"]:
                    broken.add(target)

    def step(self, target: str, spectators: int) -> dict[str, Any]:
        background = wait_for_quiet()
        starts = {"arena": self._arena, "peer": self._peer}
        with starts[target]() as (pid, port, path):
            profile = self.profile / f"{target}-{spectators}.txt" if self.profile else None
            measured = self._load(pid=pid, port=port, path=path, spectators=spectators, profile=profile)
        measured["target"] = target
        measured["background_cpu_percent_before"] = background
        measured["broken"] = breaks(measured)
        return measured

    @contextlib.contextmanager
    def _arena(self) -> Iterator[tuple[int, int, str]]:
        if self.template is None:
            self.template = self.folder / "template.sqlite3"
            env = {**arena_env(self.folder), "DATABASE_URL": f"sqlite:///{self.template}"}
            subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        database = self.folder / "arena.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        with closing(sqlite3.connect(self.template)) as source, closing(sqlite3.connect(database)) as copy:
            source.backup(copy)
        port = free_port()
        env = {**arena_env(self.folder), "DATABASE_URL": f"sqlite:///{database}"}
        command = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "arena.asgi:application",
        ]
        with self._server(command, env, port, "arena") as pid:
            yield pid, port, f"/battles/{create_battle(port)}/events"

    @contextlib.contextmanager
    def _peer(self) -> Iterator[tuple[int, int, str]]:
        port = free_port()
        command = [sys.executable, "-m", "bench.peer", "--port", str(port)]
        with self._server(command, dict(os.environ), port, "peer") as pid:
            yield pid, port, "/events"

    @contextlib.contextmanager
    def _server(self, command: list[str], env: dict[str, str], port: int, name: str) -> Iterator[int]:
        log_path = self.folder / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                self.cores.pin(self.cores.server, command),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=raise_open_files_limit,
            )
        try:
            wait_listening(process, port, log_path)
            yield process.pid
        finally:
            stop(process)

    def _load(
        self, *, pid: int, port: int, path: str, spectators: int, profile: Path | None
    ) -> dict[str, Any]:
        command = [
            sys.executable,
            "-m",
            "bench.load",
            "--port",
            str(port),
            "--path",
            path,
            "--spectators",
            str(spectators),
            "--server-pid",
            str(pid),
            "--warmup",
            str(self.warmup),
            "--window",
            str(self.window),
            "--grace",
            str(self.grace),
            *(["--profile", str(profile)] if profile else []),
            *(["--server-core", self.cores.server] if self.cores.server is not None else []),
        ]
        done = subprocess.run(
            self.cores.pin(self.cores.load, command),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=LOAD_TIMEOUT_SECONDS,
        )
        if done.returncode != 0:
            raise RuntimeError(f"The load process failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        return json.loads(done.stdout)


def wait_for_quiet() -> float:
    """Wait (a while) for the machine to be quiet: other work skews every number. The busy CPU of the
    last second, in % of one core, is returned and reported with the step."""
    deadline = time.monotonic() + QUIET_WAIT_SECONDS
    while True:
        before = sum(load.busy_seconds().values())
        time.sleep(1.0)  # the sampling period, not a synchronisation
        busy = round(100 * (sum(load.busy_seconds().values()) - before), 1)
        if busy <= QUIET_CPU_PERCENT or time.monotonic() > deadline:
            return busy


def breaks(result: dict[str, Any]) -> bool:
    p99 = result["latency_ms_p99"]
    return (
        p99 is None
        or p99 > BREAK_P99_MS
        or bool(result["connect_errors"] or result["dropped"] or result["gaps"] or result["undelivered"])
    )


def arena_env(folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
        "MEDIA_ROOT": str(folder / "media"),
        "DEBUG": "false",
    }


def raise_open_files_limit() -> None:
    """In the child before exec: as many descriptors as the hard limit allows."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"The server exited: {log_path.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)  # readiness poll, bounded by the deadline
    stop(process)
    raise RuntimeError(f"The server did not start: {log_path.read_text()[-2000:]}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def create_battle(port: int) -> str:
    """A pending battle, made through the real upload form (CSRF and all); its id."""
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if not token:
            raise RuntimeError(f"No CSRF token on the upload form ({page.status_code})")
        response = client.post(
            "/battles/",
            data={"csrfmiddlewaretoken": token.group(1), "rounds": "10"},
            files={"file": ("bench.md", DOCUMENT, "text/markdown")},
            headers={"Referer": base + "/"},
        )
    if response.status_code != 303:
        raise RuntimeError(f"The upload was refused ({response.status_code})")
    return response.headers["Location"].rstrip("/").split("/")[-1]


def machine(cores: Cores) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "pinned": (
            {"server": f"cpu {cores.server}", "load": f"cpu {cores.load}"}
            if cores.server is not None
            else None
        ),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The arena and the sse-starlette peer, side by side.")
    parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="spectator counts, in order")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after the last connection")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--grace", type=float, default=2.0, help="seconds a window's tokens may still arrive")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--profile", type=Path, help="a folder for py-spy profiles of every window")
    args = parser.parse_args(argv)
    steps = [int(n) for n in args.steps.split(",")]
    targets = [t for t in args.targets.split(",") if t]
    if unknown := set(targets) - set(TARGETS):
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    cores = Cores.detect()
    if cores.load is not None:
        os.sched_setaffinity(0, {int(cores.load)})  # this process too stays off the server's core
    command = (
        "make bench"
        if os.environ.get("MAKELEVEL")
        else shlex.join(["python", "-m", "bench.run", *sys.argv[1:]])
    )
    with tempfile.TemporaryDirectory(prefix="arena-bench-") as folder:
        bench = Bench(
            Path(folder),
            cores,
            warmup=args.warmup,
            window=args.window,
            grace=args.grace,
            profile=args.profile,
        )
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        bench.run(steps, targets, log=lambda line: print(line, flush=True))
    document = {
        "command": command,
        "machine": machine(cores),
        "settings": {
            "tokens_per_second": clock.TOKENS_PER_SECOND,
            "warmup_seconds": args.warmup,
            "window_seconds": args.window,
            "grace_seconds": args.grace,
            "break_p99_ms": BREAK_P99_MS,
        },
        "results": bench.results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(document, indent=2) + "\n")
    report.write(document, args.out)
    print(f"Results in {args.out / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
