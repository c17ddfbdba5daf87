"""The default authorizer opens a project only to viewers with a role for it; global roles need the host's
explicit ``allow_global_roles``."""

from __future__ import annotations

import pytest

from integration_status import NotFound, StatusService, Viewer
from integration_status.service.facade import allow_global_roles, allow_project_members
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections

pytestmark = pytest.mark.anyio


def service(**kwargs: object) -> StatusService:
    return StatusService(
        connections=StaticConnections.linked("p1", "github"),
        adapters=[ScriptedAdapter("github")],
        clock=FakeClock(),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_global_role_alone_opens_no_project() -> None:
    """By default a viewer whose only role is global gets 404, like for a project that does not exist."""
    async with service() as svc:
        with pytest.raises(NotFound):
            await svc.status("p1", Viewer(user_id="u", roles={"owner"}))


async def test_a_role_for_the_project_opens_it() -> None:
    """A role in ``project_roles`` for this project lets the viewer in; a role for another project does not."""
    async with service() as svc:
        result = await svc.status("p1", Viewer(user_id="u", project_roles={"p1": {"viewer"}}))
        assert result.envelope.items
        with pytest.raises(NotFound):
            await svc.status("p1", Viewer(user_id="u", project_roles={"p2": {"owner"}}))


async def test_the_host_can_say_global_roles_are_enough() -> None:
    """With ``authorizer=allow_global_roles`` a global role opens the project; no role at all still does not."""
    async with service(authorizer=allow_global_roles) as svc:
        assert (await svc.status("p1", Viewer(user_id="u", roles={"member"}))).envelope.items
        with pytest.raises(NotFound):
            await svc.status("p1", Viewer(user_id="u"))


async def test_an_empty_role_set_for_the_project_is_no_role() -> None:
    """``project_roles={"p1": set()}`` removes the viewer's access to p1 even with global roles elsewhere."""
    assert await allow_project_members(Viewer(user_id="u", project_roles={"p1": set()}), "p1") is False
    assert (
        await allow_global_roles(Viewer(user_id="u", roles={"owner"}, project_roles={"p1": set()}), "p1")
        is False
    )


def test_project_roles_accept_what_host_code_writes() -> None:
    """Sets, lists, tuples and a single role name all become frozensets."""
    viewer = Viewer(user_id="u", project_roles={"a": {"owner"}, "b": ["member"], "c": "viewer", "d": ()})
    assert viewer.project_roles == {
        "a": frozenset({"owner"}),
        "b": frozenset({"member"}),
        "c": frozenset({"viewer"}),
        "d": frozenset(),
    }
    assert viewer.roles_for("c") == {"viewer"}
