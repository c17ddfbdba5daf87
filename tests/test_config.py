"""Loud misconfiguration: bad base URLs fail at construction, bad connections warn once by project and
provider, and answers from something other than the provider's API say so."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import httpx
import pytest

from integration_status import ConfigurationError, ProjectConnections, ProviderConnection, Secret, Viewer
from integration_status._config import check_base_url, token_problem, webhook_secret_problem
from integration_status._logging import capture_logs
from integration_status.adapters.github import GitHubAdapter
from integration_status.adapters.http import HttpClient
from integration_status.adapters.sanity import SanityAdapter
from integration_status.adapters.supabase import SupabaseAdapter
from integration_status.adapters.vercel import VercelAdapter
from integration_status.exceptions import ProviderAuthError, ProviderUnavailable
from integration_status.protocols import FetchContext
from integration_status.service import StatusService
from integration_status.service.facade import allow_global_roles
from integration_status.service.webhooks import MemoryDeliveryLog, WebhookTarget, handle_webhook, sign_github
from integration_status.testing import FakeClock, StaticConnections

pytestmark = pytest.mark.anyio
_ids = itertools.count()
OWNER = Viewer(user_id="u", roles={"owner"})


def project_id() -> str:
    """A project id not used by any other test (warnings are remembered per process)."""
    return f"cfg-{next(_ids)}-{id(object())}"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("api.github.com", "has no scheme; write it as https://api.github.com"),
        ("ftp://api.github.com", "must start with https://"),
        ("https://", "has no host"),
        ("https://api.github.com?x=1", "must not carry a query"),
        (" https://api.github.com", "surrounding whitespace"),
        ("https://[::1", "is not a valid URL"),
    ],
)
def test_bad_base_urls_are_configuration_errors(url: str, words: str) -> None:
    """Each malformed base URL is refused with a message naming the provider, the argument and the fault."""
    with pytest.raises(ConfigurationError) as info:
        check_base_url(url, provider="github")
    assert str(info.value).startswith("github: base_url")
    assert words in str(info.value)


def test_good_base_urls_lose_their_trailing_slash_and_credentials_are_not_echoed() -> None:
    """A valid URL comes back without the trailing slash; a refused one is shown without user:password."""
    assert check_base_url("https://ghe.example/api/v3/", provider="github") == "https://ghe.example/api/v3"
    assert (
        check_base_url("https://{projectId}.api.sanity.io", provider="sanity")
        == "https://{projectId}.api.sanity.io"
    )
    with pytest.raises(ConfigurationError) as info:
        check_base_url("ftp://user:hunter2@host/x", provider="vercel")
    assert "hunter2" not in str(info.value)
    assert "ftp://host/x" in str(info.value)


@pytest.mark.parametrize(
    "build",
    [
        lambda http: GitHubAdapter(http=http, base_url="api.github.com"),
        lambda http: VercelAdapter(http=http, base_url="https//api.vercel.com"),
        lambda http: SanityAdapter(http=http, query_url="{projectId}.api.sanity.io"),
        lambda http: SupabaseAdapter(http=http, base_url="localhost:8000"),
    ],
)
def test_every_adapter_checks_its_urls_at_construction(build: Callable[[HttpClient], object]) -> None:
    """The four adapters raise ConfigurationError at construction instead of timing out at every request."""
    with pytest.raises(ConfigurationError):
        build(HttpClient())


def test_token_problems_name_the_fault_never_the_value() -> None:
    """Empty, padded, non-ASCII and spaced tokens are told apart; the reason holds no part of the token."""
    cases = {"": "is empty", " ghp_x": "surrounding", "ghp_…": "non-ASCII", "ghp x": "space"}
    for token, words in cases.items():
        problem = token_problem(Secret(token))
        assert problem is not None
        assert words in problem
        assert token.strip() not in problem or not token.strip()
    assert token_problem(None) is None
    assert token_problem(Secret("ghp_abc123")) is None


def _github(handler: Callable[[httpx.Request], httpx.Response]) -> GitHubAdapter:
    return GitHubAdapter(http=HttpClient(transport=httpx.MockTransport(handler)), base_url="https://gh.test")


def _ctx() -> FetchContext:
    clock = FakeClock()
    return FetchContext(clock=clock, timeout=2.0, started=clock.monotonic())


async def test_a_non_ascii_token_is_not_sent_and_says_check_the_token() -> None:
    """A token with a pasted ellipsis raises a provider error hinting at the token; no request is made."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    connection = ProviderConnection(provider="github", settings={"repository": "o/r"}, token="ghp_…")
    with pytest.raises(ProviderUnavailable) as info:
        await _github(handler).fetch(connection, _ctx())
    assert info.value.hint == "Check the token"
    assert "non-ASCII" in str(info.value)
    assert sent == []


async def test_an_html_404_is_a_url_problem_and_a_json_404_still_lost_access() -> None:
    """A 404 HTML page (a wrong path, another server) hints at the API URL; the API's own JSON 404 on the
    repository still means the token lost access."""
    connection = ProviderConnection(provider="github", settings={"repository": "o/r"}, token="ghp_abc")
    html = _github(lambda r: httpx.Response(404, html="<html>Not Found</html>"))
    with pytest.raises(ProviderUnavailable) as info:
        await html.fetch(connection, _ctx())
    assert info.value.hint == "Check the API URL"
    assert "base URL" in str(info.value)
    api = _github(lambda r: httpx.Response(404, json={"message": "Not Found"}))
    with pytest.raises(ProviderAuthError):
        await api.fetch(connection, _ctx())


async def test_an_html_success_page_is_a_url_problem() -> None:
    """A 200 HTML page (the provider's website rather than its API) hints at the API URL."""
    connection = ProviderConnection(provider="github", settings={"repository": "o/r"}, token="ghp_abc")
    with pytest.raises(ProviderUnavailable) as info:
        await _github(lambda r: httpx.Response(200, html="<html>Welcome</html>")).fetch(connection, _ctx())
    assert info.value.hint == "Check the API URL"


async def test_misconfigured_connections_warn_once_naming_project_and_provider() -> None:
    """A provider linked without an adapter, a settings typo and a bad token each log one warning naming the
    project and the provider, however many requests follow, and never the token."""
    pid = project_id()
    connections = ProjectConnections(
        project_id=pid,
        providers={
            "vercel": ProviderConnection(provider="vercel", settings={"project": "x"}),
            "github": ProviderConnection(
                provider="github", settings={"repo": "o/r"}, token=" ghp_SECRETVALUE"
            ),
        },
    )
    adapter = _github(lambda r: httpx.Response(500))
    service = StatusService(
        authorizer=allow_global_roles,
        connections=StaticConnections({pid: connections}),
        adapters=[adapter],
        clock=FakeClock(),
    )
    with capture_logs() as logs:
        async with service:
            for _ in range(3):
                await service.cache.invalidate(f"{pid}:github")
                await service.status(pid, OWNER)
    warnings = [(e["event"], e["project"], e["provider"]) for e in logs if e["log_level"] == "warning"]
    assert sorted(warnings) == [
        ("integration_status.config.bad_token", pid, "github"),
        ("integration_status.config.no_adapter", pid, "vercel"),
        ("integration_status.config.unknown_setting", pid, "github"),
    ]
    typo = next(e for e in logs if e["event"] == "integration_status.config.unknown_setting")
    assert typo["key"] == "repo"
    assert "repository" in typo["known"]
    assert "SECRETVALUE" not in json.dumps(logs, default=repr)


async def test_a_webhook_with_an_empty_secret_is_refused_even_when_signed_with_it() -> None:
    """An empty signing secret would verify anyone's signature: the delivery is refused with 401 and one
    warning names the project and provider."""
    pid = project_id()
    body = json.dumps({"zen": "hi", "hook_id": 1}).encode()
    headers = {"x-github-event": "ping", "x-github-delivery": "d-1", **sign_github("", body)}

    async def resolve(provider: str, headers: object, payload: object) -> WebhookTarget:
        return WebhookTarget(project_id=pid, secret=Secret(""))

    with capture_logs() as logs:
        result = await handle_webhook(
            "github",
            headers,
            body,
            resolve=resolve,
            deliveries=MemoryDeliveryLog(clock=FakeClock()),
            clock=FakeClock(),
        )
    assert result.status == 401
    assert [(e["event"], e["project"], e["provider"]) for e in logs if e["log_level"] == "warning"] == [
        ("integration_status.config.bad_webhook_secret", pid, "github")
    ]
    assert webhook_secret_problem(Secret("whsec_ok")) is None
    assert webhook_secret_problem(Secret("whsec_ok\n")) == "has surrounding whitespace"


async def test_a_wrong_base_url_shows_the_hint_and_warns_once() -> None:
    """A GitHub base URL that answers HTML pages: the item's problem hints at the API URL (not a reconnect), and
    one warning names the project and provider, however often the status is asked for."""
    pid = project_id()
    connections = StaticConnections.linked(pid)
    connections.projects[pid] = ProjectConnections(
        project_id=pid,
        providers={
            "github": ProviderConnection(provider="github", settings={"repository": "o/r"}, token="ghp_ok")
        },
    )
    website = _github(lambda r: httpx.Response(404, html="<html>Page not found</html>"))
    owner = Viewer(user_id="u", project_roles={pid: {"owner"}})
    with capture_logs() as logs:
        async with StatusService(connections=connections, adapters=[website], clock=FakeClock()) as service:
            for _ in range(3):
                await service.cache.invalidate(f"{pid}:github")
                result = await service.status(pid, owner)
    github = next(item for item in result.envelope.items if item.key == "github")
    assert github.problem is not None
    assert (github.problem.code, github.problem.hint) == ("unknown", "Check the API URL")
    warned = [e for e in logs if e["event"] == "integration_status.config.provider_answer"]
    assert [(e["project"], e["provider"]) for e in warned] == [(pid, "github")]
    assert "base URL" in warned[0]["reason"]
