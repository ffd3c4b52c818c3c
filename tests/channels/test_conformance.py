"""The statically checked provider list (tidings.channels.conformance) matches the registry."""

from __future__ import annotations

from tidings.channels.conformance import CONFORMING
from tidings.channels.registry import PROVIDER_KINDS, provider_class


def test_every_registered_provider_is_checked_by_mypy() -> None:
    # a kind registered but missing from CONFORMING would escape mypy's protocol check
    assert set(CONFORMING) == set(PROVIDER_KINDS)
    for kind, factory in CONFORMING.items():
        assert factory is provider_class(kind), kind


def test_each_provider_class_declares_its_kind() -> None:
    for kind, factory in CONFORMING.items():
        assert isinstance(factory, type)
        assert factory.kind == kind
        assert kind in PROVIDER_KINDS
