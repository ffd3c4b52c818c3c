"""``tidings bench``: every benchmark of SPEC §9 in one run, written as JSON and Markdown.

Suites (each a module under ``bench/`` run in its own subprocess, so one failing suite does not
stop the rest):

- ``e2e``       issue 11's end-to-end run: events in over HTTP (wrk single POSTs, batches, an
                open loop, a kill -9) → 2 webhooks each at a sink, next to the seed pattern
- ``ingest``    events/s (single and batch POST) next to a bare FastAPI endpoint; POST → inbox p99
- ``delivery``  deliveries/s end to end to local webhook and SMTP sinks, next to their ceilings
- ``providers`` provider sends/s against local FCM/APNs/Web Push/Twilio/SMTP/webhook servers
- ``china``     Huawei/Xiaomi/OPPO/vivo push, Aliyun/Tencent SMS and WeChat sends/s against their
                fakes, next to each fake's ceiling, and access tokens fetched per 10,000 sends
- ``baselines`` the seed pattern (pika + one HTTP call per message), Celery + RabbitMQ, raw
                RabbitMQ publish/consume, raw SQLite commits, bare uvicorn
- ``scaleout``  1 api + 2 workers on PostgreSQL + RabbitMQ, next to a raw aio-pika loop; MTTR
- ``broadcast`` an in-app broadcast to 100,000 subscribers: recipients/s next to raw SQLite
                batched inserts, RSS while it runs, POST → first inbox item; then a webhook
                broadcast to 100,000 subscribers' endpoints on a local sink, next to the sink's
                own ceiling

The broker suites need RabbitMQ (and PostgreSQL): with ``TIDINGS_TEST_AMQP_URL`` unset, the
throwaway nodes of ``scripts/services.sh`` are started for the run and stopped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

SUITES: dict[str, list[list[str]]] = {
    "e2e": [["-m", "bench.e2e"]],
    "ingest": [["-m", "bench.ingest"]],
    "delivery": [["-m", "bench.delivery"]],
    "providers": [["bench/providers_push.py"], ["bench/providers_mail_webhook.py"]],
    "china": [["bench/china.py"]],
    "baselines": [["-m", "bench.baselines"]],
    "scaleout": [["-m", "bench.scaleout"]],
    "broadcast": [["-m", "bench.broadcast"]],
}
NEEDS_SERVICES = {"e2e", "baselines", "scaleout"}


def _services(env: dict[str, str], workdir: Path) -> Path | None:
    if env.get("TIDINGS_TEST_AMQP_URL"):
        return None
    subprocess.run(["bash", "scripts/services.sh", "install"], cwd=ROOT, check=True)
    subprocess.run(["bash", "scripts/services.sh", "start", str(workdir)], cwd=ROOT, check=True)
    for line in (workdir / "env").read_text().splitlines():
        key, _, value = line.partition("=")
        if key:
            env[key] = value.strip().strip('"')
    return workdir


def main(argv: list[str] | None = None) -> int:
    """Run the chosen suites; write ``bench/results/latest.{json,md}``."""
    parser = argparse.ArgumentParser(prog="tidings bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "suites", nargs="*", help=f"which suites (default: all of {', '.join(SUITES)})"
    )
    args = parser.parse_args(argv)
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s): {', '.join(sorted(unknown))}")
    chosen = args.suites or list(SUITES)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    report: dict[str, object] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{os.cpu_count()} cores",
        "suites": {},
    }
    lines = [f"# tidings bench — {report['started']} ({report['machine']})", ""]
    services_dir: Path | None = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if NEEDS_SERVICES & set(chosen):
                services_dir = _services(env, Path(tmp))
            for suite in chosen:
                outputs = []
                for command in SUITES[suite]:
                    path = command[1].replace(".", "/") if command[0] == "-m" else command[0]
                    if not any((ROOT / p).exists() for p in (path, path + ".py")):
                        outputs.append(f"(suite {path} not present)")
                        continue
                    if suite == "scaleout":
                        if not env.get("TIDINGS_TEST_SERVICES_DIR"):
                            outputs.append("(scaleout needs TIDINGS_TEST_SERVICES_DIR)")
                            continue
                        command = [*command, "--services", env["TIDINGS_TEST_SERVICES_DIR"]]
                    print(f"== {suite}: {' '.join(command)}", flush=True)
                    done = subprocess.run(
                        [sys.executable, *command],
                        cwd=ROOT,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=900,
                    )
                    print(done.stdout, flush=True)
                    if done.returncode:
                        print(done.stderr[-3000:], file=sys.stderr)
                    outputs.append(done.stdout.strip() or f"(failed: {done.stderr[-500:]})")
                report["suites"][suite] = outputs  # type: ignore[index]
                lines += [f"## {suite}", "", *outputs, ""]
        finally:
            if services_dir is not None:
                subprocess.run(["bash", "scripts/services.sh", "stop", str(services_dir)], cwd=ROOT)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (RESULTS / "latest.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'latest.md'} and latest.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
