"""Reachability checks for the real services tests use (PostgreSQL and Redis on loopback).

Outside CI a missing service skips the test with a clear reason; with ``CI=true`` it fails, so a broken CI
machine is never mistaken for a green run.
"""

from __future__ import annotations

import os
import socket
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_DSN = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/test"
REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def missing(reason: str) -> NoReturn:
    """Skip with ``reason``; under ``CI=true`` fail instead."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: required services must be running)")
    pytest.skip(reason)


def require_postgres(dsn: str = POSTGRES_DSN) -> str:
    """Return ``dsn`` when PostgreSQL answers ``select 1``; otherwise skip (or fail under ``CI=true``)."""
    where = urlsplit(dsn)
    reason = f"PostgreSQL not reachable on {where.hostname}:{where.port or 5432}"
    try:
        import psycopg
    except ImportError:
        missing(f"{reason} (psycopg is not installed)")
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("select 1")
    except psycopg.Error:
        missing(reason)
    return dsn


def require_redis(url: str = REDIS_URL) -> str:
    """Return ``url`` when Redis accepts a TCP connection and answers PING; otherwise skip (or fail in CI)."""
    where = urlsplit(url)
    host, port = where.hostname or REDIS_HOST, where.port or REDIS_PORT
    reason = f"Redis not reachable on {host}:{port}"
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        missing(reason)
    try:
        import redis
    except ImportError:
        missing(f"{reason} (redis-py is not installed)")
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        if not client.ping():
            missing(reason)
    except redis.RedisError:
        missing(reason)
    finally:
        client.close()
    return url
