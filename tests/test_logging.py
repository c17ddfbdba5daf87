"""The library logs through the standard library and never configures logging or structlog itself."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from integration_status._logging import capture_logs, get_logger
from integration_status.core.breaker import CircuitBreaker
from integration_status.testing import FakeClock


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> list[logging.LogRecord]:
    handler = _Records()
    library = logging.getLogger("integration_status")
    library.addHandler(handler)
    yield handler.records  # type: ignore[misc]
    library.removeHandler(handler)
    library.setLevel(logging.NOTSET)


def _boom() -> None:
    raise RuntimeError("boom")


def _open_breaker() -> None:
    breaker = CircuitBreaker(clock=FakeClock(), name="github")
    for _ in range(3):
        breaker.record(success=False, duration=0.1)


def test_lines_go_to_a_stdlib_logger_under_integration_status(records: list[logging.LogRecord]) -> None:
    """A breaker transition is a record of the ``integration_status.core.breaker`` logger, readable as text."""
    logging.getLogger("integration_status").setLevel(logging.INFO)
    _open_breaker()
    (record,) = records
    assert record.name == "integration_status.core.breaker"
    assert record.levelno == logging.INFO
    assert record.getMessage() == "integration_status.breaker.opened provider=github previous=closed"


def test_the_hosts_level_decides(records: list[logging.LogRecord]) -> None:
    """With the library's logger at WARNING (the default), info lines are dropped before any processing."""
    logging.getLogger("integration_status").setLevel(logging.WARNING)
    _open_breaker()
    get_logger("integration_status.test").warning("integration_status.test.warned", project="p")
    assert [r.getMessage() for r in records] == ["integration_status.test.warned project=p"]


def test_values_with_spaces_are_quoted_and_exceptions_attached(records: list[logging.LogRecord]) -> None:
    """A value with spaces is quoted; ``exception()`` puts the traceback on the record for any formatter."""
    try:
        _boom()
    except RuntimeError:
        get_logger("integration_status.test").exception("integration_status.test.failed", reason="two words")
    (record,) = records
    assert record.getMessage() == "integration_status.test.failed reason='two words'"
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError
    assert "RuntimeError: boom" in logging.Formatter().format(record)


def test_names_outside_the_package_are_put_under_it() -> None:
    """``get_logger`` never writes to a logger outside ``integration_status`` (the host's own names)."""
    assert get_logger("elsewhere")._logger.name == "integration_status.elsewhere"
    assert get_logger("integration_status.web")._logger.name == "integration_status.web"


def test_capture_logs_sees_every_level_and_restores_the_level() -> None:
    """The test helper collects info lines as dicts with ``log_level`` and puts the logger's level back."""
    library = logging.getLogger("integration_status")
    library.setLevel(logging.ERROR)
    try:
        with capture_logs() as logs:
            _open_breaker()
        assert logs == [
            {
                "event": "integration_status.breaker.opened",
                "provider": "github",
                "previous": "closed",
                "log_level": "info",
            }
        ]
        assert library.level == logging.ERROR
    finally:
        library.setLevel(logging.NOTSET)


def test_an_unconfigured_host_sees_warnings_only_and_structlog_stays_unconfigured() -> None:
    """In a fresh interpreter with no logging setup, an info line prints nothing, a warning reaches stderr,
    stdout stays empty, and structlog's global configuration was never touched."""
    code = (
        "import structlog\n"
        "from integration_status import StatusService\n"
        "from integration_status._logging import get_logger\n"
        "log = get_logger('integration_status.x')\n"
        "log.info('integration_status.x.info')\n"
        "log.warning('integration_status.x.warned', provider='github')\n"
        "assert not structlog.is_configured()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.strip() == "integration_status.x.warned provider=github"
