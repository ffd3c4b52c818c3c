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


def test_check_reports_every_error_at_once(tmp_path: Path) -> None:
    (tmp_path / "tidings.yaml").write_text(
        "categories: {c: {}}\n"
        "rules:\n"
        "  - {id: a, on: order.paid, channels: [inapp], template: nosuch, category: c}\n"
        "  - {id: b, on: order.paid, channels: [inapp], template: t, category: nosuch}\n"
        "  - {id: c, on: order.paid, channels: [inapp], template: t, category: c, delay: 1m,\n"
        "     cancel_on: [order.paid]}\n"
        "templates:\n"
        "  t: {en-US: {title: '{{ order_id | nosuchfilter }}', body: b}}\n"
        "  u: {en-US: {title: '{{ x }', body: b}, zh-CN: {title: '{{ typo }}', body: b}}\n"
    )
    checked = tidings("check", cwd=tmp_path)
    assert checked.returncode == 1
    for path in (
        "rules[0].template",
        "rules[1].category",
        "rules[2].cancel_on[0]",
        "templates.t.en-US",
        "templates.u.en-US",
        "templates.u.zh-CN",
    ):
        assert path in checked.stderr, checked.stderr
    assert "6 problems" in checked.stderr


def test_a_rule_naming_no_category_is_told_what_to_add(tmp_path: Path) -> None:
    (tmp_path / "tidings.yaml").write_text(
        "rules: [{id: paid-note, on: order.paid, channels: [inapp], template: t}]\n"
        "templates: {t: {en-US: {title: a, body: b}}}\n"
    )
    checked = tidings("check", cwd=tmp_path)
    assert checked.returncode == 1
    assert "rule 'paid-note' names no category" in checked.stderr
    assert "add `category: <name>` to the rule" in checked.stderr
    served = tidings("serve", "--processes", "1", "--port", "1", cwd=tmp_path)
    assert served.returncode == 2
    assert "rule 'paid-note' names no category" in served.stderr


def test_a_template_testing_an_optional_field_passes_check_and_renders_alike(
    tmp_path: Path,
) -> None:
    from tidings.templates import Templates

    title = "Paid{% if paid_at %} at {{ paid_at }}{% endif %}{{ note | default('') }}"
    (tmp_path / "tidings.yaml").write_text(
        "categories: {c: {}}\n"
        "rules: [{id: r, on: order.paid, channels: [inapp], template: t, category: c}]\n"
        f'templates: {{t: {{en-US: {{title: "{title}", body: "{{{{ order_id }}}}"}}}}}}\n'
    )
    checked = tidings("check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    served = Templates({"t": {"en-US": {"title": title, "body": "b"}}}, "en-US")
    assert served.render("t", "en-US", {})[1]["title"] == "Paid"
    assert served.render("t", "en-US", {"paid_at": "noon"})[1]["title"] == "Paid at noon"
    # a field printed without a test is still a typo to check
    (tmp_path / "tidings.yaml").write_text(
        (tmp_path / "tidings.yaml").read_text().replace("{{ order_id }}", "{{ ordr_id }}")
    )
    assert tidings("check", cwd=tmp_path).returncode == 1


def test_check_keeps_whole_rule_ids_at_80_columns(tmp_path: Path) -> None:
    checked = tidings("check", cwd=tmp_path, env={"COLUMNS": "80"})
    assert checked.returncode == 0, checked.stderr
    lines = checked.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in checked.stdout
    from tidings.config import load_settings

    for rule in load_settings(None, {}).rules:
        assert any(line.split()[:1] == [rule.id] for line in lines), rule.id


def test_dlq_lists_whole_ids_at_80_columns_and_replay_of_an_unknown_id_fails(
    tmp_path: Path,
) -> None:
    import asyncio

    from tidings.ids import new_id
    from tidings.store import Store
    from tidings.store.tables import dead_letters

    url = f"sqlite:///{tmp_path / 't.db'}"
    dead = [new_id() for _ in range(2)]

    async def bury() -> None:
        store = Store.open(url, None)
        await store.start()
        try:
            async with store.engine.begin() as conn:
                for dead_id in dead:
                    await conn.execute(
                        dead_letters.insert().values(
                            id=dead_id,
                            delivery_id=new_id(),
                            channel="webhook",
                            provider="webhook",
                            reason="HTTP 500 from the endpoint after 8 attempts " * 2,
                            created_at=0.0,
                        )
                    )
        finally:
            await store.aclose()

    asyncio.run(bury())
    env = {"TIDINGS_DATABASE_URL": url, "COLUMNS": "80"}
    listed = tidings("dlq", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80
    for dead_id in dead:
        assert dead_id in listed.stdout.split()
    assert tidings("dlq", "replay", "nosuch-id", cwd=tmp_path, env=env).returncode != 0
    assert tidings("dlq", "replay", dead[0], cwd=tmp_path, env=env).returncode == 0
    assert tidings("dlq", "replay", dead[0], cwd=tmp_path, env=env).returncode != 0


def test_demo_takes_the_admin_key_the_readme_exports(tmp_path: Path) -> None:
    import os

    from testbed.harness import Server

    server = Server(tmp_path).start()
    try:
        env = {k: v for k, v in os.environ.items() if k != "TIDINGS_API_KEY"}
        ran = subprocess.run(
            [sys.executable, "-m", "tidings.cli", "demo", "--url", server.url]
            + ["--rate", "5", "--duration", "1"],
            cwd=tmp_path,
            text=True,
            capture_output=True,
            env={**env, "TIDINGS_ADMIN_KEY": server.admin_key, "COLUMNS": "100"},
            timeout=120,
        )
    finally:
        server.stop()
    assert ran.returncode == 0, ran.stderr[-2000:]


def test_start_up_prints_no_alembic_lines_before_the_banner(tmp_path: Path) -> None:
    import os
    import time

    from testbed.harness import free_port, kill_process, track

    for processes in (["--processes", "1"], []):  # [] = the default: every core
        log = tmp_path / f"serve{len(processes)}.log"
        with log.open("wb") as out:
            server = track(
                subprocess.Popen(
                    [sys.executable, "-m", "tidings.cli", "serve", "--port", str(free_port())]
                    + processes,
                    cwd=tmp_path,
                    env={
                        **os.environ,
                        "TIDINGS_LOG_LEVEL": "INFO",
                        "TIDINGS_DATABASE_URL": f"sqlite:///{tmp_path / f'{len(processes)}.db'}",
                    },
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        try:
            deadline = time.monotonic() + 60
            while "listening on" not in log.read_text() and time.monotonic() < deadline:
                assert server.poll() is None, log.read_text()
                time.sleep(0.05)
        finally:
            kill_process(server)
        text = log.read_text()
        assert "listening on" in text, text
        before = text.split("tidings all")[0]
        assert "alembic" not in before.lower() and " INFO " not in before, text
