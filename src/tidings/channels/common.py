"""Small helpers the push providers share: settings paths and payload overrides."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def resolve_path(value: str, base_dir: Path) -> Path:
    """A settings file name, relative ones against the config's directory."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in recursively (override wins on leaves)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
