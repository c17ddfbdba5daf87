import pytest

from tests.web.mounts import mount

__all__ = ["mount"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
