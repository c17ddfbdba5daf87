"""The service checks used by tests: skip outside CI, fail under CI=true, pass through when reachable."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from tests.services import require_postgres, require_redis


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _unreachable() -> list[tuple[Callable[[str], str], str, str]]:
    port = _closed_port()
    return [
        (
            require_postgres,
            f"postgresql://postgres@127.0.0.1:{port}/test",
            f"PostgreSQL not reachable on 127.0.0.1:{port}",
        ),
        (require_redis, f"redis://127.0.0.1:{port}/0", f"Redis not reachable on 127.0.0.1:{port}"),
    ]


@pytest.mark.parametrize(("check", "address", "reason"), _unreachable())
def test_missing_service_skips_outside_ci(
    check: Callable[[str], str], address: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without CI=true an unreachable service skips with a reason naming host and port."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=reason):
        check(address)


@pytest.mark.parametrize(("check", "address", "reason"), _unreachable())
def test_missing_service_fails_in_ci(
    check: Callable[[str], str], address: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With CI=true an unreachable service fails the test instead of skipping it."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=reason):
        check(address)


@pytest.mark.parametrize("check", [require_postgres, require_redis])
def test_reachable_service_returns_its_address(check: Callable[[], str]) -> None:
    """A running service passes the check, which hands back the address to use."""
    assert check().startswith(("postgresql://", "redis://"))
