"""Permissions and redaction: can flags, omitted actions, and no protected string ever leaking."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from integration_status.core.policy import ALL_ACTIONS, ProviderView, RolePolicy, view_item
from integration_status.models import Problem
from integration_status.protocols import Viewer
from integration_status.snapshot import Ago, ProviderSnapshot, Segment, Sensitive, Visibility

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
POLICY = RolePolicy()


def github_view(branch: str = "main", repo: str = "acme/site", **kw: object) -> ProviderView:
    snap = ProviderSnapshot(
        provider="github",
        status="connected",
        summary=(
            Segment(pieces=("Linked to ", Sensitive(kind="branch", value=branch)), redacted="Linked"),
            Segment(pieces=("Last push ", Ago(at=datetime(2026, 11, 26, 5, 58, tzinfo=UTC)))),
        ),
        details={"repository": Sensitive(kind="repo", value=repo)},
    )
    return ProviderView(provider="github", snapshot=snap, changed_at=NOW, **kw)  # type: ignore[arg-type]


def render(view: ProviderView, role: str, grants: frozenset[str] = frozenset()) -> dict[str, object]:
    viewer = Viewer(user_id="u", roles={role}, grants=grants)
    item = view_item(
        view,
        allowed=POLICY.allowed_actions(viewer, "p", view.provider),
        visibility=POLICY.visibility(viewer, "p", view.provider),
        now=NOW,
    )
    return item.to_json()


def test_owner_sees_branch_and_all_actions() -> None:
    """Owners see the branch in the summary and every GitHub action."""
    item = render(github_view(), "owner")
    assert item["summary"] == "Linked to main · Last push 2m ago"
    assert [a["id"] for a in item["actions"]] == ["push", "pull", "sync", "connect"]  # type: ignore[index]


def test_member_sees_redacted_summary_and_only_member_actions() -> None:
    """Members lose repository details and the actions their role never allows are omitted, not disabled."""
    item = render(github_view(), "member")
    assert item["summary"] == "Linked · Last push 2m ago"
    assert [a["id"] for a in item["actions"]] == ["sync"]  # type: ignore[index]


def test_viewer_role_gets_no_actions_key() -> None:
    """A read-only viewer gets no actions at all (the key is omitted, never an empty list or null)."""
    assert "actions" not in render(github_view(), "viewer")


def test_grant_widens_visibility() -> None:
    """A `repo` grant lets a member see repository details."""
    assert (
        render(github_view(), "member", frozenset({"repo"}))["summary"] == "Linked to main · Last push 2m ago"
    )


def test_unknown_role_grants_nothing() -> None:
    """Roles the policy does not know grant neither actions nor visibility."""
    viewer = Viewer(user_id="u", roles={"intern"})
    assert POLICY.allowed_actions(viewer, "p", "github") == frozenset()
    assert POLICY.visibility(viewer, "p", "github") == Visibility()


def test_project_roles_override_global_roles() -> None:
    """A per-project role replaces the viewer's global roles for that project only."""
    viewer = Viewer(user_id="u", roles={"owner"}, project_roles={"p": frozenset({"viewer"})})
    assert POLICY.allowed_actions(viewer, "p", "vercel") == frozenset()
    assert POLICY.allowed_actions(viewer, "q", "vercel") == ALL_ACTIONS


def test_rate_limited_stale_view_disables_provider_calls_but_not_connect() -> None:
    """A stale serve caused by a rate limit lists actions with can=false and a reason; connect stays usable."""
    view = github_view(stale=True, problem=Problem(code="rate_limited", hint="Retry in 30s"))
    actions = {a["id"]: a for a in render(view, "owner")["actions"]}  # type: ignore[union-attr]
    assert actions["sync"] == {"id": "sync", "label": "Sync", "can": False, "reason": "Rate limited"}
    assert actions["push"]["can"] is False
    assert actions["connect"]["can"] is False  # already connected: nothing to connect
    assert actions["connect"]["reason"] == "Already connected"


def test_oauth_revoked_keeps_connect_available() -> None:
    """With the token revoked, connect is the one thing the user can do."""
    snap = ProviderSnapshot(
        provider="vercel", status="error", problem=Problem(code="oauth_revoked", hint="Click to reconnect")
    )
    item = render(ProviderView(provider="vercel", snapshot=snap, changed_at=NOW), "owner")
    actions = {a["id"]: a["can"] for a in item["actions"]}  # type: ignore[union-attr]
    assert actions == {"deploy": False, "link": True, "connect": True}


secret_text = st.text(min_size=1, max_size=30).map(lambda s: "SECRET-" + s)


@given(branch=secret_text, repo=secret_text, role=st.sampled_from(["member", "viewer", "nobody"]))
def test_redaction_never_leaks_repository_strings(branch: str, repo: str, role: str) -> None:
    """For viewers without repository access, no branch or repository name appears anywhere in the item."""
    text = json.dumps(render(github_view(branch=branch, repo=repo), role), ensure_ascii=False)
    assert branch not in text
    assert repo not in text
    assert "SECRET-" not in text
