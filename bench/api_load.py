"""How many polls per second does the API answer, and how fast, on PostgreSQL?

``segnas serve --dispatchers 0`` (the API alone, uvicorn) on loopback, over a fresh PostgreSQL
database of its own (dropped afterwards) and a Redis database index of its own (emptied
afterwards), driven by ``--clients`` concurrent clients in three phases:

1. ``post``: a burst of ``--posts`` ``POST /searches`` of ``configs/tiny.yaml``'s spec, all
   clients at once;
2. ``poll``: ``GET /searches/{id}`` over the searches just made, for ``--seconds``;
3. ``poll-etag``: the same with ``If-None-Match`` (nothing changes without a dispatcher, so
   every answer should be a ``304``), for ``--seconds``.

Each phase reports requests, requests per second, p50, p99 and worst latency, and errors (an
exception, or a status other than the one expected). The load generator is light on purpose:
one event loop (uvloop where installed), one raw keep-alive HTTP/1.1 connection per client,
parsing only the status line, the headers and a ``Content-Length`` body. Client, server and
PostgreSQL share the machine's cores, so each phase also reports CPU seconds: ``client`` (this
process), ``server`` (the uvicorn process and its children) and ``rest`` (the machine's other
busy seconds: PostgreSQL, Redis, anything else), and ``db conns``, the PostgreSQL connections
opened during the phase (a pool that opens and closes connections under load shows there).
Prints a table and, last, one JSON line.

    python bench/api_load.py [--clients 50] [--seconds 10] [--posts 200] [--server-workers N]

Goals (from the issue), for both poll phases: at least 1,000 polls/s, p99 under 50 ms, and no
error in any phase. The clients form a closed loop (each waits for its answer before asking
again), so the mean latency is clients / throughput: 50 clients at 1,000 polls/s wait 50 ms on
average, and the p99 goal needs well over 1,000 polls/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from storage.engine import normalise_url
from storage.migrate import upgrade

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "configs" / "tiny.yaml"
POLLS_PER_S_GOAL = 1000.0
P99_MS_GOAL = 50.0
POSTGRES_URL_ENV = "SEGNAS_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 90.0


class HTTPConnection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> HTTPConnection:
        reader, writer = await asyncio.open_connection(HOST, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def request(self, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        """Send a prepared request head (and body); answer ``(status, headers, body)``."""
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            content = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            content = await self.read_chunked()
        else:
            content = b""  # 204, 304, or a body we would have to read to the close: none here
        if headers.get("connection", "").lower() == "close":
            raise ConnectionResetError("the server closed the connection")
        return status, headers, content

    async def read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers expected
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.writer.close()


def request_head(method: str, path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Accept: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Phase:
    name: str
    expected: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    exceptions: Counter[str] = field(default_factory=Counter)
    client_cpu_s: float = 0.0  # this process
    server_cpu_s: float | None = None  # the uvicorn process and its children
    # Per server process, most first: with --workers, how evenly the connections spread.
    server_cpu_by_process: list[float] = field(default_factory=list)
    machine_cpu_s: float | None = None  # every core busy, whoever used it
    db_sessions: int | None = None  # PostgreSQL connections opened during the phase

    @property
    def rest_cpu_s(self) -> float | None:
        """The machine's busy seconds that neither client nor server used: PostgreSQL, Redis,
        anything else running."""
        if self.machine_cpu_s is None or self.server_cpu_s is None:
            return None
        return self.machine_cpu_s - self.client_cpu_s - self.server_cpu_s

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def errors(self) -> int:
        wrong = sum(n for status, n in self.statuses.items() if status != self.expected)
        return wrong + sum(self.exceptions.values())

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "per_s": round(self.per_s, 1),
            "p50_ms": round(self.percentile_ms(0.50), 2),
            "p99_ms": round(self.percentile_ms(0.99), 2),
            "max_ms": round(self.percentile_ms(1.0), 2),
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "exceptions": dict(self.exceptions),
            "client_cpu_s": round(self.client_cpu_s, 2),
            "server_cpu_s": rounded(self.server_cpu_s),
            "server_cpu_by_process": [round(x, 2) for x in self.server_cpu_by_process],
            "rest_cpu_s": rounded(self.rest_cpu_s),
            "machine_cpu_s": rounded(self.machine_cpu_s),
            "db_sessions": self.db_sessions,
        }


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# A client's next request: (head, body) for the k-th request of client i.
NextRequest = Callable[[int, int], tuple[bytes, bytes]]


class Meter:
    """CPU seconds of this process, of the server's process tree and of the whole machine, and
    the PostgreSQL sessions opened, around a phase."""

    def __init__(self, server_pid: int, db_sessions: Callable[[], int] | None = None) -> None:
        self.db_sessions = db_sessions
        try:
            import psutil
        except ImportError:  # psutil comes with ray[default]; without it, the client's only
            self.psutil = None
            return
        self.psutil = psutil
        self.server = psutil.Process(server_pid)

    def server_seconds(self) -> dict[int, float] | None:
        """CPU seconds so far of each process of the server (the supervisor, its workers)."""
        if self.psutil is None:
            return None
        seconds = {}
        for process in [self.server, *self.server.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except self.psutil.Error:  # a worker that just exited
                continue
            seconds[process.pid] = times.user + times.system
        return seconds

    def machine_seconds(self) -> float | None:
        """Busy CPU seconds of the machine so far, all cores together."""
        if self.psutil is None:
            return None
        t = self.psutil.cpu_times()
        return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)

    @contextmanager
    def measure(self, phase: Phase) -> Iterator[None]:
        sessions = self.db_sessions() if self.db_sessions else None
        client, server, machine = time.process_time(), self.server_seconds(), self.machine_seconds()
        try:
            yield
        finally:
            phase.client_cpu_s = time.process_time() - client
            server_after, machine_after = self.server_seconds(), self.machine_seconds()
            if server is not None and server_after is not None:
                used = [t - server.get(pid, 0.0) for pid, t in server_after.items()]
                phase.server_cpu_s = sum(used)
                phase.server_cpu_by_process = sorted(used, reverse=True)
            if machine is not None and machine_after is not None:
                phase.machine_cpu_s = machine_after - machine
            if sessions is not None and self.db_sessions is not None:
                phase.db_sessions = self.db_sessions() - sessions


async def run_phase(
    phase: Phase,
    port: int,
    clients: int,
    next_request: NextRequest,
    *,
    seconds: float | None = None,
    total: int | None = None,
    on_answer: Callable[[int, bytes], None] | None = None,
) -> Phase:
    """``clients`` connections, each sending one request at a time, until ``seconds`` have
    passed or ``total`` requests were sent. Connections are opened before the clock starts."""
    connections = [await HTTPConnection.open(port) for _ in range(clients)]
    remaining = [total if total is not None else sys.maxsize]
    start = time.perf_counter()
    deadline = start + seconds if seconds is not None else float("inf")

    async def client(i: int) -> None:
        connection, k = connections[i], 0
        while remaining[0] > 0 and time.perf_counter() < deadline:
            remaining[0] -= 1
            head, body = next_request(i, k)
            k += 1
            sent = time.perf_counter()
            try:
                status, _, content = await connection.request(head, body)
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                phase.latencies.append(time.perf_counter() - sent)
                phase.exceptions[type(error).__name__] += 1
                connection.close()
                connection = connections[i] = await HTTPConnection.open(port)
                continue
            phase.latencies.append(time.perf_counter() - sent)
            phase.statuses[status] += 1
            if on_answer is not None:
                on_answer(status, content)

    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
    finally:
        phase.seconds = time.perf_counter() - start
        for connection in connections:
            connection.close()
    return phase


async def bench(port: int, args: argparse.Namespace, meter: Meter) -> list[Phase]:
    spec = json.dumps(yaml.safe_load(SPEC.read_text())).encode()
    post_head = request_head(
        "POST",
        "/searches",
        port,
        {"Content-Type": "application/json", "Content-Length": str(len(spec))},
    )
    ids: list[str] = []

    def created(status: int, content: bytes) -> None:
        if status == 201:
            ids.append(json.loads(content)["id"])

    post = Phase("post", expected=201)
    with meter.measure(post):
        await run_phase(
            post,
            port,
            args.clients,
            lambda i, k: (post_head, spec),
            total=args.posts,
            on_answer=created,
        )
    print_row(post)
    if not ids:
        raise SystemExit("no search was created: nothing to poll")

    plain = [request_head("GET", f"/searches/{i}", port, {}) for i in ids]
    # The ETag of every search, then requests that carry it.
    etags = await fetch_etags(port, plain)
    conditional = [
        request_head("GET", f"/searches/{i}", port, {"If-None-Match": etags[n]})
        for n, i in enumerate(ids)
    ]
    phases = [post]
    for name, heads, expected in (("poll", plain, 200), ("poll-etag", conditional, 304)):

        def next_poll(i: int, k: int, heads: list[bytes] = heads) -> tuple[bytes, bytes]:
            return heads[(i + k * args.clients) % len(heads)], b""

        if args.warmup > 0:
            warmup = Phase("warm-up", expected)
            await run_phase(warmup, port, args.clients, next_poll, seconds=args.warmup)
        phase = Phase(name, expected=expected)
        with meter.measure(phase):
            await run_phase(phase, port, args.clients, next_poll, seconds=args.seconds)
        print_row(phase)
        phases.append(phase)
    return phases


async def fetch_etags(port: int, heads: list[bytes]) -> list[str]:
    connection = await HTTPConnection.open(port)
    try:
        etags = []
        for head in heads:
            status, headers, _ = await connection.request(head)
            if status != 200 or "etag" not in headers:
                raise SystemExit(f"GET /searches/ID answered {status} without an ETag")
            etags.append(headers["etag"])
        return etags
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@dataclass
class BenchDatabase:
    url: str
    name: str
    admin: Engine  # on the server's maintenance database, autocommit

    def sessions(self) -> int:
        """Connections opened to this database so far (PostgreSQL 14 and later): a pool that
        opens and closes connections under load shows up here."""
        with self.admin.connect() as connection:
            query = text("SELECT sessions FROM pg_stat_database WHERE datname = :name")
            return int(connection.execute(query, {"name": self.name}).scalar_one())


@contextmanager
def postgres_database(server: str) -> Iterator[BenchDatabase]:
    """A database of its own on the server, at the current schema, dropped afterwards."""
    admin = create_engine(
        normalise_url(server),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )
    name = f"segnas_bench_{secrets.token_hex(6)}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = make_url(server).set(database=name).render_as_string(hide_password=False)
            upgrade(url)
            yield BenchDatabase(url, name, admin)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def redis_database(server: str, index: int) -> Iterator[str]:
    """Redis database ``index``, refused unless empty (it is emptied afterwards)."""
    import redis

    url = f"{server.rstrip('/')}/{index}"
    client = redis.Redis.from_url(url)
    try:
        if client.dbsize():
            raise SystemExit(f"{url} holds keys: pick an empty one with --redis-db")
        yield url
    finally:
        client.flushdb()  # ours: it was empty before the bench
        client.close()


@dataclass
class Server:
    port: int
    pid: int = 0
    log_lines: int = 0  # what the server printed: an access log line per request costs CPU
    log_tail: str = ""


@contextmanager
def api_server(args: argparse.Namespace, database_url: str, redis_url: str) -> Iterator[Server]:
    """``segnas serve`` in a subprocess, its output in a log file, once ``/healthz`` answers."""
    info = Server(port=free_port())
    command = [sys.executable, "-m", "segnas.cli", "serve", "--host", HOST]
    command += ["--port", str(info.port), "--dispatchers", "0"]
    if args.server_workers:
        command += ["--workers", str(args.server_workers)]
    with tempfile.TemporaryDirectory(prefix="segnas-api-load-") as folder:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SEGNAS_DATA_DIR": folder,
        }
        env.pop("RAY_ADDRESS", None)
        log_path = Path(folder) / "server.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )
        info.pid = server.pid
        try:
            wait_ready(server, info.port, log_path)
            yield info
        finally:
            stop(server)
            info.log_lines = len(log_path.read_text(errors="replace").splitlines())
            info.log_tail = tail(log_path)


def wait_ready(server: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"segnas serve exited with {server.returncode}:\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise SystemExit(f"segnas serve not ready after {READY_TIMEOUT_S:.0f} s:\n{tail(log_path)}")


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


HEADER = (
    f"{'phase':<10} {'requests':>8} {'seconds':>7} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} "
    f"{'max ms':>7} {'errors':>6}  {'cpu s: client':>13} {'server':>6} {'rest':>5}  "
    f"{'db conns':>8}  statuses"
)


def print_row(phase: Phase) -> None:
    def shown(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    statuses = " ".join(f"{k}:{v}" for k, v in sorted(phase.statuses.items()))
    statuses += "".join(f" {k}:{v}" for k, v in phase.exceptions.items())
    print(
        f"{phase.name:<10} {phase.requests:>8} {phase.seconds:>7.2f} {phase.per_s:>7.0f} "
        f"{phase.percentile_ms(0.5):>7.2f} {phase.percentile_ms(0.99):>7.2f} "
        f"{phase.percentile_ms(1.0):>7.1f} {phase.errors:>6}  {phase.client_cpu_s:>13.2f} "
        f"{shown(phase.server_cpu_s):>6} {shown(phase.rest_cpu_s):>5}  "
        f"{'-' if phase.db_sessions is None else phase.db_sessions:>8}  {statuses}",
        flush=True,
    )
    busy = [x for x in phase.server_cpu_by_process if x >= 0.01]
    if len(busy) > 1:
        print(f"{'':<10} server cpu s by process: {', '.join(f'{x:.2f}' for x in busy)}")


def machine_busy_percent(seconds: float = 2.0) -> float | None:
    """How busy the machine's cores are with other work, before the bench starts."""
    try:
        import psutil
    except ImportError:
        return None
    return psutil.cpu_percent(interval=seconds)


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(coroutine: Awaitable[list[Phase]]) -> list[Phase]:
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(coroutine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=positive, default=50, help="concurrent connections")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each poll phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured polling first, s")
    parser.add_argument("--posts", type=positive, default=200, help="POST /searches in the burst")
    parser.add_argument(
        "--server-workers", type=positive, default=None, help="segnas serve --workers N"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL,
        help=f"server to create the bench database on (env {POSTGRES_URL_ENV})",
    )
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="Redis server, without an index")
    parser.add_argument("--redis-db", type=int, default=14, help="an empty Redis db index")
    args = parser.parse_args()

    busy_before = machine_busy_percent()
    print(
        f"{os.cpu_count()} cores shared by the load generator, the server and PostgreSQL "
        f"({busy_before}% busy in the 2 s before the run); {args.clients} clients, server "
        f"workers: {args.server_workers or 'default'}",
        flush=True,
    )
    with (
        postgres_database(args.postgres_url) as database,
        redis_database(args.redis, args.redis_db) as redis_url,
        api_server(args, database.url, redis_url) as server,
    ):
        print(HEADER, flush=True)
        phases = run(bench(server.port, args, Meter(server.pid, database.sessions)))

    by_name = {phase.name: phase for phase in phases}
    polls = [by_name["poll"], by_name["poll-etag"]]
    met_rate = all(p.per_s >= POLLS_PER_S_GOAL for p in polls)
    met_p99 = all(p.percentile_ms(0.99) < P99_MS_GOAL for p in polls)
    met_errors = all(p.errors == 0 for p in phases)
    summary: dict[str, Any] = {
        "bench": "api_load",
        "clients": args.clients,
        "seconds": args.seconds,
        "posts": args.posts,
        "server_workers": args.server_workers,
        "cores": os.cpu_count(),
        "busy_percent_before": busy_before,
        "goal_polls_per_s": POLLS_PER_S_GOAL,
        "goal_p99_ms": P99_MS_GOAL,
        "met_polls_per_s": met_rate,
        "met_p99": met_p99,
        "met_errors": met_errors,
        "met": met_rate and met_p99 and met_errors,
        "server_log_lines": server.log_lines,
    }
    for phase in phases:
        key = phase.name.replace("-", "_")
        summary.update({f"{key}_{k}": v for k, v in phase.summary().items()})
    if not met_errors:
        print(f"--- the server's last lines ---\n{server.log_tail}", flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
