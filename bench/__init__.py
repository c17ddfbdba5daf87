"""Benchmarks for the performance bars: throughput, deadlines, coalescing, ETag hits, event fan-out, actions,
hostile clients, provider rate budgets and the Redis engine (docs/performance.md has the latest figures).

``python -m bench`` runs them all (``--smoke``: a quick pass).

Each benchmark prints its figures and one ``ratio <name>: <value> (bar ...) ok|MISSED`` line.
"""
