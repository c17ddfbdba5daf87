"""URLs are shown by what they reveal: real Vercel, Sanity and GitHub host shapes against the default roles."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status._urls import url_reveals
from integration_status.core.events import redact_event
from integration_status.core.policy import RolePolicy, RoleRule
from integration_status.protocols import Viewer
from integration_status.snapshot import Segment, Sensitive, Visibility, render_summary

POLICY = RolePolicy()
NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)

# Shapes as Vercel and Sanity generate them (https://vercel.com/docs/deployments/generated-urls).
PREVIEW = "https://storefront-git-feature-checkout-acme-team.vercel.app"
DEPLOYMENT = "https://storefront-8x2lq9fza-acme-team.vercel.app"
PERSONAL_DEPLOYMENT = "docs-9jaeg38me.vercel.app"  # the bare host a Vercel webhook sends
PRODUCTION_ALIAS = "https://storefront.vercel.app"
CUSTOM_DOMAIN = "https://www.acme-shop.com/"
STUDIO = "https://acme-storefront.sanity.studio"
GITHUB_TREE = "https://github.com/acme/storefront/tree/release-2"
DASHBOARD = "https://vercel.com/acme/storefront/2euZBFqxYdDMDG1jTrHFnNZ2eUVa"


def seen_by(role: str, url: str, *grants: str) -> bool:
    visibility = POLICY.visibility(Viewer(user_id="u", roles={role}, grants=set(grants)), "p", "vercel")
    return visibility.allows_url(url)


@pytest.mark.parametrize(
    ("url", "member", "admin"),
    [
        (PREVIEW, False, True),
        (DEPLOYMENT, False, True),
        (PERSONAL_DEPLOYMENT, True, True),
        (PRODUCTION_ALIAS, True, True),
        (CUSTOM_DOMAIN, True, True),
        (STUDIO, False, True),
        (GITHUB_TREE, False, True),
        (DASHBOARD, False, True),
    ],
)
def test_default_roles_see_urls_by_what_they_embed(url: str, member: bool, admin: bool) -> None:
    """Members see production aliases and custom domains only; admins and owners every URL; viewers none."""
    assert seen_by("member", url) is member
    assert seen_by("admin", url) is admin
    assert seen_by("owner", url) is admin
    assert seen_by("viewer", url) is False


def test_what_each_shape_reveals() -> None:
    """A preview host embeds branch and team, a deployment host the team, a Studio host the chosen name."""
    assert url_reveals(PREVIEW) == {"branch", "org"}
    assert url_reveals(DEPLOYMENT) == {"org"}
    assert url_reveals(STUDIO) == {"org"}
    assert url_reveals(GITHUB_TREE) == {"org", "repo", "branch"}
    assert url_reveals("https://github.com/acme/storefront") == {"org", "repo"}
    assert url_reveals(PRODUCTION_ALIAS) == frozenset()
    assert url_reveals("https://abcdefghijklmnopqrst.supabase.co") == frozenset()


@pytest.mark.parametrize(
    ("label", "member"),
    [
        ("storefront-892f902b-acme", False),  # a hash one character short of Vercel's: still a hash to us
        ("storefront-a1b2c3d4e5f6-acme", False),
        ("storefront-8x2lq9fza-acme-team", False),
        ("my-cool-shop", True),  # a production alias with hyphens: words, no generated part
        ("shop-2024-sale", True),
        ("docs-9jaeg38me", True),  # a personal deployment: no team in it
    ],
)
def test_a_generated_looking_part_between_project_and_team_is_read_as_a_hash(
    label: str, member: bool
) -> None:
    """A host whose middle part looks generated (letters and digits mixed, about a hash's length) is taken for
    a deployment host naming its team, even where its length is not exactly Vercel's: when unsure, hide."""
    assert seen_by("member", f"https://{label}.vercel.app") is member


@pytest.mark.parametrize("url", ["", "https://", "http://[::1", "x" * 5000, "https://a.b.c.vercel.app"])
def test_unreadable_urls_are_assumed_to_reveal(url: str) -> None:
    """An empty, malformed, oversized or unexpected-shape URL is hidden from a member."""
    assert seen_by("member", url) is False


slug = st.from_regex(r"[a-z][a-z0-9]{0,12}(-[a-z0-9]{1,8}){0,2}", fullmatch=True)


@given(slug, slug, slug)
def test_a_member_never_sees_a_preview_url_that_embeds_a_branch(project: str, branch: str, team: str) -> None:
    """Any <project>-git-<branch>-<team>.vercel.app, shortened or not, is hidden from members."""
    host = f"{project}-git-{branch}-{team}"
    shortened = host[:63]
    for label in (host, shortened):
        assert seen_by("member", f"https://{label}.vercel.app") is False


def test_a_host_policy_may_show_named_urls() -> None:
    """A role rule with named_urls, or the viewer grant "named-urls", shows preview URLs to members."""
    assert seen_by("member", PREVIEW, "named-urls") is True
    policy = RolePolicy(
        rules={
            **POLICY.rules,
            "member": RoleRule(actions=frozenset(), visibility=Visibility(urls=True, named_urls=True)),
        }
    )
    member = policy.visibility(Viewer(user_id="u", roles={"member"}), "p", "vercel")
    assert member.allows_url(PREVIEW)
    assert member.allows_url(STUDIO)


def test_repository_access_alone_does_not_show_a_team_host() -> None:
    """Repository visibility without organisation visibility still hides a preview host (it names the team)."""
    visibility = Visibility(repo=True, urls=True)
    assert not visibility.allows_url(PREVIEW)
    assert Visibility(repo=True, org=True, urls=True).allows_url(PREVIEW)


def test_deploy_finished_events_lose_urls_that_embed_names() -> None:
    """A member's deploy:finished keeps a production URL and loses a preview URL; an admin keeps both."""
    member = POLICY.visibility(Viewer(user_id="u", roles={"member"}), "p", "vercel")
    admin = POLICY.visibility(Viewer(user_id="u", roles={"admin"}), "p", "vercel")
    for url, kept in ((PRODUCTION_ALIAS, True), (PREVIEW, False), (DEPLOYMENT, False)):
        event = {"type": "deploy:finished", "projectId": "p", "success": True, "url": url, "ts": 1}
        redacted = redact_event(event, member)
        assert redacted is not None
        assert ("url" in redacted) is kept
        assert redact_event(event, admin) == event


def test_a_summary_url_segment_is_replaced_for_a_member() -> None:
    """A summary segment holding a preview URL renders its redacted text for a member, the URL for an owner."""
    summary = (
        Segment(pieces=("Preview at ", Sensitive(kind="url", value=PREVIEW)), redacted="Preview ready"),
    )
    member = POLICY.visibility(Viewer(user_id="u", roles={"member"}), "p", "vercel")
    assert render_summary(summary, member, NOW) == "Preview ready"
    assert render_summary(summary, Visibility.full(), NOW) == f"Preview at {PREVIEW}"
