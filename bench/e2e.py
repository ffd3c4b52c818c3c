"""End-to-end throughput (issue 11): events in over HTTP → webhook deliveries at a local sink.

The workload: ``order.paid`` CloudEvents (order_id, buyer_id, seller_id, amount "99.00", CNY),
each turned by two rules (buyer, seller; ``channels: [webhook]``) into two signed webhooks to one
local sink (``bench.webhook_sink``: counts duplicate ``webhook-id``s, times each arrival from the
``sent_at`` the event carries in its data). SQLite, default config otherwise. Every part runs
against a fresh ``tidings serve`` (new temp dir, new database) started as a user would
(``.venv/bin/tidings serve --config X --port P [--processes N]``), in one run:

- ``seed``: the seed pattern (``bench.baselines.seed_pattern``, 2 HTTP calls per message) on
  RabbitMQ (``$TIDINGS_TEST_AMQP_URL``, else throwaway nodes from ``scripts/services.sh``);
- ``ceiling``: the bare FastAPI endpoint under ``wrk`` (32 connections) and the sink's own
  ceiling (a bare keep-alive client);
- ``T1``: single POSTs from ``wrk`` (32 connections, distinct events) until N are answered or
  ``--seconds``; then a bounded wait for every accepted event's 2 deliveries;
- ``T2``: N events in batches of 500 from 4 keep-alive connections;
- ``T3``: an open loop (paced by a schedule, not by answers) at a quarter of the bare
  endpoint's req/s for ``--t3-seconds``; POST → delivered percentiles from the scheduled time;
- ``crash``: T2's load with one service process ``kill -9``ed when half the deliveries have
  arrived (a child when there are several, else the service itself, which the bench restarts
  on the same database and port); the producer retries what was not answered.

Throughput is first send → last delivery at the sink. CPU is utime + stime of the service
and all its descendants (``/proc``) over that wall time; RSS the sum over its processes, the
maximum of samples every 0.2 s. 503 answers (backpressure) are counted apart, never retried
in T1/T3 (retried after ``Retry-After`` in T2 and the crash run). Usage::

    .venv/bin/python -m bench.e2e [--events 20000] [--processes N] [--seconds 30]
                                  [--only seed,ceiling,T1,T2,T3,crash] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.baselines import (
    AMQP_ENV,
    ROOT,
    SAMPLE_EVENT,
    free_port,
    on_uvloop,
    percentile,
)
from bench.delivery import KEY, Sink, ceiling
from bench.delivery import config as delivery_config
from bench.webhook_sink import SECRET, timed_reset, timed_stats

PARTS = ("seed", "ceiling", "T1", "T2", "T3", "crash")
BATCH = 500
CONNECTIONS_T1 = 32
CONNECTIONS_T2 = 4
DRAIN_SECONDS = 120.0
"""How long a part waits for the last deliveries after its last send (``--drain``)."""
SEND_SECONDS = 120.0
"""How long T2 and the crash run may take to have every batch answered."""
WITHIN_SECONDS = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TIDINGS = Path(sys.executable).parent / "tidings"
ERROR_LINE = re.compile(r"Traceback|ERROR|CRITICAL|Exception|Error:")


# --- the service ----------------------------------------------------------------------------


def service_config(sink_port: int, workdir: Path) -> dict[str, Any]:
    """Two rules (buyer, seller) on webhooks, one template, the delivery bench's provider."""
    rule = {
        "on": "order.paid",
        "category": "order_updates",
        "priority": "high",
        "channels": ["webhook"],
        "template": "order_paid",
    }
    return {
        "database": f"sqlite:///{workdir / 'tidings.db'}",
        "api_keys": [{"key": KEY, "scopes": ["admin"]}],
        "inbox": {"secret": "bench-inbox-secret-0123456789"},
        "categories": {"order_updates": {"required": True}},
        "templates": {
            "order_paid": {
                "en-US": {
                    "title": "Payment received",
                    "body": "Order {{ order_id }}: {{ amount | money(currency) }} paid.",
                },
                "zh-CN": {
                    "title": "支付成功",
                    "body": "订单 {{ order_id }} 已支付 {{ amount | money(currency) }}。",
                },
            }
        },
        # one sink stands in for many ERPs: the delivery bench's webhook provider settings
        "providers": delivery_config("webhook", sink_port)["providers"],
        "rules": [
            {"id": "order-paid-buyer", "to": "buyer", **rule},
            {"id": "order-paid-seller", "to": "seller", **rule},
        ],
    }


def serve_supports_processes() -> bool:
    """Whether ``tidings serve`` takes ``--processes`` (another change adds it)."""
    done = subprocess.run(
        [str(TIDINGS), "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    return "--processes" in done.stdout


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (``/proc/stat``: all but idle and
    iowait), to tell the service's share from the load generator's and the sink's."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        with suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid not in pids:
            pids.append(pid)
            todo += _children(pid)
    return pids


class Service:
    """``tidings serve`` on a fresh SQLite database in its own temp dir; its process tree."""

    def __init__(self, sink_port: int, subscribers: int, processes: int | None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="tidings-e2e-")
        self.workdir = Path(self._tmp.name)
        self.config = self.workdir / "tidings.yaml"
        self.config.write_text(yaml.safe_dump(service_config(sink_port, self.workdir)))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [str(TIDINGS), "serve", "--config", str(self.config)]
        self.command += ["--port", str(self.port)]
        if processes is not None:
            self.command += ["--processes", str(processes)]
        self.log = (self.workdir / "serve.log").open("ab")
        self.sink_port = sink_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, str] = {}
        """Every process of the tree ever sampled: pid → its start time (for the clean-up)."""
        self.rss_max = 0
        self.pss_max = 0
        self._sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self.restarts = 0
        try:
            self.start()
            self.subscribers(subscribers)
        except BaseException:
            self.stop()
            raise

    def start(self) -> None:
        env = {**os.environ, "TIDINGS_LOG_LEVEL": os.environ.get("TIDINGS_LOG_LEVEL", "WARNING")}
        self.proc = subprocess.Popen(
            self.command, cwd=self.workdir, env=env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"tidings serve exited with {self.proc.returncode}: {self.tail()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"tidings serve did not come up: {self.tail()}")
            time.sleep(0.1)
        self._remember()

    def subscribers(self, count: int) -> None:
        """buyer-n and seller-n, each with one webhook endpoint at the sink."""
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as client:
            for n in range(count):
                for role in ("buyer", "seller"):
                    got = client.put(f"/v1/subscribers/{role}-{n}", json={"name": role})
                    assert got.status_code in (200, 201), got.text
                    url = f"http://127.0.0.1:{self.sink_port}/hooks/{role}/{n}"
                    got = client.post(
                        f"/v1/subscribers/{role}-{n}/webhooks", json={"url": url, "secret": SECRET}
                    )
                    assert got.status_code == 201, got.text

    # -- /proc ------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        return _tree(self.proc.pid)

    def _remember(self) -> list[int]:
        pids = self.pids()
        for pid in pids:
            fields = _stat(pid)
            if fields is not None:
                self.seen[pid] = fields[19]
        return pids

    def cpu_by_process(self) -> dict[int, float]:
        """pid → utime + stime of each live process of the tree, plus what it reaped; and
        under the key -1, the machine's busy seconds (:func:`machine_busy_seconds`)."""
        found = {-1: machine_busy_seconds()}
        for pid in self.pids():
            fields = _stat(pid)
            if fields is not None:
                found[pid] = sum(int(f) for f in fields[11:15]) / CLK_TCK
        return found

    def cpu_seconds(self) -> float:
        """CPU seconds of the whole tree (see :meth:`cpu_by_process`)."""
        return sum(v for pid, v in self.cpu_by_process().items() if pid >= 0)

    def rss_bytes(self) -> int:
        total = 0
        for pid in self._remember():
            with suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        return total

    def pss_bytes(self) -> int:
        """The tree's proportional set size: what RSS counts once per process (the Python
        binary, shared libraries) counted once for the whole tree."""
        total = 0
        for pid in self._remember():
            with suppress(OSError, IndexError, ValueError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        return total

    def sample(self) -> None:
        """Sample the tree's RSS every 0.2 s (in a thread) until :meth:`stop`."""
        self._sampling.clear()

        def loop() -> None:
            while not self._sampling.is_set():
                self.rss_max = max(self.rss_max, self.rss_bytes())
                self.pss_max = max(self.pss_max, self.pss_bytes())
                self._sampling.wait(0.2)

        self._sampler = threading.Thread(target=loop, daemon=True)
        self._sampler.start()

    def metrics_accepted(self) -> int | None:
        """``tidings_events_total{outcome="accepted"}`` (of whichever process answers)."""
        try:
            text = httpx.get(
                f"{self.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10
            ).text
        except httpx.HTTPError:
            return None
        total = 0.0
        for line in text.splitlines():
            if line.startswith("tidings_events_total{") and 'outcome="accepted"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    # -- the crash ---------------------------------------------------------------------------

    def crash(self) -> dict[str, Any]:
        """``kill -9`` one process: the busiest child if there are any (the service is left to
        recover by itself), else the service, restarted on the same database and port."""
        assert self.proc is not None
        root = self.proc.pid
        children = []
        for pid in _children(root):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "tracker" in cmdline:  # multiprocessing's resource/semaphore tracker
                continue
            fields = _stat(pid)
            busy = sum(int(f) for f in fields[11:13]) if fields else 0
            children.append((busy, pid, cmdline.strip()))
        if children:
            _, pid, cmdline = max(children)
            os.kill(pid, signal.SIGKILL)
            return {"killed": "child", "pid": pid, "cmdline": cmdline[-120:]}
        os.kill(root, signal.SIGKILL)
        self.proc.wait(30)
        started = time.monotonic()
        self.start()
        self.restarts += 1
        return {
            "killed": "service (no children)",
            "pid": root,
            "restart_seconds": round(time.monotonic() - started, 2),
        }

    # -- the end ------------------------------------------------------------------------------

    def tail(self, lines: int = 15) -> str:
        try:
            text = (self.workdir / "serve.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def errors(self) -> dict[str, Any]:
        """Lines of the service's stderr/stdout that look like errors (count and a few)."""
        try:
            lines = (self.workdir / "serve.log").read_text(errors="replace").splitlines()
        except OSError:
            return {"count": 0, "lines": []}
        hits = [line for line in lines if ERROR_LINE.search(line)]
        return {"count": len(hits), "log_lines": len(lines), "lines": hits[:8]}

    def stop(self) -> None:
        """SIGTERM the service (SIGKILL after 20 s), then SIGKILL any process of its tree left."""
        self._sampling.set()
        if self._sampler is not None:
            self._sampler.join(5)
        if self.proc is not None and self.proc.poll() is None:
            self._remember()
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid, started in self.seen.items():
            fields = _stat(pid)
            if fields is not None and fields[19] == started and fields[0] != "Z":
                with suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        self.log.close()
        self._tmp.cleanup()


@contextmanager
def service(
    sink: Sink, subscribers: int, processes: int | None, warm: bool = True
) -> Iterator[Service]:
    """A fresh service, warmed up (one batch, delivered), with the sink's counters reset."""
    svc = Service(sink.port, subscribers, processes)
    try:
        if warm:
            warm_up(svc, sink, subscribers)
        yield svc
    finally:
        svc.stop()


# --- events and the HTTP client ---------------------------------------------------------------


def event(event_id: str, n: int, subscribers: int) -> dict[str, Any]:
    """One ``order.paid``; ``sent_at`` is set when it is (re)sent."""
    who = n % subscribers
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "/bench/e2e",
        "type": "order.paid",
        "data": {
            "order_id": f"o-{event_id}",
            "buyer_id": f"buyer-{who}",
            "seller_id": f"seller-{who}",
            "amount": "99.00",
            "currency": "CNY",
            "sent_at": 0.0,
        },
    }


def expected_keys(item: dict[str, Any]) -> tuple[str, str]:
    """The sink keys (``path order_id``) of an event's two deliveries."""
    data = item["data"]
    buyer = data["buyer_id"].split("-")[1]
    seller = data["seller_id"].split("-")[1]
    return (
        f"/hooks/buyer/{buyer} {data['order_id']}",
        f"/hooks/seller/{seller} {data['order_id']}",
    )


class Connection:
    """A keep-alive HTTP/1.1 connection to the service's ``POST /v1/events``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes, content_type: str) -> tuple[int, float | None, bytes]:
        """(status, Retry-After seconds, body); opens the connection when needed."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(
            (
                f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, retry_after, close = 0, False, None, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"retry-after":
                with suppress(ValueError):
                    retry_after = float(value)
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readuntil(b"\r\n")
            await self.reader.readuntil(b"\r\n")
            payload = b"".join(parts)
        else:
            payload = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, retry_after, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def warm_up(svc: Service, sink: Sink, subscribers: int) -> None:
    """One batch of 100 events, delivered, before anything is timed; then reset the sink."""
    items = [event(f"warm-{n}", n, subscribers) for n in range(100)]
    got = httpx.post(
        f"{svc.url}/v1/events",
        content=json.dumps(items),
        headers={
            "Authorization": f"Bearer {KEY}",
            "content-type": "application/cloudevents-batch+json",
        },
        timeout=60,
    )
    assert got.status_code in (202, 207), got.text
    deadline = time.monotonic() + 60
    while sink.count.value < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    sink.reset()
    timed_reset(sink.port)


def drain(sink: Sink, expected: int, deadline: float) -> bool:
    """Wait until ``expected`` distinct deliveries arrived, or the deadline; True if all."""
    while sink.count.value - sink.dups.value < expected:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def latency_ms(latencies: list[float]) -> dict[str, float | None]:
    ms = [v * 1000 for v in latencies]
    return {f"p{q}": round(percentile(ms, q), 1) if ms else None for q in (50, 95, 99)}


def outcome(
    sink: Sink,
    accepted: int,
    started_at: float,
    last_send_at: float,
    complete: bool,
    svc: Service,
    cpu_before: dict[int, float],
    ended_at: float,
) -> dict[str, Any]:
    """The figures every flat-out part reports, from the sink's stats and the service's CPU."""
    # CPU over the time from the first send until now (the drain returns on the last arrival)
    cpu_by_process = svc.cpu_by_process()
    cpu_wall = max(1e-9, time.time() - started_at)
    spent = {pid: after - cpu_before.get(pid, 0.0) for pid, after in cpu_by_process.items()}
    machine = spent.pop(-1)
    cpu = sum(spent.values())
    # each process's share (the supervisor first): is the work spread over the cores?
    cores_by_process = [round(spent[pid] / cpu_wall, 2) for pid in sorted(spent)]
    stats = timed_stats(sink.port)
    arrived = int(sink.count.value)
    duplicates = int(sink.dups.value)
    last_at = stats["last_at"] or ended_at
    wall = max(1e-9, (last_at if complete else ended_at) - started_at)
    delivered_events = min(accepted, (arrived - duplicates) // 2)
    return {
        "accepted": accepted,
        "deliveries": arrived,
        "expected_deliveries": 2 * accepted,
        "all_delivered": complete,
        "seconds": round(wall, 2),
        "send_seconds": round(last_send_at - started_at, 2),
        "events_per_second": round(delivered_events / wall, 1),
        "deliveries_per_second": round((arrived - duplicates) / wall, 1),
        "last_delivery_after_last_send_s": round(last_at - last_send_at, 2) if last_at else None,
        "delivered_within_30s": bool(complete and last_at - last_send_at <= WITHIN_SECONDS),
        "latency_ms": latency_ms(stats["latencies"]),
        "duplicates": duplicates,
        "bad_signatures": int(sink.bad.value),
        "cores": round(cpu / cpu_wall, 2),
        "cores_by_process": cores_by_process,
        "machine_cores": round(machine / cpu_wall, 2),
        "cpu_us_per_delivery": round(1e6 * cpu / max(1, arrived)),
        "rss_max_mb": round(svc.rss_max / 2**20, 1),
        "pss_max_mb": round(svc.pss_max / 2**20, 1),
        "_keys": stats["keys"],
    }


# --- the parts ----------------------------------------------------------------------------------


WRK_EVENTS = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_usec; } e2e_timeval;
int gettimeofday(e2e_timeval *tv, void *tz);
]]
local tv = ffi.new("e2e_timeval")
local function now()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) / 1e6
end

local threads = {}
local next_id = 1
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  run, limit, key = args[1], tonumber(args[2]), args[3]
  subscribers, marks = tonumber(args[4]), args[5]
  sent, answered, c202, c503, other, last = 0, 0, 0, 0, 0, 0
  -- wrk.format's headers replace wrk.headers (Host included): give them all
  post_headers = {
    ["Host"] = wrk.headers["Host"],
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/cloudevents+json",
  }
  health = wrk.format("GET", "/healthz")
  -- wrk calls the first thread's request() once before it runs, to check the script: that
  -- call sends nothing, so it must not count
  checking = tid == 1
end

function request()
  if checking then
    checking = false
    return health
  end
  if sent >= limit then return health end  -- the quota is out: ask something harmless
  sent = sent + 1
  local who = (tid * 7919 + sent) % subscribers
  local id = string.format("%s-%d-%d", run, tid, sent)
  last = now()
  local body = string.format(
    '{"specversion":"1.0","id":"%s","source":"/bench/e2e","type":"order.paid",' ..
    '"data":{"order_id":"o-%s","buyer_id":"buyer-%d","seller_id":"seller-%d",' ..
    '"amount":"99.00","currency":"CNY","sent_at":%.6f}}', id, id, who, who, last)
  return wrk.format("POST", "/v1/events", post_headers, body)
end

function response(status, headers, body)
  if status == 200 then return end  -- /healthz
  answered = answered + 1
  if status == 202 then c202 = c202 + 1
  elseif status == 503 then c503 = c503 + 1
  else other = other + 1 end
  if answered >= limit then
    local f = io.open(marks .. "/done-" .. tid, "w")
    f:write(string.format("%.6f", last))
    f:close()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local a, b, c, s = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    a, b, c, s = a + t:get("c202"), b + t:get("c503"), c + t:get("other"), s + t:get("sent")
  end
  io.write(string.format("E2E-COUNTS %d %d %d %d\n", a, b, c, s))
end
"""

WRK_BARE = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
"""


def _wrk_threads() -> int:
    return max(1, min(os.cpu_count() or 2, 4))


def t1(
    sink: Sink,
    svc: Service,
    events: int,
    seconds: float,
    subscribers: int,
    drain_seconds: float = DRAIN_SECONDS,
) -> dict[str, Any]:
    """Single POSTs from wrk until ``events`` are answered or ``seconds`` pass."""
    threads = _wrk_threads()
    marks = svc.workdir / "wrk"
    marks.mkdir()
    script = svc.workdir / "events.lua"
    script.write_text(WRK_EVENTS)
    limit = math.ceil(events / threads)
    command = ["wrk", f"-t{threads}", f"-c{CONNECTIONS_T1}", f"-d{math.ceil(seconds)}s"]
    command += ["--timeout", "10s", "-s", str(script), f"{svc.url}/v1/events", "--"]
    command += [f"t1{uuid.uuid4().hex[:6]}", str(limit), KEY, str(subscribers), str(marks)]
    metrics_before = svc.metrics_accepted()
    svc.sample()
    cpu_before = svc.cpu_by_process()
    started_at = time.time()
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while wrk.poll() is None:
            if len(list(marks.iterdir())) >= threads:  # every thread has its answers
                wrk.send_signal(signal.SIGINT)
                break
            time.sleep(0.02)
        out, err = wrk.communicate(timeout=seconds + 60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.wait()
    wrk_done_at = time.time()
    found = re.search(r"E2E-COUNTS (\d+) (\d+) (\d+) (\d+)", out)
    if not found:
        raise RuntimeError(f"wrk printed no counts: {out[-800:]} {err[-800:]}")
    c202, c503, other, sent = (int(g) for g in found.groups())
    ends = [float(p.read_text()) for p in marks.iterdir()]
    last_send_at = max(ends) if len(ends) >= threads else wrk_done_at
    complete = drain(sink, 2 * c202, time.monotonic() + drain_seconds)
    result = outcome(sink, c202, started_at, last_send_at, complete, svc, cpu_before, time.time())
    result.pop("_keys")
    metrics_after = svc.metrics_accepted()
    socket_errors = re.search(r"Socket errors:.*", out)
    result.update(
        posted=sent,
        answered_503=c503,
        answered_other=other,
        accepted_per_second=round(c202 / max(1e-9, last_send_at - started_at), 1),
        metrics_accepted=(
            None
            if metrics_before is None or metrics_after is None
            else metrics_after - metrics_before
        ),
        wrk_socket_errors=socket_errors.group(0) if socket_errors else None,
    )
    return result


async def _post_batches(
    port: int,
    batches: list[list[dict[str, Any]]],
    deadline: float,
    accepted_event: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Post every batch from ``CONNECTIONS_T2`` connections, retrying what was not answered
    (connection errors, 5xx, 503 after Retry-After) until the deadline."""
    todo = list(range(len(batches)))
    todo.reverse()
    tally = {"accepted": 0, "duplicate": 0, "rejected": 0, "answered_503": 0, "errors": 0}
    tally["other_status"] = 0
    accepted_ids: set[str] = set()
    last_send = [0.0]

    async def worker() -> None:
        conn = Connection(port)
        try:
            while todo and time.monotonic() < deadline:
                batch = batches[todo.pop()]
                while time.monotonic() < deadline:
                    now = time.time()
                    for item in batch:
                        item["data"]["sent_at"] = now
                    body = json.dumps(batch).encode()
                    last_send[0] = now
                    try:
                        status, retry_after, payload = await asyncio.wait_for(
                            conn.post(body, "application/cloudevents-batch+json"), 60
                        )
                    except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
                        tally["errors"] += 1
                        conn.close()
                        await asyncio.sleep(0.2)
                        continue
                    if status in (202, 207):
                        for row in json.loads(payload)["results"]:
                            if row["status"] == 202:
                                tally["accepted"] += 1
                                accepted_ids.add(row["id"])
                            elif row["status"] == 200:  # committed by an unanswered attempt
                                tally["duplicate"] += 1
                                accepted_ids.add(row["id"])
                            else:
                                tally["rejected"] += 1
                        if accepted_event is not None:
                            accepted_event(len(accepted_ids))
                        break
                    if status == 503:
                        tally["answered_503"] += 1
                        await asyncio.sleep(min(retry_after or 0.5, 2.0))
                    else:
                        tally["other_status"] += 1
                        await asyncio.sleep(0.2)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS_T2)))
    return {**tally, "ids": accepted_ids, "last_send_at": last_send[0]}


def _batches(run: str, events: int, subscribers: int) -> list[list[dict[str, Any]]]:
    items = [event(f"{run}-{n}", n, subscribers) for n in range(events)]
    return [items[i : i + BATCH] for i in range(0, events, BATCH)]


def batch_load(
    sink: Sink,
    svc: Service,
    events: int,
    subscribers: int,
    run: str,
    crash_at: int | None = None,
    drain_seconds: float = DRAIN_SECONDS,
) -> dict[str, Any]:
    """T2 (and the crash run): every event in batches of 500; arrivals checked per event.

    With ``crash_at``, one process is killed (:meth:`Service.crash`) once that many deliveries
    arrived at the sink: mid-run, while the backlog is being sent (and usually still taken in).
    """
    batches = _batches(run, events, subscribers)
    by_id = {item["id"]: item for batch in batches for item in batch}
    svc.sample()
    cpu_before = svc.cpu_by_process()
    crash: dict[str, Any] = {}
    progress = {"accepted": 0}
    finished = threading.Event()

    def on_accepted(count: int) -> None:
        progress["accepted"] = count

    def crasher() -> None:
        assert crash_at is not None
        while sink.count.value < crash_at:
            if finished.wait(0.005):
                return
        crash.update(
            at_deliveries=int(sink.count.value),
            at_accepted=progress["accepted"],
            at_seconds=round(time.time() - started_at, 2),
        )
        crash.update(svc.crash())

    watcher = threading.Thread(target=crasher, daemon=True)
    started_at = time.time()
    if crash_at is not None:
        watcher.start()
    try:
        sent = on_uvloop(
            _post_batches(svc.port, batches, time.monotonic() + SEND_SECONDS, on_accepted)
        )
        ids: set[str] = sent.pop("ids")
        complete = drain(sink, 2 * len(ids), time.monotonic() + drain_seconds)
    finally:
        finished.set()
        if watcher.is_alive():
            watcher.join(90)
    result = outcome(
        sink, len(ids), started_at, sent.pop("last_send_at"), complete, svc, cpu_before, time.time()
    )
    arrived = set(result.pop("_keys"))
    expected = {key for event_id in ids for key in expected_keys(by_id[event_id])}
    result.update(
        sent,
        lost=len(expected - arrived),
        unacknowledged_delivered=len(arrived - expected),
        not_accepted=events - len(ids),
    )
    if crash_at is not None:
        result["crash"] = crash
        # a killed process's CPU is not all counted
        for key in ("cores", "cores_by_process", "machine_cores", "cpu_us_per_delivery"):
            result.pop(key)
    return result


async def _open_loop(
    port: int, rate: float, seconds: float, subscribers: int, run: str
) -> dict[str, Any]:
    """POST one event at each tick of a fixed schedule, whatever the answers' pace; a
    connection per request in flight (a new one when all are busy, up to 512)."""
    total = int(rate * seconds)
    idle: list[Connection] = []
    opened = 0
    tally = {"accepted": 0, "answered_503": 0, "other_status": 0, "errors": 0, "no_connection": 0}
    lag_max = 0.0
    tasks: set[asyncio.Task[None]] = set()

    async def shot(conn: Connection, body: bytes) -> None:
        try:
            status, _, _ = await asyncio.wait_for(
                conn.post(body, "application/cloudevents+json"), 30
            )
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            tally["errors"] += 1
            conn.close()
            idle.append(conn)
            return
        idle.append(conn)
        if status == 202:
            tally["accepted"] += 1
        elif status == 503:
            tally["answered_503"] += 1
        else:
            tally["other_status"] += 1

    started = time.time()
    for n in range(total):
        due = started + n / rate
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lag_max = max(lag_max, time.time() - due)
        item = event(f"{run}-{n}", n, subscribers)
        item["data"]["sent_at"] = due  # from the schedule: a late send counts as latency
        if idle:
            conn = idle.pop()
        elif opened < 512:
            conn = Connection(port)
            opened += 1
        else:
            tally["no_connection"] += 1
            continue
        task = asyncio.create_task(shot(conn, json.dumps(item).encode()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    last_send = time.time()
    if tasks:
        await asyncio.wait(tasks, timeout=35)
    for conn in idle:
        conn.close()
    return {
        **tally,
        "offered": total,
        "connections": opened,
        "client_lag_max_ms": round(lag_max * 1000, 1),
        "started_at": started,
        "last_send_at": last_send,
    }


def t3(sink: Sink, svc: Service, rate: float, seconds: float, subscribers: int) -> dict[str, Any]:
    """The open loop at ``rate`` events/s; percentiles of POST (scheduled) → delivered."""
    svc.sample()
    cpu_before = svc.cpu_by_process()
    sent = on_uvloop(_open_loop(svc.port, rate, seconds, subscribers, f"t3{uuid.uuid4().hex[:6]}"))
    started_at, last_send_at = sent.pop("started_at"), sent.pop("last_send_at")
    accepted = sent["accepted"]
    complete = drain(sink, 2 * accepted, time.monotonic() + 60)
    result = outcome(
        sink, accepted, started_at, last_send_at, complete, svc, cpu_before, time.time()
    )
    result.pop("_keys")
    result.update(sent, rate=round(rate, 1))
    # keeps up: everything offered accepted and delivered, the last delivery within 1 s of
    # the last send, and the client on schedule (its lag under 100 ms)
    result["keeps_up"] = bool(
        complete
        and accepted == sent["offered"]
        and (result["last_delivery_after_last_send_s"] or 0) <= 1.0
        and sent["client_lag_max_ms"] <= 100
    )
    return result


def bare_ceiling(seconds: float) -> dict[str, Any]:
    """The bare FastAPI endpoint (``bench.baselines.bare_uvicorn``) under wrk, 32 connections."""
    from bench.baselines.bare_uvicorn import UvicornProcess

    server = UvicornProcess()
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
            script.write(WRK_BARE % json.dumps(SAMPLE_EVENT))
            script.flush()
            command = ["wrk", f"-t{_wrk_threads()}", f"-c{CONNECTIONS_T1}"]
            command += [f"-d{math.ceil(seconds)}s", "-s", script.name]
            command += [f"http://127.0.0.1:{server.port}/v1/events"]
            out = subprocess.run(
                command, capture_output=True, text=True, timeout=seconds + 60
            ).stdout
    finally:
        server.stop()
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found:
        raise RuntimeError(f"wrk printed no rate: {out[-800:]}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_second": float(found.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


@contextmanager
def rabbitmq() -> Iterator[str]:
    """``$TIDINGS_TEST_AMQP_URL``, else throwaway nodes of ``scripts/services.sh`` (stopped)."""
    url = os.environ.get(AMQP_ENV)
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="tidings-e2e-svc-") as tmp:
        subprocess.run(["bash", "scripts/services.sh", "install"], cwd=ROOT, check=True)
        try:
            subprocess.run(["bash", "scripts/services.sh", "start", tmp], cwd=ROOT, check=True)
            env = {}
            for line in (Path(tmp) / "env").read_text().splitlines():
                key, _, value = line.partition("=")
                if key:
                    env[key] = value.strip().strip('"')
            yield env[AMQP_ENV]
        finally:
            subprocess.run(["bash", "scripts/services.sh", "stop", tmp], cwd=ROOT)


def seed(events: int) -> dict[str, Any]:
    """The seed pattern with the same shape: one message → 2 HTTP calls to a sink."""
    from bench.baselines import seed_pattern

    with rabbitmq() as url:
        result = seed_pattern.run(url, events, seconds=60.0, calls_per_message=2)
    return {
        **result,
        "events_per_second": result["per_second"],
        "deliveries_per_second": round(2 * result["per_second"], 1),
    }


# --- the report -----------------------------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "–"
    return f"{value / base:.1f}×"


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(report: dict[str, Any]) -> str:
    """The Markdown table of issue 11: a row per part, with the ratios and the targets."""
    seed_eps = (report.get("seed") or {}).get("events_per_second")
    lines = [
        "| same run, same machine | events/s end to end | deliveries/s | × seed | "
        "p50 / p95 / p99 ms | cores | RSS MB | notes | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]

    def row(name: str, part: dict[str, Any], notes: str, target: str) -> None:
        lat = part.get("latency_ms") or {}
        pcts = " / ".join(_fmt(lat.get(q), 1) for q in ("p50", "p95", "p99")) if lat else "–"
        lines.append(
            f"| {name} | {_fmt(part.get('events_per_second'), 1)} "
            f"| {_fmt(part.get('deliveries_per_second'), 1)} "
            f"| {_ratio(part.get('events_per_second'), seed_eps)} | {pcts} "
            f"| {_fmt(part.get('cores'), 2)} | {_fmt(part.get('rss_max_mb'), 0)} "
            f"| {notes} | {target} |"
        )

    if "seed" in report:
        s = report["seed"]
        lines.append(
            f"| seed pattern (pika, auto_ack, 2 blocking HTTP calls a message) "
            f"| {_fmt(s['events_per_second'], 1)} | {_fmt(s['deliveries_per_second'], 1)} | 1.0× "
            f"| {_fmt(s['p50_ms'], 1)} / {_fmt(s['p95_ms'], 1)} / {_fmt(s['p99_ms'], 1)} "
            f"| – | – | {s['messages']} messages; loses messages on a crash | |"
        )
    if "T1" in report:
        p = report["T1"]
        notes = (
            f"{p['accepted']:,} accepted ({p['accepted_per_second']:,.0f}/s), "
            f"{p['answered_503']} × 503, {p['answered_other']} other; "
            f"{p['deliveries']:,}/{p['expected_deliveries']:,} delivered; "
            f"all within 30 s of the last send: {'yes' if p['delivered_within_30s'] else 'no'}"
        )
        met = seed_eps and p["events_per_second"] >= 6.8 * seed_eps and p["delivered_within_30s"]
        row(
            "tidings, single POSTs, wrk 32 connections (T1)", p, notes, _target("≥ 6.8×, 30 s", met)
        )
    if "T2" in report:
        p = report["T2"]
        notes = (
            f"{p['accepted']:,} accepted, {p['answered_503']} × 503; "
            f"{p['deliveries']:,}/{p['expected_deliveries']:,} delivered, lost {p['lost']}"
        )
        met = seed_eps and p["events_per_second"] >= 10 * seed_eps and p["all_delivered"]
        row(f"tidings, batch POSTs of {BATCH} (T2)", p, notes, _target("≥ 10×", met))
    if "T3" in report:
        p = report["T3"]
        keeps = "keeps up" if p["keeps_up"] else "fell behind"
        notes = (
            f"{keeps}: {p['accepted']:,}/{p['offered']:,} accepted, {p['answered_503']} × 503, "
            f"client lag ≤ {p['client_lag_max_ms']} ms"
        )
        p99 = (p.get("latency_ms") or {}).get("p99")
        met = p["keeps_up"] and p99 is not None and p99 <= 50
        row(f"tidings, open loop at {p['rate']:,.0f}/s (T3)", p, notes, _target("p99 ≤ 50 ms", met))
    if "crash" in report:
        p = report["crash"]
        crash = p.get("crash", {})
        notes = (
            f"kill -9 of the {crash.get('killed', '?')} at {crash.get('at_seconds', '?')} s "
            f"({crash.get('at_accepted', '?')} accepted, {crash.get('at_deliveries', '?')} "
            "delivered); "
            f"lost {p['lost']}, duplicated {p['duplicates']}, "
            f"{p['errors']} connection errors retried"
        )
        met = p["lost"] == 0 and p["duplicates"] == 0 and p["all_delivered"]
        row(
            "tidings, T2 load with kill -9 mid-run (crash)", p, notes, _target("0 lost, 0 dup", met)
        )
    out = "\n".join(lines)
    extra = []
    if "ceiling" in report:
        c = report["ceiling"]
        extra.append(
            f"Ceilings in this run: the sink alone {c['sink_per_second']:,.0f} req/s, "
            f"the bare FastAPI endpoint {c['bare']['requests_per_second']:,.0f} req/s "
            f"(wrk, {CONNECTIONS_T1} connections)."
        )
    saturated = [report[p] for p in ("T1", "T2") if p in report]
    if saturated:
        cores = max(p["cores"] for p in saturated)
        split = "; ".join(
            f"{name}: {p['cores']:.2f} ({' + '.join(map(str, p['cores_by_process']))} by "
            f"process), machine {p['machine_cores']:.2f}"
            for name, p in report.items()
            if name in ("T1", "T2")
        )
        extra.append(
            f"Cores used by the service under saturation (max of T1/T2): {cores:.2f} of "
            f"{os.cpu_count()} (target ≥ 1.6: {'met' if cores >= 1.6 else 'not met'}) — {split}."
        )
    rss = [report[p]["rss_max_mb"] for p in ("T1", "T2", "T3", "crash") if p in report]
    pss = [report[p].get("pss_max_mb", 0.0) for p in ("T1", "T2", "T3", "crash") if p in report]
    if rss:
        extra.append(
            f"RSS of all the service's processes, max: {max(rss):,.0f} MB "
            f"(target ≤ 300: {'met' if max(rss) <= 300 else 'not met'}); counting the pages"
            f" the processes share once (PSS): {max(pss):,.0f} MB."
        )
    errors = {
        p: report[p]["service_errors"] for p in PARTS if "service_errors" in report.get(p, {})
    }
    noisy = {p: e["count"] for p, e in errors.items() if e["count"]}
    if noisy:
        extra.append(f"Error-looking lines in the service's output: {noisy}.")
    return out + ("\n\n" + "\n".join(f"- {line}" for line in extra) if extra else "")


def _target(text: str, met: Any) -> str:
    return f"{text}: {'met' if met else 'not met'}"


def run(
    events: int,
    processes: int | None,
    seconds: float,
    only: set[str],
    subscribers: int,
    seed_events: int,
    t3_seconds: float,
    drain_seconds: float = DRAIN_SECONDS,
) -> dict[str, Any]:
    """Every chosen part, in the order of ``PARTS``; the report as a dict."""
    report: dict[str, Any] = {
        "suite": "e2e",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{os.cpu_count()} cores",
        "events": events,
        "subscribers": subscribers,
    }
    if processes is not None and not serve_supports_processes():
        report["processes_note"] = f"tidings serve has no --processes: {processes} not passed"
        processes = None
    report["processes"] = processes
    report["serve"] = "tidings serve --config X --port P" + (
        f" --processes {processes}" if processes is not None else ""
    )
    if "seed" in only:
        report["seed"] = seed(seed_events)
        print(f"seed: {report['seed']['events_per_second']} events/s", file=sys.stderr)
    sink = Sink("webhook")
    try:
        if "ceiling" in only or "T3" in only:
            report["ceiling"] = {
                "bare": bare_ceiling(5.0),
                "sink_per_second": round(ceiling("webhook", sink.port, 4.0, 64), 1),
            }
            print(f"ceilings: {report['ceiling']}", file=sys.stderr)
        for part in ("T1", "T2", "T3", "crash"):
            if part not in only:
                continue
            sink.reset()
            timed_reset(sink.port)
            with service(sink, subscribers, processes) as svc:
                if part == "T1":
                    result = t1(sink, svc, events, seconds, subscribers, drain_seconds)
                elif part == "T2":
                    run_id = f"t2{uuid.uuid4().hex[:6]}"
                    result = batch_load(
                        sink, svc, events, subscribers, run_id, drain_seconds=drain_seconds
                    )
                elif part == "T3":
                    rate = report["ceiling"]["bare"]["requests_per_second"] / 4
                    result = t3(sink, svc, rate, t3_seconds, subscribers)
                else:
                    result = batch_load(
                        sink,
                        svc,
                        events,
                        subscribers,
                        f"cr{uuid.uuid4().hex[:6]}",
                        crash_at=events,  # half the deliveries
                        drain_seconds=drain_seconds,
                    )
                result["service_errors"] = svc.errors()
            report[part] = result
            print(f"{part}: {json.dumps(result)}", file=sys.stderr, flush=True)
    finally:
        sink.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="N (default 20,000)")
    parser.add_argument(
        "--processes", type=int, default=None, help="passed to tidings serve (default: omitted)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="T1's bound (default 30)")
    parser.add_argument("--t3-seconds", type=float, default=10.0, help="T3's length (default 10)")
    parser.add_argument("--subscribers", type=int, default=200, help="buyers = sellers (200)")
    parser.add_argument(
        "--seed-events", type=int, default=None, help="messages of the seed pattern (default N)"
    )
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated parts of {','.join(PARTS)}"
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=DRAIN_SECONDS,
        help="how long to wait for the last deliveries after the last send (default 120)",
    )
    parser.add_argument("--json", type=Path, help="write the JSON report here too")
    args = parser.parse_args()
    # a SIGTERM (a timeout, Ctrl-C from a parent) unwinds through every finally: no service,
    # sink or broker is left running
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    only = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = only - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    report = run(
        args.events,
        args.processes,
        args.seconds,
        only,
        args.subscribers,
        args.events if args.seed_events is None else args.seed_events,
        args.t3_seconds,
        args.drain,
    )
    print(table(report))
    print()
    print(json.dumps(report, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
