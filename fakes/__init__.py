"""Fake provider servers that speak the real protocols (APNs, FCM, Web Push, Twilio, SMTP, the
China makers and SMS services, WeChat, webhook receivers), and what their tests share.

Used by the tests and by the benchmarks alike: neither imports the other.
"""
