"""RolePolicy's memoised answers: the same answers as asking each question, shared per (roles, grants)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from integration_status.core.policy import DEFAULT_RULES, RolePolicy, RoleRule, grants_for
from integration_status.models import PROVIDERS, ProviderKey
from integration_status.protocols import Viewer
from integration_status.snapshot import Visibility

ROLES = st.frozensets(st.sampled_from(["owner", "admin", "member", "viewer", "unknown"]), max_size=3)
GRANTS = st.frozensets(st.sampled_from(["repo", "org", "urls"]), max_size=3)


@given(roles=ROLES, grants=GRANTS, project_roles=st.none() | ROLES)
def test_memoised_answers_equal_the_plain_questions(
    roles: frozenset[str], grants: frozenset[str], project_roles: frozenset[str] | None
) -> None:
    """grants_for answers what allowed_actions and visibility answer, for every provider."""
    policy = RolePolicy()
    per_project = {} if project_roles is None else {"p": project_roles}
    viewer = Viewer(user_id="u", roles=roles, grants=grants, project_roles=per_project)
    for _ in range(2):  # the second time from the memo
        got = grants_for(policy, viewer, "p", PROVIDERS)
        assert got == tuple(
            (policy.allowed_actions(viewer, "p", p), policy.visibility(viewer, "p", p)) for p in PROVIDERS
        )


def test_same_roles_and_grants_share_one_answer() -> None:
    """Two users with the same roles and grants get the very same answer object; other grants do not."""
    policy = RolePolicy()
    a = grants_for(policy, Viewer(user_id="a", roles={"member"}), "p", PROVIDERS)
    b = grants_for(policy, Viewer(user_id="b", roles={"member"}), "q", PROVIDERS)
    c = grants_for(policy, Viewer(user_id="c", roles={"member"}, grants={"repo"}), "p", PROVIDERS)
    assert a is b
    assert c is not a
    assert c[0][1].repo
    assert not a[0][1].repo


def test_rules_are_copied_read_only() -> None:
    """Changing the dict a policy was built from changes nothing the policy answers."""
    rules = dict(DEFAULT_RULES)
    policy = RolePolicy(rules=rules)
    viewer = Viewer(user_id="u", roles={"viewer"})
    before = grants_for(policy, viewer, "p", PROVIDERS)
    rules["viewer"] = RoleRule(actions=frozenset({"deploy"}), visibility=Visibility.full())
    assert grants_for(policy, viewer, "p", PROVIDERS) == before
    assert policy.allowed_actions(viewer, "p", "github") == frozenset()


def test_subclasses_are_asked_every_time() -> None:
    """A RolePolicy subclass may answer per provider or per user: it is never memoised."""

    class PerUser(RolePolicy):
        def visibility(self, viewer: Viewer, project_id: str, provider: ProviderKey) -> Visibility:
            return Visibility(repo=viewer.user_id == "alice" and provider == "github")

    policy = PerUser()
    alice = grants_for(policy, Viewer(user_id="alice", roles={"member"}), "p", PROVIDERS)
    bob = grants_for(policy, Viewer(user_id="bob", roles={"member"}), "p", PROVIDERS)
    assert [v.repo for _, v in alice] == [p == "github" for p in PROVIDERS]
    assert not any(v.repo for _, v in bob)
