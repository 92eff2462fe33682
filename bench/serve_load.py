"""Latency and throughput of `nextclick serve` under an open-loop load; prints one JSON object.

    python bench/serve_load.py [--data DIR] [--model-dir DIR] [--duration 60] [--out FILE]

A GRU4Rec model (preset rsc15, 100 units; one epoch unless --epochs, which does not change
the cost of a click) is trained on the yoochoose1_64 benchmark (DIR: train_sessions.tsv.gz,
test_sessions.tsv.gz; default ../shared/data/yoochoose1_64-srgnn), or loaded from
--model-dir. Then, for each set-up (in-process store; Redis, started here from Debian's
redis-server; two service processes sharing that Redis), the service is started with the
CLI and replayed the test sessions' clicks by an open-loop generator: click i is due at
start + i / rate whatever the answers so far, and its latency counts from that due time, so
queueing shows. Reported per set-up: p50/p90/p99/max latency and errors at --rate for
--duration seconds, and the highest rate of --search-rates whose --search-seconds run kept
p99 <= 50 ms without errors, confirmed by a --duration run; and the service processes' RSS
after the run at --rate (the model, and the sessions held on the in-process store). Memory per
held session is the service's RSS growth (in-process store) or Redis's used_memory growth over
--sessions sessions.

Generator and service share this machine's cores: the generator's own CPU use is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import emit

from nextclick.data import read_events

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "yoochoose1_64-srgnn"
KEEP_ALIVE = 4.0  # seconds an idle connection is reused (the server's timeout is 5 s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def http_get(port: int, path: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class Connection:
    """A keep-alive HTTP/1.1 connection with just enough parsing for JSON answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.last_used = time.monotonic()

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes) -> int:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        self.last_used = time.monotonic()
        return status

    def close(self) -> None:
        self.writer.close()


def click_stream(sessions: list[list[int]], active: int, run: str):
    """(session id, item) in the order of `active` shoppers clicking in turn, each walking
    through one test session, then the next."""
    queue = iter(range(len(sessions)))
    slots = [[next(queue), 0] for _ in range(active)]
    lap = 0
    while True:
        for slot in slots:
            s, t = slot
            yield f"{run}-{lap}-{s}", sessions[s][t]
            slot[1] += 1
            if slot[1] == len(sessions[s]):
                nxt = next(queue, None)
                if nxt is None:
                    queue, lap = iter(range(len(sessions))), lap + 1
                    nxt = next(queue)
                slot[:] = [nxt, 0]


async def open_loop(port: int, rate: float, seconds: float, sessions: list[list[int]],
                    run: str) -> dict:  # fmt: skip
    loop = asyncio.get_running_loop()
    idle: list[Connection] = []
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    clicks = click_stream(sessions, active=256, run=run)
    n = int(rate * seconds)
    cpu_started = time.process_time()
    start = loop.time() + 0.3
    pending: set[asyncio.Task] = set()

    async def one(due: float, session: str, item: int) -> None:
        conn = idle.pop() if idle else None
        # Like any HTTP client pool: never reuse a connection the server may have closed
        # (uvicorn closes keep-alive connections idle for 5 s).
        while conn is not None and time.monotonic() - conn.last_used > KEEP_ALIVE:
            conn.close()
            conn = idle.pop() if idle else None
        try:
            if conn is None:
                conn = await Connection.open(port)
            body = json.dumps({"item_id": item, "k": 20}).encode()
            status = await asyncio.wait_for(conn.post(f"/v1/sessions/{session}/events", body), 10)
            statuses[str(status)] += 1
            idle.append(conn)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            statuses[type(exc).__name__] += 1
            if conn is not None:
                conn.close()
        latencies.append(loop.time() - due)

    for i in range(n):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(one(due, *next(clicks)))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    for conn in idle:
        conn.close()
    lat = np.array(latencies) * 1000
    errors = n - statuses.get("200", 0)
    return {
        "rate": rate, "seconds": seconds, "requests": n, "errors": errors,
        "statuses": dict(statuses),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p90_ms": round(float(np.percentile(lat, 90)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
        "achieved_rate": round(n / (loop.time() - start), 1),
        "generator_cpu_share": round((time.process_time() - cpu_started) / seconds, 3),
    }  # fmt: skip


def thread_cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds used so far by each thread of the processes, by thread kind."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                name = (task / "comm").read_text().strip()
            except OSError:
                continue
            if name.startswith("redis"):
                kind = "redis-server"
            else:  # a service process: its main thread runs the event loop
                kind = "event loop" if int(task.name) == pid else "other threads"
            out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def load(port: int, rate: float, seconds: float, sessions: list[list[int]], run: str,
         pids: list[int] | None = None) -> dict:  # fmt: skip
    """One open-loop run; with ``pids``, also the CPU time per click of their threads."""
    before = thread_cpu(pids) if pids else {}
    result = asyncio.run(open_loop(port, rate, seconds, sessions, run))
    if pids:
        after = thread_cpu(pids)
        result["cpu_ms_per_click"] = {
            kind: round((after[kind] - before.get(kind, 0.0)) * 1000 / result["requests"], 3)
            for kind in after if after[kind] > before.get(kind, 0.0)
        }
    print(f"  {rate:>6.0f}/s for {seconds:.0f} s: p50 {result['p50_ms']} ms, p99 "
          f"{result['p99_ms']} ms, errors {result['errors']}", file=sys.stderr)  # fmt: skip
    return result


def round_seconds(port: int) -> dict[str, float]:
    """The service's round counters from /metrics: rounds, jobs, seconds by phase."""
    _, text = http_get(port, "/metrics")
    out = {}
    for line in text.decode().splitlines():
        if line.startswith(("nextclick_model_batches_total", "nextclick_model_batched_jobs_total",
                            "nextclick_round_seconds_total")):  # fmt: skip
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def round_breakdown(before: dict[str, float], after: dict[str, float]) -> dict:
    """Requests per round and the wall time per request of each phase of a round."""
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    jobs = delta.pop("nextclick_model_batched_jobs_total")
    rounds = delta.pop("nextclick_model_batches_total")
    phases = {key.split('"')[1]: value for key, value in delta.items()}
    return {"requests_per_round": round(jobs / rounds, 2),
            **{f"{phase}_ms_per_request": round(seconds * 1000 / jobs, 3)
               for phase, seconds in phases.items()}}  # fmt: skip


def passes(result: dict) -> bool:
    return result["errors"] == 0 and result["p99_ms"] <= 50.0


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [int(p) for p in children.read_text().split()] if children.exists() else []
    return [pid, *[q for c in found for q in child_pids(c)]]


class Service:
    def __init__(self, model_dir: Path, workers: int, state: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nextclick.cli", "serve", str(model_dir), "--port",
             str(self.port), "--workers", str(workers), "--state", state],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: http_get(self.port, "/readyz")[0] == 200, 120, "the service")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


class Redis:
    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found: bash scripts/test-services.sh installs it")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        self.client = redis.Redis(port=self.port)
        wait_for(self.client.ping, 20, "redis-server")

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def hold_sessions(port: int, n: int, sessions: list[list[int]], run: str) -> None:
    """Open n sessions of one click each, 64 at a time."""

    async def go() -> None:
        conns = [await Connection.open(port) for _ in range(64)]

        async def worker(w: int) -> None:
            for i in range(w, n, 64):
                item = sessions[i % len(sessions)][0]
                body = json.dumps({"item_id": item, "k": 1}).encode()
                assert await conns[w].post(f"/v1/sessions/{run}-{i}/events", body) == 200

        await asyncio.gather(*(worker(w) for w in range(64)))
        for c in conns:
            c.close()

    asyncio.run(go())


def setup_run(name: str, service: Service, args: argparse.Namespace,
              sessions: list[list[int]], redis: Redis | None) -> dict:  # fmt: skip
    print(f"{name}:", file=sys.stderr)
    load(service.port, 100, 5, sessions, f"{name}-warm")
    pids = child_pids(service.process.pid) + ([redis.process.pid] if redis else [])
    before = round_seconds(service.port)
    out: dict = {"at_rate": load(service.port, args.rate, args.duration, sessions, f"{name}-a",
                                 pids)}
    if name != "redis-2proc":  # /metrics is one process's: only then are rounds all there
        out["at_rate"]["rounds"] = round_breakdown(before, round_seconds(service.port))
    # The service processes' own (Redis's sessions are not in it; shared pages count per process).
    out["service_rss_mb"] = round(rss_mb(child_pids(service.process.pid)))
    steps, best = [], None
    for rate in args.search_rates:
        result = load(service.port, rate, args.search_seconds, sessions, f"{name}-s{rate}")
        steps.append(result)
        if not passes(result):
            break
        best = rate
    out["search"] = steps
    confirmed = None
    candidates = [r for r in args.search_rates if best is not None and r <= best]
    for rate in reversed(candidates):
        result = load(service.port, rate, args.duration, sessions, f"{name}-c{rate}")
        if passes(result):
            confirmed = result
            break
    out["max_sustained"] = confirmed
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT)
    parser.add_argument("--model-dir", type=Path, help="serve this model instead of training")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--search-rates", type=float, nargs="*",
                        default=[600, 800, 1000, 1250, 1500, 1750, 2000])  # fmt: skip
    parser.add_argument("--search-seconds", type=float, default=20)
    parser.add_argument("--sessions", type=int, default=20000)
    parser.add_argument("--setups", nargs="+", default=["memory", "redis", "redis-2proc"],
                        choices=["memory", "redis", "redis-2proc"])  # fmt: skip
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nextclick-serve-bench-"))
    model_dir = args.model_dir
    if model_dir is None:
        model_dir = work / "model"
        print(f"training GRU4Rec (rsc15 preset, {args.epochs} epoch(s))...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "nextclick.cli", "-q", "train", "--model", "gru4rec",
             "--preset", "rsc15", "--param", f"n_epochs={args.epochs}",
             "--train", str(args.data / "train_sessions.tsv.gz"), "--out", str(model_dir)],
            check=True, stdout=sys.stderr,
        )  # fmt: skip
    test = read_events(args.data / "test_sessions.tsv.gz")
    sessions = [g.tolist() for _, g in test.groupby("SessionId", sort=False)["ItemId"]]
    record: dict = {
        "benchmark": "serve_load", "data": str(args.data), "model_dir": str(model_dir),
        "cpu_count": os.cpu_count(), "rate": args.rate, "duration_s": args.duration,
        "search_seconds": args.search_seconds, "setups": {},
    }  # fmt: skip
    redis = Redis(work) if any(s.startswith("redis") for s in args.setups) else None
    try:
        for setup in args.setups:
            if setup == "memory":
                service = Service(model_dir, 1, "memory")
            else:
                assert redis is not None
                redis.client.flushall()
                service = Service(model_dir, 2 if setup == "redis-2proc" else 1, redis.url)
            try:
                result = setup_run(setup, service, args, sessions,
                                   None if setup == "memory" else redis)
                if setup == "redis":
                    assert redis is not None
                    before = redis.used_memory()
                    hold_sessions(service.port, args.sessions, sessions, "held")
                    grown = redis.used_memory() - before
                    result["bytes_per_session"] = round(grown / args.sessions)
                record["setups"][setup] = result
            finally:
                service.stop()
        if "memory" in args.setups:
            # On a fresh process: one that served the load runs reuses memory they freed.
            service = Service(model_dir, 1, "memory")
            try:
                hold_sessions(service.port, 100, sessions, "warm")
                pids = child_pids(service.process.pid)
                before = rss_mb(pids)
                hold_sessions(service.port, args.sessions, sessions, "held")
                grown = rss_mb(pids) - before
                record["setups"]["memory"]["bytes_per_session"] = round(
                    grown * 2**20 / args.sessions
                )
            finally:
                service.stop()
    finally:
        if redis is not None:
            redis.stop()
        if args.model_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    emit(record, args.out)


if __name__ == "__main__":
    main()
