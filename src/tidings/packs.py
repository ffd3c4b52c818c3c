"""The rule packs ``tidings init`` writes: the built-in e-commerce pack, per region.

``--region cn`` lays ``rules/china.yaml`` over the pack: China's providers, WeChat and SMS in
the buyers' rules (by rule id), and the approved ``sms``/``wechat`` template variants beside
the pack's locales (SPEC §12).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from tidings.config import builtin_config_text, parse_yaml
from tidings.errors import ConfigError

REGIONS = ("global", "cn")


def china_pack() -> dict[str, Any]:
    """The e-commerce pack with the China overlay applied."""
    pack: dict[str, Any] = parse_yaml(builtin_config_text())
    overlay = parse_yaml(resources.files("tidings.rules").joinpath("china.yaml").read_text("utf-8"))
    pack["default_locale"] = overlay["default_locale"]
    pack["providers"] = overlay["providers"]
    changes = overlay["rules"]
    pack["rules"] = [{**rule, **changes.get(rule["id"], {})} for rule in pack["rules"]]
    for name, variants in overlay["templates"].items():
        pack["templates"][name].update(variants)
    return pack


def pack_text(region: str = "global") -> str:
    """The config ``tidings init --region REGION`` writes, as YAML text."""
    if region == "global":
        return builtin_config_text()
    if region == "cn":
        header = resources.files("tidings.rules").joinpath("china.yaml").read_text("utf-8")
        lines = header.splitlines()
        leading = next(i for i, line in enumerate(lines) if not line.startswith("#"))
        comment = "".join(line + "\n" for line in lines[:leading])
        body = yaml.safe_dump(china_pack(), allow_unicode=True, sort_keys=False, width=100)
        return comment + body
    raise ConfigError(f"unknown region {region!r} (known: {', '.join(REGIONS)})", "--region")
