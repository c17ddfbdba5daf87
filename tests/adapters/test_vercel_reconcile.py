"""VercelAdapter's deploy resumed after a crash (``ctx.resume``): it follows the deployment the crashed attempt
started, found from its checkpoint or by asking Vercel, and deploys only when Vercel has none."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import pytest
from adapter_support import Router

from integration_status.adapters.http import HttpClient
from integration_status.adapters.vercel import VercelAdapter
from integration_status.core.idempotency import can_reconcile
from integration_status.exceptions import OutcomeUnknown
from integration_status.protocols import ActionContext, ActionRequest, ProviderConnection
from integration_status.testing import FakeClock

pytestmark = pytest.mark.anyio

CONN = ProviderConnection(provider="vercel", settings={"project": "docs"}, token="vc_SECRET")
HOOK_ONLY = ProviderConnection(
    provider="vercel", settings={"deploy_hook": "https://api.vercel.com/v1/hooks/x"}
)
PRJ = "/v9/projects/docs"
REQ = ActionRequest(project_id="proj-1", provider="vercel", action="deploy")
READY = {"id": "dpl_1", "readyState": "READY", "url": "docs-1.vercel.app"}


class Run:
    def __init__(self, clock: FakeClock, resume: Mapping[str, Any]) -> None:
        self.events: list[dict[str, Any]] = []
        self.spawned: list[Callable[[], Awaitable[None]]] = []
        self.checkpoints: list[dict[str, Any]] = []

        async def publish(event: Any) -> None:
            self.events.append(dict(event))

        async def checkpoint(data: Mapping[str, Any]) -> None:
            self.checkpoints.append(dict(data))

        self.ctx = ActionContext(
            clock=clock,
            operation_id="op_1",
            timeout=5,
            publish=publish,
            spawn=self.spawned.append,
            checkpoint=checkpoint,
            resume=resume,
        )

    async def finish(self) -> None:
        for work in self.spawned:
            await work()


class AutoClock(FakeClock):
    """Sleeping moves the clock: a followed deployment is polled without waiting."""

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await super().sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return AutoClock()


def adapter(http: HttpClient) -> Any:
    return VercelAdapter(http=http, deploy_poll_interval=1, deploy_timeout=30).action_handlers()["deploy"]


async def test_the_deploy_handler_is_marked_as_reconciling(http: HttpClient) -> None:
    """The service calls the deploy handler with ctx.resume only because it says it can reconcile."""
    assert can_reconcile(adapter(http))
    assert not can_reconcile(VercelAdapter(http=http).action_handlers()["link"])


async def test_a_checkpointed_deployment_is_followed_not_created_again(
    http: HttpClient, router: Router, clock: FakeClock
) -> None:
    """resume carries the deployment id: no POST, the deployment is followed to deploy:finished."""
    router.add("GET", "/v13/deployments/dpl_1", httpx.Response(200, json=READY))
    run = Run(clock, {"operationId": "op_1", "at": 1, "deploymentId": "dpl_1", "vercelProjectId": "prj_1"})
    outcome = await adapter(http)(REQ, CONN, run.ctx)
    assert (outcome.done, outcome.operation_id) == (False, "op_1")
    await run.finish()
    assert router.count("POST", "/v13/deployments") == 0
    assert [(e["type"], e["success"]) for e in run.events] == [("deploy:finished", True)]


async def test_a_deployment_vercel_lists_since_the_attempt_began_is_adopted(
    http: HttpClient, router: Router, clock: FakeClock, payload: Any
) -> None:
    """The worker died before it learnt the id: Vercel lists a deployment since then; it is checkpointed and
    followed, never created again."""
    router.add("GET", PRJ, payload("vercel/project_200_linked"))
    router.add("GET", "/v6/deployments", httpx.Response(200, json={"deployments": [{"uid": "dpl_1"}]}))
    router.add("GET", "/v13/deployments/dpl_1", httpx.Response(200, json=READY))
    run = Run(clock, {"operationId": "op_1", "at": 1_700_000_000_000})
    await adapter(http)(REQ, CONN, run.ctx)
    await run.finish()
    listed = next(r for r in router.calls if r.url.path == "/v6/deployments")
    assert listed.url.params["since"] == "1700000000000"
    assert router.count("POST", "/v13/deployments") == 0
    assert run.checkpoints[-1]["deploymentId"] == "dpl_1"
    assert [e["type"] for e in run.events] == ["deploy:finished"]


async def test_nothing_listed_since_the_attempt_began_means_it_never_started(
    http: HttpClient, router: Router, clock: FakeClock, payload: Any
) -> None:
    """Vercel has no deployment since the crashed attempt began: the deploy runs now, once."""
    router.add("GET", PRJ, payload("vercel/project_200_linked"))
    router.add("GET", "/v6/deployments", httpx.Response(200, json={"deployments": []}))
    router.add("POST", "/v13/deployments", payload("vercel/create_deployment_200"))
    run = Run(clock, {"operationId": "op_1", "at": 1})
    await adapter(http)(REQ, CONN, run.ctx)
    assert router.count("POST", "/v13/deployments") == 1
    assert json.loads(router.calls[-1].content)["target"] == "production"
    assert [e["type"] for e in run.events] == ["deploy:started"]


async def test_an_answered_attempt_with_nothing_to_follow_deploys_nothing(
    http: HttpClient, router: Router, clock: FakeClock, payload: Any
) -> None:
    """Taking over only the follow-up (resume["answered"]) never creates a deployment."""
    router.add("GET", PRJ, payload("vercel/project_200_linked"))
    router.add("GET", "/v6/deployments", httpx.Response(200, json={"deployments": []}))
    run = Run(clock, {"operationId": "op_1", "at": 1, "answered": True})
    outcome = await adapter(http)(REQ, CONN, run.ctx)
    assert not outcome.done
    assert router.count("POST", "/v13/deployments") == 0
    assert run.spawned == []


async def test_a_hook_only_connection_that_cannot_be_asked_is_outcome_unknown(
    http: HttpClient, router: Router, clock: FakeClock
) -> None:
    """No token to ask Vercel whether the crashed attempt deployed: a definite 'unknown', never a new deploy."""
    run = Run(clock, {"operationId": "op_1", "at": 1})
    with pytest.raises(OutcomeUnknown, match="unknown") as info:
        await adapter(http)(REQ, HOOK_ONLY, run.ctx)
    assert "Idempotency-Key" in (info.value.hint or "")
    assert router.calls == []
