"""``tidings keys …``: API keys kept in the database, and the rotation of the PII key (SPEC §1)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from tidings.config import SCOPES, load_settings
from tidings.durations import parse_duration
from tidings.errors import ConfigError, Conflict

keys_app = typer.Typer(help="API keys, and the PII encryption key.", no_args_is_help=True)
_err = Console(stderr=True)
ConfigOption = Annotated[str | None, typer.Option("--config", help="Config file (YAML).")]
T = TypeVar("T")


async def _with_store(config: str | None, work: Callable[[Any], Awaitable[T]]) -> T:
    from tidings.store import Store

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        _err.print(f"[red]config error[/red] {exc}")
        raise typer.Exit(2) from exc
    store = Store.open(settings.database, settings.encryption_key)
    await store.start()
    try:
        return await work(store)
    finally:
        await store.aclose()


def _scopes(given: list[str]) -> list[str]:
    found = [s.strip() for item in given for s in item.replace(",", "+").split("+") if s.strip()]
    unknown = sorted(set(found) - set(SCOPES))
    if unknown or not found:
        raise typer.BadParameter(
            f"unknown scope {', '.join(unknown) or '(none)'}: use {', '.join(SCOPES)}",
            param_hint="--scope",
        )
    return sorted(set(found))


@keys_app.command("create")
def create(
    scope: Annotated[
        list[str], typer.Option("--scope", help="A scope (repeat): " + ", ".join(SCOPES) + ".")
    ],
    more: Annotated[
        list[str] | None, typer.Argument(help="More scopes (--scope read pii).", hidden=True)
    ] = None,
    name: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 90d.")] = None,
    config: ConfigOption = None,
) -> None:
    """Make an API key: printed once (standard output), stored hashed.

    ``--scope read --scope pii``, ``--scope read pii`` and ``--scope read+pii`` alike.
    """
    from tidings.store import audit as audit_rows
    from tidings.store import keys as key_rows

    scopes = _scopes([*scope, *(more or [])])
    try:
        lifetime = None if expires is None else parse_duration(expires)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires") from exc
    key = "tid_" + secrets.token_urlsafe(32)
    now = time.time()
    until = None if lifetime is None else now + lifetime

    async def store_key(store: Any) -> key_rows.ApiKey:
        async def add(conn: Any) -> key_rows.ApiKey:
            made: key_rows.ApiKey = await key_rows.add_key(
                conn, key, scopes, "created", now, name=name, expires_at=until
            )
            await audit_rows.record(conn, audit_rows.CLI, "keys create", made.id, now)
            return made

        made: key_rows.ApiKey = await store.write(add)
        return made

    made = asyncio.run(_with_store(config, store_key))
    _err.print(
        f"created {made.id} ({'+'.join(scopes)}"
        f"{', expires ' + _when(until) if until else ''}): the key is shown once"
    )
    print(key)


@keys_app.command("list")
def list_keys(config: ConfigOption = None) -> None:
    """Every stored key: id, name, scopes, origin and times; never the key."""
    from tidings.store import keys as key_rows

    async def read(store: Any) -> tuple[dict[str, key_rows.ApiKey], str]:
        async with store.read() as conn:
            found: dict[str, key_rows.ApiKey] = await key_rows.all_keys(conn)
        return found, store.cipher.active_id

    keys, pii_key = asyncio.run(_with_store(config, read))
    table = Table(title="API keys")
    for column in ("id", "name", "scopes", "origin", "created", "expires", "last used", "revoked"):
        table.add_column(column)
    for key in keys.values():
        table.add_row(
            key.id,
            key.name or "-",
            "+".join(sorted(key.scopes)),
            key.label,
            _when(key.created_at),
            _when(key.expires_at),
            _when(key.last_used_at),
            _when(key.revoked_at),
        )
    Console(width=200).print(table)
    _err.print(f"PII is encrypted with key {pii_key} (tidings keys rotate-pii makes a new one)")


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (tidings keys list).")],
    config: ConfigOption = None,
) -> None:
    """Revoke a key: every running process refuses it within a second or two."""
    from tidings.store import audit as audit_rows
    from tidings.store import keys as key_rows

    async def revoke_one(conn: Any) -> key_rows.ApiKey | None:
        now = time.time()
        found: key_rows.ApiKey | None = await key_rows.revoke(conn, key_id, now)
        if found is not None:
            await audit_rows.record(conn, audit_rows.CLI, "keys revoke", key_id, now)
        return found

    async def work(store: Any) -> key_rows.ApiKey | None:
        found: key_rows.ApiKey | None = await store.write(revoke_one)
        return found

    found = asyncio.run(_with_store(config, work))
    if found is None:
        _err.print(f"[red]no API key {key_id}[/red]")
        raise typer.Exit(1)
    if found.label == "config":
        _err.print("[yellow]a configured key: remove it from the config too[/yellow]")
    _err.print(f"revoked {key_id}")


@keys_app.command("rotate-pii")
def rotate_pii(
    settle: Annotated[
        float, typer.Option(help="Seconds for running processes to learn each key change.")
    ] = 3.0,
    force: Annotated[
        bool, typer.Option(help="Rotate although an earlier rotation is unfinished.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Re-encrypt every PII field under a new key; reads keep working throughout."""
    from tidings.runtime.rotation import rotate_pii as rotate

    async def work(store: Any) -> Any:
        from tidings.store import audit as audit_rows

        done = await rotate(store, settle, _err.print, force=force)
        await store.write(
            lambda conn: audit_rows.record(
                conn, audit_rows.CLI, "keys rotate-pii", done.key_id, time.time()
            )
        )
        return done

    try:
        done = asyncio.run(_with_store(config, work))
    except Conflict as exc:
        _err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    retired = ", ".join(done.retired) or "none"
    _err.print(f"PII key {done.key_id}: {done.fields} fields re-encrypted; retired: {retired}")


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
