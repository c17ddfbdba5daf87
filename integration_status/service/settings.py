"""The service's tunables."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from integration_status.core.breaker import BreakerConfig

__all__ = ["Settings"]


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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The defaults, overridden by the ``INTEGRATION_STATUS_*`` variables set in ``env`` (``os.environ``)."""
        from integration_status._env import settings_from_env

        return settings_from_env(env)
