"""The test bed: real tidings processes, real PostgreSQL and RabbitMQ, for tests and benchmarks.

``harness`` starts and stops ``tidings serve`` as a user would; ``services`` brings up the
PostgreSQL and RabbitMQ nodes of ``scripts/services.sh`` (and is the tests' pytest plugin for
them); ``cluster`` runs scale-out mode (an API and workers) on them. The benchmarks use the
same pieces as the tests, so neither imports the other.
"""
