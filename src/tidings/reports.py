"""What the CLI prints: the rule table, dead letters and config problems, usable at 80 columns.

Ids are never cut (a dead letter's id is pasted into ``tidings dlq replay``); other cells
wrap rather than end in an ellipsis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tidings.config import RuleSettings, Settings
from tidings.durations import format_duration
from tidings.errors import ConfigError, ConfigProblems


def _table(title: str, *columns: str, whole: Sequence[str] = ()) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        if column in whole:
            table.add_column(column, no_wrap=True, overflow="ignore")
        else:
            table.add_column(column, overflow="fold")
    return table


def rule_table(settings: Settings) -> Table:
    """One row per rule: its whole id, then what it does, a line per aspect."""
    table = _table(f"rules ({settings.source})", "id", "what it does", whole=("id",))
    for rule in settings.rules:
        channels = ", ".join(rule.channels)
        if rule.fallback:
            channels += "; fallback " + ", ".join(rule.fallback)
        locales = ", ".join(settings.templates.get(rule.template, {}))
        lines = [
            f"{rule.on} → {rule.to}, {rule.category} ({rule.priority})",
            f"on {channels}",
            f"template {rule.template} ({locales})",
            *_timing(rule),
        ]
        table.add_row(rule.id, "\n".join(lines), end_section=True)
    return table


def _timing(rule: RuleSettings) -> list[str]:
    timing = []
    if rule.delay:
        timing.append(f"delay {format_duration(rule.delay)}")
    if rule.cancel_on:
        timing.append("cancel on " + ", ".join(rule.cancel_on))
    if rule.digest:
        timing.append(f"digest {format_duration(rule.digest.window)}")
    if rule.ttl:
        timing.append(f"ttl {format_duration(rule.ttl)}")
    return timing


def dead_letter_table(rows: Sequence[Any]) -> Table:
    """Dead letters with their whole ids (to paste into ``tidings dlq replay``)."""
    table = _table("dead letters", "id", "channel", "reason", whole=("id",))
    for row in rows:
        via = row.channel + (f" ({row.provider})" if row.provider else "")
        table.add_row(row.id, via, f"{row.reason}\ndelivery {row.delivery_id}")
    return table


def print_config_problems(console: Console, exc: ConfigError, label: str = "error") -> None:
    """Each problem on a line of its own."""
    found = exc.problems if isinstance(exc, ConfigProblems) else [exc]
    for problem in found:
        console.print(f"[red]{label}[/red] {escape(str(problem))}", highlight=False)
    if len(found) > 1:
        console.print(f"{len(found)} problems")
