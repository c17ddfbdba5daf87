"""Configuration from INTEGRATION_STATUS_* variables, and the command line's --version, help and pipes."""

from __future__ import annotations

import os
import subprocess
import sys

import attrs
import pytest

from integration_status import ConfigurationError, Settings
from integration_status._env import ENGINE_VARIABLES
from integration_status._logging import capture_logs
from integration_status.backends import engine_from_env
from integration_status.backends.memory import MemoryEngine
from integration_status.backends.redis import RedisEngine
from integration_status.cli import env_table
from integration_status.core.breaker import BreakerConfig
from integration_status.service.settings import settings_variables


def test_an_empty_environment_gives_the_defaults() -> None:
    """Nothing set (or set to empty) means Settings()."""
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({"INTEGRATION_STATUS_CACHE_TTL": " "}) == Settings()


def test_variables_override_fields_and_breaker_fields() -> None:
    """Each variable sets its field, with the field's type; breaker fields take BREAKER_ before the name."""
    settings = Settings.from_env(
        {
            "INTEGRATION_STATUS_CACHE_TTL": "30",
            "INTEGRATION_STATUS_RATE_LIMIT": "10",
            "INTEGRATION_STATUS_BREAKER_OPEN_FOR": "5.5",
            "INTEGRATION_STATUS_BREAKER_MIN_CALLS": "7",
            "UNRELATED": "x",
        }
    )
    assert settings == attrs.evolve(
        Settings(), cache_ttl=30.0, rate_limit=10, breaker=BreakerConfig(open_for=5.5, min_calls=7)
    )
    assert isinstance(settings.rate_limit, int)


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"INTEGRATION_STATUS_CACHE_TTL": "15s"}, "INTEGRATION_STATUS_CACHE_TTL must be a number, not '15s'"),
        ({"INTEGRATION_STATUS_RATE_LIMIT": "2.5"}, "INTEGRATION_STATUS_RATE_LIMIT must be a whole number"),
        ({"INTEGRATION_STATUS_CACHE_JITTER": "3"}, "'cache_jitter' must be < 1"),
        ({"INTEGRATION_STATUS_BREAKER_FAILURE_RATE": "2"}, "the breaker settings from the environment"),
    ],
)
def test_bad_values_are_configuration_errors_naming_what_is_wrong(env: dict[str, str], words: str) -> None:
    """A value that does not parse, or breaks a bound, raises ConfigurationError saying which and why."""
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env)
    assert words in str(info.value)


def test_a_misspelt_variable_warns_once_with_the_nearest_name() -> None:
    """An INTEGRATION_STATUS_ variable nothing reads is logged once as a warning, suggesting the known name."""
    env = {"INTEGRATION_STATUS_CACHE_TTLS": "30"}
    with capture_logs() as logs:
        Settings.from_env(env)
        Settings.from_env(env)
    warnings = [e for e in logs if e["event"] == "integration_status.config.unknown_variable"]
    assert len(warnings) == 1
    assert warnings[0]["variable"] == "INTEGRATION_STATUS_CACHE_TTLS"
    assert warnings[0]["did_you_mean"] == "INTEGRATION_STATUS_CACHE_TTL"


def test_every_settings_field_has_a_variable() -> None:
    """The variable table covers each Settings field (the breaker through its own fields)."""
    paths = {row[1] for row in settings_variables()}
    expected = {f.name for f in attrs.fields(Settings) if f.name != "breaker"}
    expected |= {f"breaker.{f.name}" for f in attrs.fields(BreakerConfig)}
    assert paths == expected


def test_the_engine_follows_the_redis_url() -> None:
    """Without INTEGRATION_STATUS_REDIS_URL the memory engine (sized from the env); with it, Redis with the
    prefix given, and no connection is made yet."""
    memory = engine_from_env({"INTEGRATION_STATUS_MEMORY_EVENT_BUFFER": "50"})
    assert isinstance(memory, MemoryEngine)
    assert memory.events._buffer_size == 50
    redis = engine_from_env(
        {
            "INTEGRATION_STATUS_REDIS_URL": "redis://127.0.0.1:6379/0",
            "INTEGRATION_STATUS_REDIS_PREFIX": "app-x",
        }
    )
    assert isinstance(redis, RedisEngine)
    assert redis.prefix == "app-x"
    assert isinstance(MemoryEngine.from_env({}), MemoryEngine)
    with pytest.raises(ConfigurationError, match="INTEGRATION_STATUS_REDIS_URL is not set"):
        RedisEngine.from_env({})
    with pytest.raises(ConfigurationError, match="INTEGRATION_STATUS_REDIS_POOL_SIZE must be a whole number"):
        RedisEngine.from_env(
            {"INTEGRATION_STATUS_REDIS_URL": "redis://x", "INTEGRATION_STATUS_REDIS_POOL_SIZE": "a"}
        )
    assert set(ENGINE_VARIABLES) >= {"INTEGRATION_STATUS_REDIS_URL", "INTEGRATION_STATUS_REDIS_PREFIX"}


@pytest.mark.parametrize(
    ("text", "cluster"), [("true", True), ("YES", True), ("1", True), ("off", False), ("", False)]
)
def test_the_redis_cluster_variable_picks_the_cluster_client(text: str, cluster: bool) -> None:
    """INTEGRATION_STATUS_REDIS_CLUSTER=true makes the engine a cluster engine; false, off or unset do not."""
    engine = engine_from_env(
        {"INTEGRATION_STATUS_REDIS_URL": "redis://127.0.0.1:7000", "INTEGRATION_STATUS_REDIS_CLUSTER": text}
    )
    assert isinstance(engine, RedisEngine)
    assert ("cluster=True" in repr(engine)) is cluster


def test_a_redis_cluster_value_that_is_not_a_yes_or_no_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="INTEGRATION_STATUS_REDIS_CLUSTER must be true or false"):
        RedisEngine.from_env(
            {"INTEGRATION_STATUS_REDIS_URL": "redis://x", "INTEGRATION_STATUS_REDIS_CLUSTER": "maybe"}
        )


def _no_credentials() -> dict[str, str]:
    """This environment without provider variables, so ``check`` asks no provider."""
    prefixes = ("GITHUB_", "VERCEL_", "SANITY_", "SUPABASE_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def _cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = _no_credentials()
    return subprocess.run(
        [sys.executable, "-m", "integration_status.cli", *args],
        capture_output=True, text=True, timeout=60, env=env, **kwargs,  # type: ignore[call-overload]
    )  # fmt: skip


def test_version_prints_the_package_version() -> None:
    """``integration-status --version`` prints the program name and the package version."""
    from integration_status import __version__

    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"integration-status {__version__}"


def test_check_help_lists_every_variable() -> None:
    """``check --help`` shows the table of variables, each provider credential and base URL included."""
    result = _cli("check", "--help")
    assert result.returncode == 0
    for name in ("GITHUB_TOKEN", "SUPABASE_DB_URL", "SANITY_QUERY_URL", "INTEGRATION_STATUS_*"):
        assert name in result.stdout
    assert env_table() in result.stdout


def test_a_closed_pipe_ends_quietly() -> None:
    """Output into a pipe whose reader is gone (``| head``) ends without a traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written: every write fails with EPIPE
    try:
        env = _no_credentials()
        result = subprocess.run(
            [sys.executable, "-m", "integration_status.cli", "check"],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=60, env=env,
        )  # fmt: skip
    finally:
        os.close(write)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "BrokenPipe" not in result.stderr


def test_check_refuses_a_bad_setting_variable_as_a_usage_error() -> None:
    """``check`` with an unparsable INTEGRATION_STATUS_* value exits 2 naming the variable, asking no provider."""
    env = {**_no_credentials(), "INTEGRATION_STATUS_CACHE_TTL": "fast"}
    result = subprocess.run(
        [sys.executable, "-m", "integration_status.cli", "check"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "INTEGRATION_STATUS_CACHE_TTL must be a number, not 'fast'" in result.stderr
    assert result.stdout == ""
