"""Drive ``tidings keys …`` against a test server's database, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys

from testbed.harness import Server


def keys(server: Server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``tidings keys ARGS`` with the server's environment (its database)."""
    done = subprocess.run(
        [sys.executable, "-m", "tidings.cli", "keys", *args],
        cwd=server.workdir,
        env={**server.env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def create(
    server: Server, *scopes: str, name: str | None = None, expires: str | None = None
) -> str:
    """A new key with ``scopes`` (printed once on standard output)."""
    args = [arg for scope in scopes for arg in ("--scope", scope)]
    if name:
        args += ["--name", name]
    if expires:
        args += ["--expires", expires]
    key = keys(server, "create", *args).stdout.strip()
    assert key.startswith("tid_") and len(key) >= 24
    return key


def key_id(server: Server, name: str) -> str:
    """The id ``tidings keys list`` shows for the key named ``name``."""
    for line in keys(server, "list").stdout.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 3 and cells[2] == name:
            return cells[1]
    raise AssertionError(f"no key named {name!r}")


def private(path: os.PathLike[str] | str) -> bool:
    """Whether ``path`` is readable and writable by its owner alone."""
    return os.stat(path).st_mode & 0o777 == 0o600
