"""integration-status: at-a-glance, real-time status of a project's GitHub, Vercel, Sanity and Supabase
connections for workspace UIs.

A host builds one :class:`StatusService` from its connections, viewers and roles, and mounts the endpoints
(``integration_status.web.starlette`` or ``integration_status.web.flask``). This module is the door for
everything a host builds with; the other doors are ``integration_status.adapters`` (the provider adapters and
their HTTP client), ``integration_status.backends`` (engines), ``integration_status.observability`` (metrics,
health), ``integration_status.web.starlette``, ``integration_status.web.flask`` and ``integration_status.testing``.
Importing this package pulls in no web framework, Redis client or database driver.
"""

import importlib as _importlib
from types import ModuleType as _ModuleType

from integration_status._version import __version__
from integration_status.backends.memory import MemoryEngine
from integration_status.core.breaker import BreakerConfig
from integration_status.core.clock import SYSTEM_CLOCK, SystemClock, epoch_ms
from integration_status.core.policy import DEFAULT_RULES, RolePolicy, RoleRule
from integration_status.exceptions import (
    BackendUnavailable,
    ConfigurationError,
    Forbidden,
    IdempotencyConflict,
    IdempotencyMismatch,
    IntegrationStatusError,
    InvalidModel,
    InvalidRequest,
    NotFound,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimitExceeded,
    RequestError,
    SubscriberLagging,
    Unauthorized,
)
from integration_status.models import (
    PROVIDERS,
    Action,
    DeployFinished,
    DeployStarted,
    GithubPush,
    IntegrationEvent,
    Problem,
    ProviderKey,
    SanityWebhook,
    StatusEnvelope,
    StatusItem,
    StatusUpdate,
    event_from_json,
)
from integration_status.protocols import (
    ActionContext,
    ActionHandler,
    ActionOutcome,
    ActionRequest,
    Adapter,
    Authenticator,
    Authorizer,
    Clock,
    ConnectionResolver,
    Credential,
    Engine,
    FetchContext,
    HealthAuthorizer,
    Metrics,
    Policy,
    ProjectConnections,
    ProviderConnection,
    RefreshableToken,
    RequestInfo,
    Secret,
    Viewer,
    WebhookResolver,
    WebhookTarget,
)
from integration_status.service.actions import ActionResult
from integration_status.service.facade import StatusService, allow_global_roles, allow_project_members
from integration_status.service.render import StatusResult
from integration_status.service.settings import Settings
from integration_status.service.webhooks import WebhookResult, handle_webhook
from integration_status.snapshot import (
    ActionState,
    Ago,
    ProviderSnapshot,
    Segment,
    Sensitive,
    Validators,
    Visibility,
    default_actions,
    render_summary,
)

__all__ = [
    "DEFAULT_RULES",
    "PROVIDERS",
    "SYSTEM_CLOCK",
    "Action",
    "ActionContext",
    "ActionHandler",
    "ActionOutcome",
    "ActionRequest",
    "ActionResult",
    "ActionState",
    "Adapter",
    "Ago",
    "Authenticator",
    "Authorizer",
    "BackendUnavailable",
    "BreakerConfig",
    "Clock",
    "ConfigurationError",
    "ConnectionResolver",
    "Credential",
    "DeployFinished",
    "DeployStarted",
    "Engine",
    "FetchContext",
    "Forbidden",
    "GithubPush",
    "HealthAuthorizer",
    "IdempotencyConflict",
    "IdempotencyMismatch",
    "IntegrationEvent",
    "IntegrationStatusError",
    "InvalidModel",
    "InvalidRequest",
    "MemoryEngine",
    "Metrics",
    "NotFound",
    "Policy",
    "Problem",
    "ProjectConnections",
    "ProviderAuthError",
    "ProviderConnection",
    "ProviderError",
    "ProviderKey",
    "ProviderRateLimited",
    "ProviderSnapshot",
    "ProviderTimeout",
    "ProviderUnavailable",
    "RateLimitExceeded",
    "RefreshableToken",
    "RequestError",
    "RequestInfo",
    "RolePolicy",
    "RoleRule",
    "SanityWebhook",
    "Secret",
    "Segment",
    "Sensitive",
    "Settings",
    "StatusEnvelope",
    "StatusItem",
    "StatusResult",
    "StatusService",
    "StatusUpdate",
    "SubscriberLagging",
    "SystemClock",
    "Unauthorized",
    "Validators",
    "Viewer",
    "Visibility",
    "WebhookResolver",
    "WebhookResult",
    "WebhookTarget",
    "__version__",
    "allow_global_roles",
    "allow_project_members",
    "default_actions",
    "epoch_ms",
    "event_from_json",
    "handle_webhook",
    "render_summary",
]

# Importing the names above bound the submodules they came from as attributes of this package; the door
# lists names, not modules. A submodule stays reachable as an attribute (``integration_status.models``),
# imported on first use by ``__getattr__``.
for _name, _value in list(globals().items()):
    if isinstance(_value, _ModuleType) and not _name.startswith("_"):
        del globals()[_name]
del _name, _value


def __getattr__(name: str) -> _ModuleType:
    if not name.startswith("_"):
        try:
            return _importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
