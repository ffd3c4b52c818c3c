"""Broadcasts: one message to an audience, every recipient through the one decision (SPEC §10).

``job`` turns a stored broadcast into what each recipient is decided with (a rule, the
templates, the event); ``fanout`` decides a chunk of recipients and builds its rows; the loop
that claims chunks is :mod:`tidings.runtime.broadcaster`.
"""
