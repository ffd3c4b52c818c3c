"""Delivery: the dispatcher between the queue and the providers."""
