"""Run every baseline once: `python -m bench.baselines [--amqp-url URL] [--json]`."""

from __future__ import annotations

from bench.baselines import (
    BaselineResult,
    arguments,
    bare_uvicorn,
    celery_pipeline,
    raw_rabbitmq,
    raw_sqlite,
    report,
    require_amqp_url,
    seed_pattern,
)


def run_all(amqp_url: str, seconds: float = 5.0, messages: int = 5000) -> list[BaselineResult]:
    """Ceilings first (HTTP, RabbitMQ, SQLite), then the seed pattern and Celery."""
    return [
        *bare_uvicorn.run_all(seconds),
        raw_rabbitmq.run(amqp_url, seconds),
        *raw_sqlite.run_all(min(seconds, 2.0)),
        seed_pattern.run(amqp_url, messages),
        celery_pipeline.run(amqp_url, messages),
    ]


def main() -> None:
    parser = arguments(__doc__ or "", amqp=True)
    parser.add_argument("--messages", type=int, default=5000, help="for seed and Celery")
    args = parser.parse_args()
    report(run_all(require_amqp_url(args.amqp_url), args.seconds, args.messages), args.json)


if __name__ == "__main__":
    main()
