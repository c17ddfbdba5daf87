"""Keyed ETags: an owner's tag cannot be rebuilt offline from a viewer's data and a guess; workers that share
the secret agree; the secret stays out of reprs; rotating it costs each client one 200."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from integration_status import allow_global_roles
from integration_status.core.etag import canonical_json
from integration_status.protocols import Viewer
from integration_status.service import Settings, StatusService
from integration_status.snapshot import ProviderSnapshot, Segment, Sensitive
from integration_status.testing import FakeClock, ScriptedAdapter, StaticConnections

pytestmark = pytest.mark.anyio

OWNER = Viewer(user_id="o", roles={"owner"})
VIEWER = Viewer(user_id="v", roles={"viewer"})
GITHUB = ProviderSnapshot(
    provider="github",
    status="connected",
    summary=(Segment(pieces=("Linked to ", Sensitive(kind="branch", value="main")), redacted="Linked"),),
)


def service(clock: FakeClock, **settings: Any) -> StatusService:
    return StatusService(
        connections=StaticConnections.linked("p", "github"),
        adapters=[ScriptedAdapter("github", GITHUB)],
        settings=Settings(**settings),
        clock=clock,
        authorizer=allow_global_roles,
    )


def unkeyed(body: dict[str, Any]) -> str:
    """What the tag was before it was keyed: anyone could compute it."""
    return hashlib.sha256(canonical_json({k: v for k, v in body.items() if k != "hash"})).hexdigest()[:32]


async def test_an_offline_guess_from_a_viewers_data_cannot_rebuild_the_owners_etag() -> None:
    """A viewer who holds the owner's ETag rebuilds the owner's exact envelope from their own and the guess
    "main", yet no computation without the key reproduces the tag."""
    clock = FakeClock()
    async with service(clock) as s:
        owner = await s.status("p", OWNER)
        seen = await s.status("p", VIEWER)
    owner_body, viewer_body = owner.envelope.to_json(), seen.envelope.to_json()
    assert "main" not in str(viewer_body)

    guess = copy.deepcopy(viewer_body)
    del guess["hash"]
    for item, owners_item in zip(guess["items"], owner_body["items"], strict=True):
        if item["summary"] == "Linked":
            item["summary"] = "Linked to main"  # the guess
        item["actions"] = owners_item["actions"]  # an owner's actions are documented per role
    expected = {k: v for k, v in owner_body.items() if k != "hash"}
    assert canonical_json(guess) == canonical_json(expected)  # the guess is exactly right...
    assert owner.etag == f'"{owner_body["hash"]}"'
    assert unkeyed(guess) != owner_body["hash"]  # ...and still cannot be checked against the tag
    assert unkeyed(viewer_body) != viewer_body["hash"]  # not even the viewer's own tag can be recomputed


async def test_workers_sharing_the_secret_agree_and_other_processes_do_not() -> None:
    """Two services given one secret hand out the same ETag; two without a secret (memory engine) do not."""
    clock = FakeClock()
    async with service(clock, etag_secret="s3cret") as a, service(clock, etag_secret="s3cret") as b:
        assert (await a.status("p", OWNER)).etag == (await b.status("p", OWNER)).etag
    async with service(clock) as a, service(clock) as b:
        assert (await a.status("p", OWNER)).etag != (await b.status("p", OWNER)).etag


async def test_rotating_the_secret_costs_one_200_per_client() -> None:
    """A tag from before a rotation gets one 200 with the new tag, which then revalidates as 304."""
    clock = FakeClock()
    async with service(clock, etag_secret="old") as before:
        old_tag = (await before.status("p", OWNER)).etag
    async with service(clock, etag_secret="new") as after:
        first = await after.status("p", OWNER, if_none_match=old_tag)
        assert not first.not_modified
        assert first.etag != old_tag
        assert (await after.status("p", OWNER, if_none_match=first.etag)).not_modified


def test_the_secret_is_never_in_a_repr() -> None:
    """Settings' repr and str leave the ETag secret out."""
    settings = Settings(etag_secret="do-not-print-me")
    assert "do-not-print-me" not in repr(settings)
    assert "do-not-print-me" not in str(settings)
    assert settings.etag_secret is not None
    assert settings.etag_secret.reveal() == "do-not-print-me"
