"""The domain's words: channels, priorities and lanes, destination kinds, statuses.

A leaf: it imports nothing from tidings, so every layer (config, strategy, templates, store,
channels, queue, delivery, runtime, api) takes its words from here and none of them has to
reach up or sideways for a type (``tests/test_layers.py`` holds the layer order).
"""

from __future__ import annotations

from typing import Literal, get_args

Channel = Literal["inapp", "email", "sms", "push", "webhook", "wechat"]
"""A delivery channel (SPEC §4): ``inapp`` is the inbox; the others go through a provider."""
CHANNELS: tuple[Channel, ...] = get_args(Channel)

Priority = Literal["high", "normal", "low"]
"""A rule's priority: it names the lane its deliveries travel on."""
Lane = Priority
"""A queue lane, one per priority: a backlog on ``low`` never delays ``high``."""
LANES: tuple[Lane, ...] = ("high", "normal", "low")

DestinationKind = Literal[
    "inapp", "email", "phone", "fcm", "apns", "webpush", "webhook",
    "hms", "xiaomi", "oppo", "vivo", "wechat",
]  # fmt: skip
"""What an address is: an email address, an E.164 phone number, a device token of one kind …"""
PUSH_KINDS: tuple[str, ...] = ("fcm", "apns", "webpush", "hms", "xiaomi", "oppo", "vivo")
"""Device kinds: each names the push provider kind that serves it."""
TEMPLATE_VARIANTS: tuple[str, ...] = ("sms", "wechat")
"""Template keys beside the locales naming a pre-approved template (SPEC §12), by channel."""

DeliveryStatus = Literal[
    "pending", "scheduled", "sending", "sent", "delivered", "failed", "suppressed",
    "cancelled", "expired", "dead",
]  # fmt: skip
"""Where one delivery (one notification on one channel) stands (SPEC §9)."""
DELIVERY_STATUSES: tuple[DeliveryStatus, ...] = get_args(DeliveryStatus)

NotificationStatus = Literal["created", "scheduled", "cancelled", "expired"]
"""Where one notification stands: ``scheduled`` until due, then ``created`` (its deliveries
carry the rest), or ``cancelled``/``expired`` before it was due."""
