"""The command line: init, check, token."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jwt


def tidings(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "tidings.cli", *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_init_then_check_passes(tmp_path: Path) -> None:
    assert tidings("init", cwd=tmp_path).returncode == 0
    assert (tmp_path / "tidings.yaml").exists()
    assert tidings("init", cwd=tmp_path).returncode == 1  # never overwrites silently
    checked = tidings("check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "order-paid-buyer" in checked.stdout and "ok:" in checked.stdout


def test_check_names_the_broken_template(tmp_path: Path) -> None:
    tidings("init", cwd=tmp_path)
    config = tmp_path / "tidings.yaml"
    config.write_text(
        config.read_text().replace(
            'title: "Delivered"', 'title: "Delivered {{ order_id | nosuchfilter }}"'
        )
    )
    checked = tidings("check", cwd=tmp_path)
    assert checked.returncode == 1
    assert "templates.order_delivered.en-US" in checked.stderr


def test_check_names_the_broken_rule(tmp_path: Path) -> None:
    (tmp_path / "tidings.yaml").write_text(
        "categories: {c: {}}\nrules: [{id: r, on: order.paid, channels: [fax], template: t, "
        "category: c}]\ntemplates: {t: {en-US: {title: a, body: b}}}\n"
    )
    checked = tidings("check", cwd=tmp_path)
    assert checked.returncode == 2
    assert "rules[0].channels[0]" in checked.stderr


def test_token_is_signed_with_the_inbox_secret(tmp_path: Path) -> None:
    minted = tidings(
        "token",
        "buyer-1",
        "--ttl",
        "10m",
        cwd=tmp_path,
        env={
            "TIDINGS_INBOX_SECRET": "s" * 32,
            "TIDINGS_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}",
        },
    )
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(minted.stdout.strip(), "s" * 32, algorithms=["HS256"])
    assert claims["sub"] == "buyer-1" and claims["exp"] - claims["iat"] == 600
