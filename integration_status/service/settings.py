"""The service's tunables."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from integration_status._env import PREFIX, attrs_values, build, environ, settings_rows, warn_unknown
from integration_status.core.breaker import BreakerConfig
from integration_status.protocols import Secret

__all__ = ["Settings", "settings_variables"]


def _secret(value: Secret | str | None) -> Secret | None:
    return Secret(value) if isinstance(value, str) else value


@attrs.frozen(kw_only=True)
class Settings:
    """Tunables. Times in seconds; every field can also come from ``INTEGRATION_STATUS_*`` (:meth:`from_env`)."""

    cache_ttl: float = attrs.field(default=15.0, validator=attrs.validators.gt(0))
    cache_jitter: float = attrs.field(default=0.2, validator=[attrs.validators.ge(0), attrs.validators.lt(1)])
    adapter_timeout: float = attrs.field(
        default=2.5, validator=[attrs.validators.gt(0), attrs.validators.le(30)]
    )
    deadline: float = attrs.field(default=0.45, validator=attrs.validators.gt(0))
    breaker: BreakerConfig = attrs.field(factory=BreakerConfig)
    action_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    rate_limit: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    rate_window: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    idempotency_ttl: float = attrs.field(default=86_400.0, validator=attrs.validators.gt(0))
    heartbeat: float = attrs.field(default=15.0, validator=attrs.validators.gt(0))
    sse_per_viewer: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    sse_per_process: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    #: The shortest time between two writes to one event stream: events that arrive meanwhile go out together.
    sse_write_interval: float = attrs.field(
        default=0.1, validator=[attrs.validators.ge(0), attrs.validators.le(5)]
    )
    #: The per-deployment secret ETags are keyed with (see core.etag); None: a random key per process, or the
    #: one the Redis engine shares. Never shown in reprs.
    etag_secret: Secret | None = attrs.field(
        default=None,
        repr=False,
        converter=_secret,
        validator=attrs.validators.optional(attrs.validators.instance_of(Secret)),
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The defaults, overridden by the ``INTEGRATION_STATUS_*`` variables set in ``env`` (``os.environ``);
        a variable that nothing reads is warned about once, with the nearest known name."""
        env = environ(env)
        warn_unknown(env, frozenset(row[0] for row in settings_variables()))
        breaker = build(
            BreakerConfig, attrs_values(BreakerConfig, env, f"{PREFIX}BREAKER_"), "the breaker settings"
        )
        values = attrs_values(cls, env, PREFIX, skip=frozenset({"breaker"}))
        return build(cls, {**values, "breaker": breaker}, "the settings")


def settings_variables() -> list[tuple[str, str, object, str]]:
    """``(variable, field path, default, unit)`` for every Settings field, breaker fields included."""
    return settings_rows(Settings, {"breaker": BreakerConfig})
