"""``tidings check`` for the pre-approved templates China's providers send by (SPEC §12).

A template's ``sms`` variant (``{template_code, params}``) and ``wechat`` variant
(``{template_id, page, data}``) must be well formed, and a rule whose ``sms`` goes through
``aliyun_sms`` or ``tencent_sms`` (or whose ``wechat`` goes through ``wechat``) must use a
template that has the variant: those providers send nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tidings.config import Settings
from tidings.errors import ConfigError

NEEDS_VARIANT = {"sms": frozenset({"aliyun_sms", "tencent_sms"}), "wechat": frozenset({"wechat"})}
"""Channel → the provider kinds on it that send only approved templates."""
SHAPES = {
    "sms": ("template_code", "params", "{template_code: SMS_123, params: {order: ...}}"),
    "wechat": ("template_id", "data", "{template_id: ..., page: ..., data: {thing1: ...}}"),
}
"""Variant → its required id key, its mapping of strings, and how it is spelt."""


def _strings(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def shape_problems(name: str, template: Mapping[str, Any]) -> list[ConfigError]:
    """What is wrong with the ``sms``/``wechat`` variants of template ``name``."""
    problems = []
    for key, (ident, strings, spelt) in SHAPES.items():
        if key not in template:
            continue
        path = f"templates.{name}.{key}"
        found = template[key]
        if not isinstance(found, Mapping) or not isinstance(found.get(ident), str):
            problems.append(ConfigError(f"needs `{ident}`: {key}: {spelt}", path))
            continue
        if not _strings(found.get(strings) or {}):
            problems.append(ConfigError(f"`{strings}` maps names to template text", path))
        if key == "wechat" and not isinstance(found.get("page", ""), str):
            problems.append(ConfigError("`page` is a mini-program path", f"{path}.page"))
    return problems


def variant_problems(settings: Settings) -> list[ConfigError]:
    """Malformed variants, and rules whose provider needs a variant their template lacks."""
    problems: list[ConfigError] = []
    for name, template in settings.templates.items():
        problems += shape_problems(name, template)
    for index, rule in enumerate(settings.rules):
        used = settings.templates.get(rule.template)
        if used is None:
            continue  # an unknown template is reported by the reference check
        for channel in dict.fromkeys([*rule.channels, *rule.fallback]):
            kinds = NEEDS_VARIANT.get(channel, frozenset())
            strict = [p.kind for p in settings.providers.get(channel) or [] if p.kind in kinds]
            if strict and channel not in used:
                problems.append(
                    ConfigError(
                        f"{channel} goes through {', '.join(strict)}, which sends only approved "
                        f"templates: template {rule.template!r} needs a `{channel}` variant "
                        f"({channel}: {SHAPES[channel][2]})",
                        f"rules[{index}].template",
                    )
                )
    return problems
