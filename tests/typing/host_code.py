"""Host code as an application writes it, type-checked with ``mypy --strict`` (see pyproject's mypy ``files``).

Nothing here runs in the test suite: the point is that an application using the public API the way the docs
show needs no ``cast``, no ``type: ignore`` and no annotation the docs do not write.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from integration_status import (
    ActionContext,
    ActionOutcome,
    ActionRequest,
    ProjectConnections,
    ProviderConnection,
    ProviderKey,
    RequestInfo,
    RolePolicy,
    RoleRule,
    Secret,
    Settings,
    StatusResult,
    StatusService,
    Viewer,
    Visibility,
)
from integration_status.adapters.defaults import provider_adapters
from integration_status.adapters.github import GitHubAdapter
from integration_status.adapters.http import HttpClient
from integration_status.adapters.sanity import SanityAdapter
from integration_status.adapters.supabase import SupabaseAdapter
from integration_status.adapters.vercel import VercelAdapter
from integration_status.backends.memory import MemoryEngine
from integration_status.backends.redis import RedisEngine
from integration_status.observability import HealthRecorder, PrometheusMetrics
from integration_status.service.facade import allow_global_roles
from integration_status.service.webhooks import WebhookTarget
from integration_status.web.fastapi import DependencyAuthenticator, include
from integration_status.web.starlette import create_app

# --- connections from the host's storage ----------------------------------------------------------------------

ROWS: dict[str, dict[ProviderKey, dict[str, str]]] = {"site": {"github": {"repository": "acme/site"}}}


async def connections(project_id: str) -> ProjectConnections | None:
    rows = ROWS.get(project_id)
    if rows is None:
        return None
    providers: dict[ProviderKey, ProviderConnection] = {
        provider: ProviderConnection(provider=provider, settings=settings, token=Secret("ghp_x"))
        for provider, settings in rows.items()
    }
    return ProjectConnections(project_id=project_id, providers=providers)


def key_of(name: str) -> ProviderKey | None:
    keys: Mapping[str, ProviderKey] = {"github": "github", "vercel": "vercel"}
    return keys.get(name)


# --- viewers: sets, as host code writes them --------------------------------------------------------------------


async def authenticate(request: RequestInfo) -> Viewer | None:
    user = request.headers.get("x-user")
    if user is None:
        return None
    return Viewer(user_id=user, roles={"member"}, project_roles={"site": {"owner"}}, grants={"repo"})


# --- adapters: a plain list, no annotation ---------------------------------------------------------------------

http = HttpClient()
adapters = [
    GitHubAdapter(http=http, base_url="https://api.github.com"),
    VercelAdapter(http=http),
    SanityAdapter(http=http),
    SupabaseAdapter(http=http),
]
defaults = provider_adapters(http)


async def deploy(request: ActionRequest, connection: ProviderConnection, ctx: ActionContext) -> ActionOutcome:
    return ActionOutcome(operation_id=f"op_{request.action}", done=False)


policy = RolePolicy(rules={"release-manager": RoleRule(actions={"deploy"}, visibility=Visibility(urls=True))})
metrics = PrometheusMetrics()
service = StatusService(
    connections=connections,
    adapters=adapters,
    authenticator=authenticate,
    policy=policy,
    settings=Settings(cache_ttl=30.0, rate_limit=10),
    engine=MemoryEngine(),
    metrics=metrics,
    health=HealthRecorder(),
    action_handlers={("vercel", "deploy"): deploy},
)
env_service = StatusService(
    connections=connections,
    adapters=defaults,
    settings=Settings.from_env(),
    engine=RedisEngine.from_url("redis://127.0.0.1:6379/0", prefix="typing"),
    authorizer=allow_global_roles,
)
app = create_app(service)


async def read(viewer: Viewer) -> int:
    result: StatusResult = await service.status("site", viewer, if_none_match=None)
    return len(result.envelope.items)


async def webhook_target(provider: str, headers: Mapping[str, str], payload: object) -> WebhookTarget | None:
    return WebhookTarget(project_id="site", secret=Secret("whsec"))


# --- FastAPI ------------------------------------------------------------------------------------------------------

bearer = HTTPBearer()


async def current_user(credentials: HTTPAuthorizationCredentials = Depends(bearer)) -> str:  # noqa: B008
    return credentials.credentials


def to_viewer(user: str) -> Viewer:
    return Viewer(user_id=user, project_roles={"site": {"owner"}})


fastapi_app = FastAPI()
fastapi_service = StatusService(
    connections=connections,
    adapters=adapters,
    authenticator=DependencyAuthenticator(current_user, viewer=to_viewer),
)
include(fastapi_app, fastapi_service)
