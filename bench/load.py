"""The load process: N spectators of one SSE stream, measured from a separate process.

It must not be the bottleneck, so while the stream is live a spectator does nothing but keep what
arrives with the moment it arrived (one `asyncio.Protocol` per connection, no HTTP client, no
parsing); de-chunking, SSE parsing and statistics happen once the window has closed. Its own CPU and
loop lag are reported, so a saturated client shows.

The timeline of a step:
1. one spectator connects and waits for its first token (the arena's battle is then running);
   after a second the server's RSS is taken as the base;
2. the other N - 1 connect, a bounded number at a time;
3. a warm-up, then the window: server and client CPU are read at both ends, the server's RSS at the
   end; only tokens *sent* inside the window are counted;
4. a grace period in which tokens of the window may still arrive; a token not in by then was not
   delivered in time.

    python -m bench.load --port 8000 --path /battles/<id>/events --spectators 1000 --server-pid 123
prints one JSON object: see `measure`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

# An event with an id, and the clock stamp of a token's text when it is one. Both the arena
# (`\n`) and sse-starlette (`\r\n`) put `id:` before `event:` and `data:`.
EVENT = re.compile(rb'(?m)^id: (\d+)\r?\n(?:event: [^\r\n]*\r?\n)?data: (?:[^\r\n]*?"text":"(\d+):(\d+) )?')
TOKEN_MARK = b'"text":"'
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Connections opened at once: above daphne's listen backlog (Twisted's default is 50), SYNs are
# dropped and retried a second later, which only slows the ramp down.
CONNECT_CONCURRENCY = 32
CONNECT_TIMEOUT_SECONDS = 60.0
# All N connections must be open by then; the step fails with the missing ones as errors otherwise.
RAMP_TIMEOUT_SECONDS = 240.0
# How long the first spectator waits for its first token (the battle's start).
FIRST_TOKEN_TIMEOUT_SECONDS = 30.0
BASE_SETTLE_SECONDS = 1.0
LAG_PROBE_SECONDS = 0.01


class Spectator(asyncio.Protocol):
    """One SSE connection that only records (arrival ns, bytes) while the step runs."""

    def __init__(self, request: bytes, recording: list[bool]) -> None:
        self.request = request
        self.recording = recording  # shared flag: [False] once the grace period is over
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()  # response headers in
        self.first_token: asyncio.Future[None] = loop.create_future()
        self.chunks: list[tuple[int, bytes]] = []
        self.transport: asyncio.Transport | None = None
        self.lost_at: int | None = None
        self.error: str | None = None
        self._head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if self.recording[0]:
            self.chunks.append((now, data))
        if not self.ready.done():
            self._head += data
            if b"\r\n\r\n" in self._head:
                status = self._head.split(b" ", 2)[1]
                if status == b"200":
                    self.ready.set_result(None)
                else:
                    self.error = f"HTTP {status.decode(errors='replace')}"
                    self.ready.set_exception(ConnectionError(self.error))
        if not self.first_token.done() and TOKEN_MARK in data:
            self.first_token.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_at = time.monotonic_ns()
        if not self.ready.done():
            self.ready.set_exception(exc or ConnectionError("closed before the response"))
        if not self.first_token.done():
            self.first_token.set_exception(exc or ConnectionError("closed before the first token"))
            self.first_token.exception()  # retrieved: only the first spectator ever awaits it


@dataclass
class Step:
    host: str
    port: int
    path: str
    spectators: int
    server_pid: int | None
    warmup: float = 3.0
    window: float = 10.0
    grace: float = 2.0
    profile: str | None = None  # py-spy's collapsed stacks of the server during the window go here
    server_core: str | None = None  # the core the server is pinned to, if it is


def raise_open_files_limit() -> int:
    """Thousands of sockets need more than the usual 1024 descriptors; the hard limit is the ceiling."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def cpu_seconds(pid: int | str) -> tuple[float, float]:
    """User and system CPU of a whole process (every thread), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def busy_seconds() -> dict[str, float]:
    """Busy (non-idle) CPU time of each core, from /proc/stat: what else ran next to the benchmark."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *ticks = line.split()
                values = [int(t) for t in ticks]
                busy[name[3:]] = (sum(values) - values[3] - values[4]) / CLK_TCK  # minus idle, iowait
    return busy


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, amount = line.split(":")
                values[name] = int(amount.split()[0])
    return values


async def measure(step: Step) -> dict[str, Any]:
    """Run one step and return its measurements (see `summarise` for the fields)."""
    loop = asyncio.get_running_loop()
    request = (
        f"GET {step.path} HTTP/1.1\r\nHost: {step.host}:{step.port}\r\n"
        "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()
    recording = [True]
    spectators: list[Spectator] = []
    errors: list[str] = []
    connect_slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connect_times: list[float] = []  # seconds from connecting to the response's headers

    async def connect() -> Spectator | None:
        spectator = Spectator(request, recording)
        spectators.append(spectator)
        async with connect_slots:
            began = time.monotonic()
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    await loop.create_connection(lambda: spectator, step.host, step.port)
                    await spectator.ready
                    connect_times.append(time.monotonic() - began)
            except (OSError, TimeoutError) as exc:
                spectator.error = spectator.error or f"{type(exc).__name__}: {exc}"
                errors.append(spectator.error)
                return None
        return spectator

    lags: list[int] = []
    lag_probe = asyncio.create_task(_probe_lag(lags))
    started = time.monotonic()
    first = await connect()
    if first is None:
        raise SystemExit(f"The first spectator could not connect: {errors[0]}")
    async with asyncio.timeout(FIRST_TOKEN_TIMEOUT_SECONDS):
        await first.first_token
    await asyncio.sleep(BASE_SETTLE_SECONDS)
    base = memory_kb(step.server_pid) if step.server_pid else {}
    ramp = [asyncio.create_task(connect()) for _ in range(step.spectators - 1)]
    done, late = await asyncio.wait(ramp, timeout=RAMP_TIMEOUT_SECONDS)
    for task in late:  # not connected in time: errors, like refused connections
        task.cancel()
    errors += ["not connected within the ramp's deadline"] * len(late)
    connect_seconds = time.monotonic() - started
    await asyncio.sleep(step.warmup)

    lags.clear()
    profiler = _profile(step) if step.profile else None
    w0 = time.monotonic_ns()
    server_cpu0 = cpu_seconds(step.server_pid) if step.server_pid else (0.0, 0.0)
    client_cpu0 = cpu_seconds("self")
    cores0 = busy_seconds()
    await asyncio.sleep(step.window)
    w1 = time.monotonic_ns()
    server_cpu1 = cpu_seconds(step.server_pid) if step.server_pid else (0.0, 0.0)
    client_cpu1 = cpu_seconds("self")
    cores1 = busy_seconds()
    loaded = memory_kb(step.server_pid) if step.server_pid else {}
    window_lags = list(lags)
    await asyncio.sleep(step.grace)
    if profiler is not None:
        profiler.wait()  # it stops by itself once the window is over
    recording[0] = False
    cutoff = time.monotonic_ns()
    lag_probe.cancel()
    for spectator in spectators:
        if spectator.transport is not None:
            spectator.transport.abort()

    seconds = (w1 - w0) / 1e9
    result = summarise(spectators, w0=w0, w1=w1, cutoff=cutoff)
    result.update(
        spectators=step.spectators,
        connect_errors=len(errors),
        error_examples=sorted(set(errors))[:3],
        connect_seconds=round(connect_seconds, 2),
        connect_ms_p50=_ms(1e9 * _percentile(sorted(connect_times), 0.5)) if connect_times else None,
        connect_ms_p99=_ms(1e9 * _percentile(sorted(connect_times), 0.99)) if connect_times else None,
        window_seconds=round(seconds, 3),
        server_cpu_percent=_percent(sum(server_cpu1) - sum(server_cpu0), seconds)
        if step.server_pid
        else None,
        server_cpu_system_percent=_percent(server_cpu1[1] - server_cpu0[1], seconds)
        if step.server_pid
        else None,
        client_cpu_percent=_percent(sum(client_cpu1) - sum(client_cpu0), seconds),
        machine_cpu_percent=_percent(sum(cores1.values()) - sum(cores0.values()), seconds),
        server_core_busy_percent=_percent(cores1[step.server_core] - cores0[step.server_core], seconds)
        if step.server_core in cores0
        else None,
        client_loop_lag_ms_p99=_ms(_percentile(sorted(window_lags), 0.99)),
        server_rss_base_kb=base.get("VmRSS"),
        server_rss_kb=loaded.get("VmRSS"),
        server_peak_rss_kb=loaded.get("VmHWM"),
        memory_per_spectator_kb=(
            round((loaded["VmRSS"] - base["VmRSS"]) / (step.spectators - 1), 1)
            if base and step.spectators > 1
            else None
        ),
    )
    return result


def _profile(step: Step) -> subprocess.Popen[bytes]:
    """py-spy sampling the server's Python stacks while they hold the GIL (on CPU), for the window,
    without pausing the server (--nonblocking)."""
    py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"  # the venv's first
    command = [py_spy, "record", "--pid", str(step.server_pid), "--duration", str(math.ceil(step.window))]
    command += ["--rate", "250", "--nonblocking", "--gil", "--format", "raw", "--output", str(step.profile)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _probe_lag(lags: list[int]) -> None:
    """How late this process's own loop wakes up: large values mean the client is saturated."""
    period = int(LAG_PROBE_SECONDS * 1e9)
    while True:
        before = time.monotonic_ns()
        await asyncio.sleep(LAG_PROBE_SECONDS)
        lags.append(max(0, time.monotonic_ns() - before - period))


def summarise(spectators: Sequence[Spectator], *, w0: int, w1: int, cutoff: int) -> dict[str, Any]:
    """Latency, delivery, spread and gaps of the tokens sent in [w0, w1), as seen by every spectator.

    Latency is arrival - sent (both CLOCK_MONOTONIC). A token a healthy spectator has not received by
    `cutoff` counts as not delivered, and as an infinite latency in the percentiles; so do the tokens
    nobody received.
    """
    latencies: list[int] = []
    tokens: dict[int, list[int]] = {}  # sent ns -> [first arrival, last arrival, seq, late us]
    others: set[int] = set()  # the seqs of events that are not tokens
    gaps = 0
    dropped = 0  # connections that ended while they should have been live
    reads = 0
    healthy = 0
    for spectator in spectators:
        if spectator.error is not None:
            continue
        if spectator.lost_at is not None and spectator.lost_at < cutoff:
            dropped += 1
            continue
        healthy += 1
        previous: int | None = None
        for arrival, complete in _events(spectator.chunks):
            if w0 <= arrival < w1:
                reads += 1
            for seq, sent, late in EVENT.findall(complete):
                number = int(seq)
                if previous is not None and number != previous + 1:
                    gaps += 1
                previous = number
                if not sent:
                    others.add(number)
                    continue
                sent_ns = int(sent)
                if not w0 <= sent_ns < w1:
                    continue
                latencies.append(arrival - sent_ns)
                entry = tokens.get(sent_ns)
                if entry is None:
                    tokens[sent_ns] = [arrival, arrival, number, int(late)]
                elif arrival < entry[0]:
                    entry[0] = arrival
                elif arrival > entry[1]:
                    entry[1] = arrival
    seconds = (w1 - w0) / 1e9
    # Seqs are gapless: a seq between the window's first and last token that nobody received is a token
    # of the window that reached no one (an event that is not a token is known by its seq).
    seqs = [entry[2] for entry in tokens.values()]
    unseen = (
        (max(seqs) - min(seqs) + 1 - len(seqs) - sum(min(seqs) < n < max(seqs) for n in others))
        if seqs
        else 0
    )
    expected = (len(tokens) + unseen) * healthy
    undelivered = expected - len(latencies)
    latencies.sort()
    spreads = sorted(entry[1] - entry[0] for entry in tokens.values())
    lates = sorted(entry[3] for entry in tokens.values())
    return {
        "tokens_sent_per_second": round((len(tokens) + unseen) / seconds, 2),
        "tokens_delivered_per_second": round(len(latencies) / seconds, 1),
        "tokens_delivered_per_spectator_per_second": round(len(latencies) / seconds / max(healthy, 1), 2),
        "undelivered": undelivered,
        "undelivered_percent": round(100 * undelivered / expected, 3) if expected else 0.0,
        "latency_ms_p50": _ms(_percentile(latencies, 0.50, total=expected)),
        "latency_ms_p99": _ms(_percentile(latencies, 0.99, total=expected)),
        "latency_ms_max": _ms(latencies[-1]) if latencies and not undelivered else None,
        "spread_ms_p50": _ms(_percentile(spreads, 0.50)),
        "spread_ms_p99": _ms(_percentile(spreads, 0.99)),
        "spread_ms_max": _ms(spreads[-1]) if spreads else None,
        "producer_late_ms_p99": _ms(1000 * _percentile(lates, 0.99)) if lates else None,
        "reads_per_spectator_per_second": round(reads / seconds / max(healthy, 1), 1),
        "gaps": gaps,
        "dropped": dropped,
    }


def _events(chunks: Sequence[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
    """(arrival, complete SSE events) of one response: headers dropped, chunked coding undone, and
    each event attributed to the read that completed it."""
    body = _body(chunks)
    tail = b""
    for arrival, data in body:
        buffer = tail + data if tail else data
        lf, crlf = buffer.rfind(b"\n\n"), buffer.rfind(b"\r\n\r\n")
        if lf < 0 and crlf < 0:  # no event ends in this read
            tail = buffer
            continue
        end = max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
        tail = buffer[end:]
        yield arrival, buffer[:end]


def _body(chunks: Sequence[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
    """The response body by read: past the headers, de-chunked (Transfer-Encoding: chunked)."""
    head = b""
    position = 0
    for position, (_, data) in enumerate(chunks):  # noqa: B007
        head += data
        if b"\r\n\r\n" in head:
            break
    else:
        return
    headers, _, rest = head.partition(b"\r\n\r\n")
    reads = [(chunks[position][0], rest), *chunks[position + 1 :]]
    if b"transfer-encoding: chunked" not in headers.lower():
        yield from reads
        return
    pending = b""  # an incomplete chunk-size line
    left = 0  # bytes of the current chunk still to come
    skip = 0  # bytes of a chunk's trailing CRLF still to skip
    for arrival, data in reads:
        if pending:
            data, pending = pending + data, b""
        out = []
        i, n = 0, len(data)
        while i < n:
            if left:
                piece = data[i : i + left]
                out.append(piece)
                left -= len(piece)
                i += len(piece)
                if not left:
                    skip = 2
            elif skip:
                taken = min(skip, n - i)
                skip -= taken
                i += taken
            else:
                j = data.find(b"\r\n", i)
                if j < 0:
                    pending = data[i:]
                    break
                left = int(data[i:j].split(b";")[0], 16)
                i = j + 2
                if not left:  # the last chunk: the response is over
                    i = n
        if out:
            yield arrival, b"".join(out)


def _percentile(values: Sequence[int], q: float, *, total: int | None = None) -> float | None:
    """The q-quantile (nearest rank) of `values`, sorted; with `total` > len(values), the missing
    ones count as infinitely large (None when the rank falls among them)."""
    total = len(values) if total is None else total
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    return values[rank - 1] if rank <= len(values) else None


def _percent(cpu_seconds: float, seconds: float) -> float:
    return round(100 * cpu_seconds / seconds, 1)


def _ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 2)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="N SSE spectators of one stream; prints JSON results.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--spectators", type=int, required=True)
    parser.add_argument("--server-pid", type=int)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--window", type=float, default=10.0)
    parser.add_argument("--grace", type=float, default=2.0)
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the server's window here")
    parser.add_argument("--server-core", help="the core the server is pinned to (its busy time is reported)")
    args = parser.parse_args(argv)
    raise_open_files_limit()
    step = Step(
        host=args.host,
        port=args.port,
        path=args.path,
        spectators=args.spectators,
        server_pid=args.server_pid,
        warmup=args.warmup,
        window=args.window,
        grace=args.grace,
        profile=args.profile,
        server_core=args.server_core,
    )
    result = asyncio.run(measure(step))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
