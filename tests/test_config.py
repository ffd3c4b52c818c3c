"""Config loading: YAML 1.2 booleans, interpolation, env overrides, key paths in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.config import load_settings, parse_yaml
from tidings.durations import format_duration, parse_duration
from tidings.errors import ConfigError

MINIMAL = """
categories: {order_updates: {required: true}}
rules:
  - id: r1
    on: order.paid
    to: buyer
    channels: [inapp]
    template: t
templates:
  t: {en-US: {title: "Paid", body: "Order {{ order_id }}"}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tidings.yaml"
    path.write_text(text)
    return path


def test_bare_on_stays_a_string() -> None:
    assert parse_yaml("on: order.paid\noff: yes\nx: true") == {
        "on": "order.paid",
        "off": "yes",
        "x": True,
    }


def test_config_with_rules_gets_exactly_those(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, MINIMAL), env={})
    assert [rule.id for rule in settings.rules] == ["r1"]
    assert settings.rules[0].on == "order.paid"


def test_no_config_is_the_builtin_pack() -> None:
    settings = load_settings(None, env={})
    assert settings.source == "built-in"
    assert {"order.paid", "refund.requested", "review.created"} <= {r.on for r in settings.rules}
    assert settings.categories["order_updates"].required


def test_interpolation_and_env_overrides(tmp_path: Path) -> None:
    text = MINIMAL + 'api_keys: [{key: "${SHOP_KEY}", scopes: [events]}, {key: "${UNSET}"}]\n'
    env = {
        "SHOP_KEY": "k1",
        "TIDINGS_DATABASE_URL": "sqlite:////tmp/x.db",
        "TIDINGS_API_KEYS": "k2:read+events,k3",
        "TIDINGS_BROKER_URL": "amqp://guest@h/",
    }
    settings = load_settings(write(tmp_path, text), env=env)
    assert settings.database == "sqlite:////tmp/x.db"
    assert settings.broker == "amqp://guest@h/"
    assert [(k.key, k.scopes) for k in settings.api_keys] == [
        ("k1", ["events"]),
        ("k2", ["read", "events"]),
        ("k3", ["admin"]),
    ]


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        (("channels: [inapp]", "channels: [pigeon]"), "rules[0].channels[0]"),
        (("template: t", "template: missing"), "rules[0].template"),
        (("to: buyer", "to: buyer\n    category: nope"), "rules[0].category"),
        (("to: buyer", "to: buyer\n    delay: soon"), "rules[0].delay"),
        (("to: buyer", "to: buyer\n    priority: urgent"), "rules[0].priority"),
    ],
)
def test_errors_name_the_key_path(tmp_path: Path, patch: tuple[str, str], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, MINIMAL.replace(*patch)), env={})
    assert caught.value.path == path


def test_durations() -> None:
    assert [parse_duration(v) for v in ("250ms", "10s", "15m", "24h", "3d")] == [
        0.25,
        10,
        900,
        86400,
        259200,
    ]
    assert format_duration(900) == "15m"
    with pytest.raises(ValueError):
        parse_duration("5 minutes")
