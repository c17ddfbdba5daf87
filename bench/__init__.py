"""Benchmarks for the numbers of SPEC.md section 3.

``python -m bench`` runs them all (``--smoke``: a quick pass).

Each benchmark prints its figures and one ``ratio <name>: <value> (bar ...) ok|MISSED`` line.
"""
