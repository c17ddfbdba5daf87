"""The framework-free core: pure decisions over frozen values, and the classes that orchestrate them.

Nothing here imports httpx, starlette, flask, redis or psycopg.
"""
