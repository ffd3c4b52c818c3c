"""The usual Python answer: Celery on RabbitMQ, a task that makes one HTTP POST per message.

A worker is started as a subprocess (`celery -A bench.baselines.celery_pipeline worker -c 2`,
prefork pool, default prefetch multiplier, early acks as Celery defaults to); this process
enqueues tasks with `apply_async` and a local sink times each POST. Latency is enqueue → arrival
at the sink. The broker URL reaches the worker through $TIDINGS_TEST_AMQP_URL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

from celery import Celery

from bench.baselines import (
    AMQP_ENV,
    ROOT,
    SAMPLE_EVENT,
    BaselineResult,
    arguments,
    report,
    require_amqp_url,
    subprocess_env,
    summarize,
)
from bench.baselines.seed_pattern import post
from bench.baselines.sink import SinkProcess

DRAIN_TIMEOUT = 120.0
WORKER_START_TIMEOUT = 60.0

app = Celery("tidings_bench", broker=os.environ.get(AMQP_ENV, "amqp://guest:guest@127.0.0.1//"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="tidings_bench.deliver")  # type: ignore[untyped-decorator]  # celery is untyped
def deliver(sink_url: str, body: str) -> None:
    """One HTTP POST per message, on a new connection (what `requests.post` does)."""
    post(sink_url, body.encode())


class Worker:
    """`celery worker -c N` in a child process, consuming one private queue."""

    def __init__(self, amqp_url: str, queue: str, concurrency: int) -> None:
        env = subprocess_env()
        env[AMQP_ENV] = amqp_url
        # Celery's banner and its root-user warning would drown the table: keep them for errors.
        self.log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.baselines.celery_pipeline",
                "worker",
                "-c",
                str(concurrency),
                "-Q",
                queue,
                "-l",
                "warning",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def log_tail(self) -> str:
        """The last lines the worker wrote to stderr."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self.log.close()


def _body(sequence: int) -> str:
    event = dict(SAMPLE_EVENT, id=f"evt-{sequence}")
    return json.dumps({"sent_at": time.time(), "event": event})


def run(
    amqp_url: str,
    messages: int = 3000,
    concurrency: int = 2,
    seconds: float = 30.0,
) -> BaselineResult:
    """Enqueue `messages` tasks (or for at most `seconds`); wait until the sink has them all."""
    app.conf.broker_url = amqp_url
    queue = f"bench.celery.{uuid.uuid4().hex[:12]}"
    with SinkProcess() as sink:
        worker = Worker(amqp_url, queue, concurrency)
        try:
            with app.connection_for_write() as connection:
                # Warm-up: wait until the worker consumes and the sink answers.
                deliver.apply_async((sink.url, _body(-1)), queue=queue, connection=connection)
                if not sink.wait_for(1, WORKER_START_TIMEOUT):
                    raise RuntimeError(
                        f"the celery worker never delivered the warm-up task:\n{worker.log_tail()}"
                    )
                sink.reset()
                started = time.perf_counter()
                started_at = time.time()
                deadline = started + seconds
                sent = 0
                with app.producer_or_acquire() as producer:
                    while sent < messages and time.perf_counter() < deadline:
                        deliver.apply_async((sink.url, _body(sent)), queue=queue, producer=producer)
                        sent += 1
                complete = sink.wait_for(sent, DRAIN_TIMEOUT)
                stats = sink.stats()
                last_at = stats["last_at"]
                assert isinstance(last_at, float)
                wall = last_at - started_at if complete else time.perf_counter() - started
        finally:
            worker.stop()
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)
    latencies = stats["latencies"]
    assert isinstance(latencies, list)
    notes = f"messages/s delivered to the sink; worker -c {concurrency} prefork, acks early"
    if not complete:
        notes += f"; only {len(latencies)} of {sent} arrived within {DRAIN_TIMEOUT:.0f}s"
    return summarize(
        f"Celery + RabbitMQ, HTTP per task (-c {concurrency})",
        len(latencies),
        wall,
        latencies,
        notes,
    )


def main() -> None:
    parser = arguments(__doc__ or "", amqp=True)
    parser.set_defaults(seconds=30.0)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    url = require_amqp_url(args.amqp_url)
    report([run(url, args.messages, args.concurrency, args.seconds)], args.json)


if __name__ == "__main__":
    main()
