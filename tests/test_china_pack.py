"""``tidings init --region cn``: the China deployment config, and ``tidings check`` passing it."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.test_cli import tidings
from tidings.config import parse_yaml


def test_init_region_cn_writes_a_china_config_that_checks(tmp_path: Path) -> None:
    written = tidings("init", "--region", "cn", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    config = parse_yaml((tmp_path / "tidings.yaml").read_text("utf-8"))
    kinds = {
        channel: [p["kind"] for p in entries] for channel, entries in config["providers"].items()
    }
    assert kinds["push"][:4] == ["hms", "xiaomi", "oppo", "vivo"]
    assert kinds["sms"] == ["aliyun_sms", "tencent_sms"]
    assert kinds["wechat"] == ["wechat"]
    rules = {rule["id"]: rule for rule in config["rules"]}
    assert rules["order-paid-buyer"]["channels"] == ["push", "wechat", "inapp"]
    assert config["templates"]["order_paid"]["sms"]["template_code"].startswith("${")
    checked = tidings("check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_check_fails_the_china_config_without_an_sms_variant(tmp_path: Path) -> None:
    tidings("init", "--region", "cn", cwd=tmp_path)
    path = tmp_path / "tidings.yaml"
    config = parse_yaml(path.read_text("utf-8"))
    del config["templates"]["payment_failed"]["sms"]
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    checked = tidings("check", cwd=tmp_path)
    assert checked.returncode == 1
    output = checked.stdout + checked.stderr
    assert "payment_failed" in output and "aliyun_sms" in output


def test_an_unknown_region_is_refused(tmp_path: Path) -> None:
    assert tidings("init", "--region", "mars", cwd=tmp_path).returncode == 2
    assert not (tmp_path / "tidings.yaml").exists()
