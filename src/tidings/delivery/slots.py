"""The providers a dispatcher sends through, each in a :class:`Slot` with its limits and breaker.

Per channel, the config's provider list is the failover order; a channel with none configured
gets the console provider (one, shared by every such channel).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidings.channels.base import Provider, ProviderContext
from tidings.channels.registry import build_provider
from tidings.clock import Clock
from tidings.config import ProviderSettings, RetrySettings, Settings
from tidings.delivery.breaker import Breaker, EndpointBreakers
from tidings.durations import parse_duration
from tidings.errors import ConfigError
from tidings.ratelimit import Gate, RateLimit
from tidings.vocabulary import CHANNELS, Channel


@dataclass(slots=True)
class Slot:
    """One provider with its limits and breaker."""

    provider: Provider
    retry: RetrySettings
    timeout: float
    breaker: Breaker
    gate: Gate
    limit: RateLimit | None
    blames_provider: bool = True
    """Whether a transient failure counts against the provider's breaker. Not for webhooks:
    there the endpoint is the subscriber's, and one seller's broken ERP must not open the
    circuit for every other seller."""
    endpoints: EndpointBreakers | None = None
    """Webhooks: a breaker per endpoint host, blamed instead of the provider's."""


def build_slots(
    settings: Settings, clock: Clock, base_dir: Path | None = None
) -> dict[Channel, list[Slot]]:
    """A slot per configured provider, by channel in failover order (in-app has none)."""
    delivery = settings.delivery
    slots: dict[Channel, list[Slot]] = {}
    console: Slot | None = None
    for channel in CHANNELS:
        if channel == "inapp":
            continue
        built = []
        for entry in settings.providers.get(channel) or []:
            timeout = entry.timeout or delivery.timeout
            context = ProviderContext(base_dir=base_dir or Path.cwd(), timeout=timeout)
            built.append(_slot(build_provider(entry, context), entry, timeout, settings, clock))
        if not built:
            if console is None:
                context = ProviderContext(timeout=delivery.timeout)
                entry = ProviderSettings(kind="console", name="console")
                provider = build_provider(entry, context)
                console = _slot(provider, entry, delivery.timeout, settings, clock)
            built = [console]
        slots[channel] = built
    return slots


def _slot(
    provider: Provider, entry: ProviderSettings, timeout: float, settings: Settings, clock: Clock
) -> Slot:
    delivery = settings.delivery
    breaker = breaker_from(entry.option("breaker"), clock)
    return Slot(
        provider=provider,
        retry=entry.retry or delivery.retry,
        timeout=timeout,
        breaker=breaker,
        gate=Gate(entry.concurrency or delivery.concurrency),
        limit=RateLimit(entry.rate_limit) if entry.rate_limit else None,
        blames_provider=provider.channel != "webhook",
        endpoints=EndpointBreakers.like(breaker) if provider.channel == "webhook" else None,
    )


def breaker_from(options: Any, clock: Clock) -> Breaker:
    """The breaker a provider entry's ``breaker: {threshold, cooldown}`` asks for."""
    if not options:
        return Breaker(clock)
    if not isinstance(options, dict):
        raise ConfigError("breaker must be a mapping {threshold, cooldown}", "breaker")
    unknown = set(options) - {"threshold", "cooldown"}
    if unknown:
        raise ConfigError(f"unknown breaker keys: {sorted(unknown)}", "breaker")
    threshold = int(options.get("threshold", 5))
    cooldown = parse_duration(options.get("cooldown", 10.0))
    if threshold < 1 or cooldown <= 0:
        raise ConfigError("breaker threshold must be >= 1 and cooldown > 0", "breaker")
    return Breaker(clock, threshold=threshold, cooldown=cooldown)
