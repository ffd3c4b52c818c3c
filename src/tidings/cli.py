"""The ``tidings`` command line (SPEC §1)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from tidings.config import Settings, load_settings
from tidings.durations import parse_duration
from tidings.errors import ConfigError
from tidings.keys_cli import keys_app
from tidings.packs import REGIONS, pack_text

app = typer.Typer(
    help="tidings — notification engine for e-commerce trade events.",
    no_args_is_help=True,
    add_completion=False,
)
dlq_app = typer.Typer(help="Dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(keys_app, name="keys")
console = Console(stderr=True)
ConfigOption = Annotated[str | None, typer.Option("--config", help="Config file (YAML).")]


def _settings(config: str | None, *, check: bool = True) -> Settings:
    from tidings.reports import print_config_problems

    try:
        return load_settings(config, check=check)
    except ConfigError as exc:
        print_config_problems(console, exc, "config error")
        raise typer.Exit(2) from exc


def _run(coroutine: Any) -> Any:
    """Run ``coroutine`` on uvloop when it is installed (it is with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def _logging() -> None:
    logging.basicConfig(
        level=os.environ.get("TIDINGS_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # every process migrates (a no-op but for the first): its step-by-step notes are noise
    logging.getLogger("alembic").setLevel(logging.WARNING)


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    role: Annotated[str, typer.Option(help="all | api | worker")] = "all",
    processes: Annotated[
        int | None,
        typer.Option(help="Processes of the role on this machine (default: its cores)."),
    ] = None,
) -> None:
    """Run the service (HTTP API and workers with role ``all``)."""
    from tidings.runtime.supervisor import LISTEN_FD, default_processes

    if role not in ("all", "api", "worker"):
        raise typer.BadParameter("role must be all, api or worker")
    count = default_processes() if processes is None else processes
    if count < 1:
        raise typer.BadParameter("--processes must be at least 1")
    _logging()
    settings = _settings(config)
    if count > 1 and LISTEN_FD not in os.environ:
        given = [] if config is None else ["--config", config]
        command = ["serve", "--host", host, "--port", str(port), "--role", role, *given]
        prepared = subprocess.run(
            [sys.executable, "-m", "tidings.runtime.prepare", "--role", role, *given],
            stdout=subprocess.PIPE,
            text=True,
        )
        if prepared.returncode != 0:
            raise typer.Exit(prepared.returncode)
        generated = prepared.stdout.strip() or None
        _supervise(settings, host, port, role, count, command, generated)
    _serve_or_explain(settings, host, port, role)


def _serve_or_explain(settings: Settings, host: str, port: int, role: str) -> None:
    """Serve; a config error found at start (a short API key …) is one line, exit 2."""
    try:
        _run(_serve(settings, host, port, role))
    except ConfigError as exc:
        console.print(f"[red]config error[/red] {exc}")
        raise typer.Exit(2) from exc


def _supervise(
    settings: Settings,
    host: str,
    port: int,
    role: str,
    count: int,
    command: list[str],
    generated: str | None,
) -> NoReturn:
    """Bind the port, say so, then become the small supervisor (:mod:`.runtime.supervisor`)."""
    from tidings.runtime.supervisor import SPEC, listening_socket

    sock = None if role == "worker" else listening_socket(host, port)
    child = [sys.executable, "-m", "tidings.cli", *command, "--processes", "1"]
    _announce(settings, role, host, port, generated, processes=count)
    spec = {
        "command": child,
        "count": count,
        "fd": None if sock is None else sock.fileno(),
        "database": settings.database,
    }
    os.environ[SPEC] = json.dumps(spec)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "tidings.runtime.supervisor"])


async def _serve(settings: Settings, host: str, port: int, role: str) -> None:
    import uvicorn

    from tidings.api.app import create_app
    from tidings.api.intake import ExpressLane
    from tidings.runtime.service import Service
    from tidings.runtime.supervisor import LISTEN_FD, Share, child_sockets

    share = Share.from_env()
    service = Service(settings, role=role, share=share)
    await service.start()
    _tune_gc()
    if not share.child:
        _announce(settings, role, host, port, service.generated_admin_key)
    if role == "worker":
        await _until_signalled()
    else:
        server = uvicorn.Server(
            uvicorn.Config(
                ExpressLane(create_app(service, manage=False)),
                host=host,
                port=port,
                log_level="warning",
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=5,
            )
        )
        inherited = os.environ.get(LISTEN_FD)
        # one of several processes: on the socket their supervisor bound and one of its own
        sockets = None if inherited is None else child_sockets(int(inherited))
        await server.serve(sockets=sockets)
    await service.aclose()


def _tune_gc() -> None:
    """Collect garbage less often, and never walk what start-up built.

    Every event allocates hundreds of short-lived objects (parsed JSON, rows, rendered
    templates), so the default threshold (700) ran a young-generation collection every few
    events and full collections of the ~100k long-lived objects (config, compiled templates
    and statements, imported modules) paused the loop for 40-90 ms. Those are frozen out of
    the collector here, and a collection waits for 20,000 net allocations. On the 2-core bench
    machine batch intake went from 25k to 36k events/s, and the POST → inbox p99 at 500
    events/s from 27 to 18 ms. Reference cycles are still collected, only later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _announce(
    settings: Settings,
    role: str,
    host: str,
    port: int,
    generated_admin_key: str | None,
    processes: int = 1,
) -> None:
    out = Console()
    out.print(
        f"[bold]tidings[/bold] {role} — config {settings.source}, "
        f"database {settings.database.split('@')[-1]}, broker "
        f"{settings.broker.split('@')[-1]}, {processes} process{'es' if processes > 1 else ''}"
    )
    if role != "worker":
        out.print(f"listening on http://{host}:{port}  (dashboard /, API docs /docs)")
    if generated_admin_key:
        out.print(f"[yellow]generated admin API key (shown once):[/yellow] {generated_admin_key}")
    sys.stdout.flush()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def worker(config: ConfigOption = None) -> None:
    """Run workers only (scale-out mode)."""
    _logging()
    _serve_or_explain(_settings(config), "", 0, "worker")


@app.command()
def init(
    path: Annotated[Path, typer.Option(help="Where to write.")] = Path("tidings.yaml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    region: Annotated[
        str, typer.Option(help="`cn`: China's push, SMS and WeChat providers (SPEC §12).")
    ] = "global",
) -> None:
    """Write the built-in e-commerce config to ./tidings.yaml to start editing from."""
    if region not in REGIONS:
        console.print(f"[red]unknown region {region!r}[/red] (known: {', '.join(REGIONS)})")
        raise typer.Exit(2)
    if path.exists() and not force:
        console.print(f"[red]{path} exists[/red] (use --force)")
        raise typer.Exit(1)
    path.write_text(pack_text(region), "utf-8")
    Console().print(f"wrote {path}")


@app.command()
def check(config: ConfigOption = None) -> None:
    """Validate config, rules and every template in every locale; print the rule table."""
    from tidings.config_check import check_settings
    from tidings.reports import print_config_problems, rule_table

    settings = _settings(config, check=False)  # every problem at once, below
    try:
        check_settings(settings)
    except ConfigError as exc:
        print_config_problems(console, exc)
        raise typer.Exit(1) from exc
    Console().print(rule_table(settings))
    Console().print(
        f"[green]ok[/green]: {len(settings.rules)} rules, "
        f"{len(settings.templates)} templates, {len(settings.categories)} categories"
    )


@app.command()
def token(
    subscriber_id: str,
    ttl: Annotated[str, typer.Option(help="Lifetime, e.g. 1h.")] = "1h",
    config: ConfigOption = None,
) -> None:
    """Mint an inbox token for a subscriber (development aid)."""
    settings = _settings(config)
    Console().print(
        asyncio.run(_token(settings, subscriber_id, parse_duration(ttl))), soft_wrap=True
    )


async def _token(settings: Settings, subscriber_id: str, ttl: float) -> str:
    import time

    from tidings.api.inbox import mint_token
    from tidings.store import Store
    from tidings.store import keys as key_rows

    secret = settings.inbox.secret
    if not secret:
        store = Store.open(settings.database, settings.encryption_key)
        await store.start()
        try:
            secret = await store.write(lambda conn: key_rows.inbox_secret(conn, store.cipher))
        finally:
            await store.aclose()
    # inbox.max_ttl caps every token, however it is minted
    return mint_token(secret, subscriber_id, min(ttl, settings.inbox.max_ttl), time.time())


@dlq_app.command("list")
def dlq_list(config: ConfigOption = None) -> None:
    """List dead letters waiting for replay."""
    from tidings.reports import dead_letter_table

    rows = asyncio.run(_dlq(_settings(config), None, False))
    Console().print(dead_letter_table(rows))


@dlq_app.command("replay")
def dlq_replay(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    config: ConfigOption = None,
) -> None:
    """Replay dead letters (a running service sends them within a second)."""
    if not ids and not all_:
        raise typer.BadParameter("name dead letter ids or pass --all")
    replayed = asyncio.run(_dlq(_settings(config), ids or [], all_))
    Console().print(f"replayed {len(replayed)}")
    if ids and len(replayed) < len(ids):
        raise typer.Exit(1)  # a named dead letter was not found (or not waiting)


async def _dlq(settings: Settings, ids: list[str] | None, all_: bool) -> list[Any]:
    import time

    from sqlalchemy.ext.asyncio import AsyncConnection

    from tidings.store import Store
    from tidings.store import audit as audit_rows
    from tidings.store import deliveries as delivery_rows

    store = Store.open(settings.database, settings.encryption_key)
    await store.start()
    try:
        async with store.read() as conn:
            waiting = await delivery_rows.list_dead_letters(conn, None, 100_000)
        if ids is None:
            return waiting
        chosen = [row.id for row in waiting] if all_ else ids
        done = []
        for dead_id in chosen:

            async def replay(conn: AsyncConnection, dead: str = dead_id) -> str | None:
                now = time.time()
                replayed = await delivery_rows.replay_dead_letter(conn, dead, now)
                if replayed is not None:
                    await audit_rows.record(conn, audit_rows.CLI, "dlq replay", dead, now)
                return replayed

            replayed = await store.write(replay)
            if replayed is None:
                console.print(f"[yellow]no dead letter {dead_id} waiting[/yellow]")
            else:
                done.append(dead_id)
        return done
    finally:
        await store.aclose()


@app.command()
def demo(
    url: Annotated[str, typer.Option(help="The running service.")] = "http://127.0.0.1:8000",
    rate: Annotated[float, typer.Option(help="Events per second.")] = 20.0,
    duration: Annotated[float, typer.Option(help="Seconds to run.")] = 30.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar=["TIDINGS_API_KEY", "TIDINGS_ADMIN_KEY"],
            help="Admin API key (or TIDINGS_API_KEY / TIDINGS_ADMIN_KEY).",
        ),
    ] = None,
) -> None:
    """A simulated shop emits realistic trade events against a running service."""
    from tidings.demo import run_demo

    if not api_key:
        console.print(
            "[red]set TIDINGS_API_KEY or TIDINGS_ADMIN_KEY (or --api-key) to an admin key[/red]"
        )
        raise typer.Exit(2)
    asyncio.run(run_demo(url, api_key, rate, duration))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """The benchmark harness (bench/): ``tidings bench -h`` lists its suites.

    The harness lives beside the package, not in it: it runs as a process of its own
    (``python -m bench.run``) from the repository root.
    """
    if not (Path.cwd() / "bench" / "run.py").is_file():
        console.print("[red]run `tidings bench` from the repository root (bench/ not found)[/red]")
        raise typer.Exit(2)
    raise typer.Exit(subprocess.call([sys.executable, "-m", "bench.run", *ctx.args]))


if __name__ == "__main__":
    app()
