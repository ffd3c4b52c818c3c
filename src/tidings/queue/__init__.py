"""The queue between decision and delivery: a contract (``base``) and its backends."""
