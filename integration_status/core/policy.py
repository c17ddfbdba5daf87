"""Who may do and see what: ``can`` flags and redaction, decided server-side as pure functions.

The cache holds raw snapshots; :func:`view_item` turns one into what one viewer may see. An action the viewer's
role never allows is omitted; an action the role allows but that cannot run now is listed with ``can: false``
and a ``reason``.

>>> from integration_status.protocols import Viewer
>>> policy = RolePolicy()
>>> sorted(policy.allowed_actions(Viewer(user_id="u", roles={"member"}), "p", "vercel"))
['deploy', 'open-studio', 'sync', 'test-connection']
>>> policy.visibility(Viewer(user_id="u", roles={"member"}), "p", "github")
Visibility(repo=False, org=False, urls=True, named_urls=False)

**URLs are judged by what they reveal** (:func:`~integration_status._urls.url_reveals`). A member sees
URLs, but only those that embed no name hidden from them: a viewer without repository access sees no URL that
embeds a branch or repository (Vercel preview hosts ``<project>-git-<branch>-<team>.vercel.app``), and one who
is not an organisation member (``org`` visibility: owners and admins) no URL that embeds the organisation, team
or a project name it chose (Vercel deployment hosts ``<project>-<hash>-<team>.vercel.app``, Studio hosts
``<name>.sanity.studio``). Production aliases (``<project>.vercel.app``) and custom domains stay visible. A host
policy lifts this with ``Visibility(named_urls=True)`` (a role rule, or the viewer grant ``"named-urls"``).

>>> member = policy.visibility(Viewer(user_id="u", roles={"member"}), "p", "vercel")
>>> member.allows_url("https://docs.example.com"), member.allows_url("https://shop-git-main-acme.vercel.app")
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Final, TypeAlias

import attrs

from integration_status.models import Action, Problem, ProviderKey, StatusItem
from integration_status.protocols import Policy, Viewer
from integration_status.snapshot import (
    CONNECT_ACTIONS,
    PROVIDER_ACTIONS,
    ProviderSnapshot,
    Visibility,
    render_summary,
)

ALL_ACTIONS: Final = frozenset(a for actions in PROVIDER_ACTIONS.values() for a, _ in actions)


def _action_ids(value: Iterable[str]) -> frozenset[str]:
    return frozenset(value)


@attrs.frozen(kw_only=True)
class RoleRule:
    """What one role may do (action ids) and see."""

    actions: frozenset[str] = attrs.field(converter=_action_ids)
    visibility: Visibility


DEFAULT_RULES: Final[Mapping[str, RoleRule]] = {
    "owner": RoleRule(actions=ALL_ACTIONS, visibility=Visibility.full()),
    "admin": RoleRule(actions=ALL_ACTIONS, visibility=Visibility.full()),
    "member": RoleRule(
        actions=frozenset({"deploy", "sync", "test-connection", "open-studio"}),
        visibility=Visibility(urls=True),
    ),
    "viewer": RoleRule(actions=frozenset(), visibility=Visibility.none()),
}


#: What a viewer may do and see, per provider: ``(allowed action ids, visibility)``.
Grants: TypeAlias = tuple[tuple[frozenset[str], Visibility], ...]

GRANTS_MEMO_SIZE: Final = 1024


def _read_only(rules: Mapping[str, RoleRule]) -> Mapping[str, RoleRule]:
    # A copy nobody can change: RolePolicy memoises its answers.
    return MappingProxyType(dict(rules))


def grants_for(policy: Policy, viewer: Viewer, project_id: str, providers: tuple[ProviderKey, ...]) -> Grants:
    """``(policy.allowed_actions(...), policy.visibility(...))`` for each of ``providers``; memoised for the
    shipped :class:`RolePolicy` (a subclass or another policy is asked every time)."""
    if type(policy) is RolePolicy:
        return policy.grants_for(viewer, project_id, providers)
    return _ask(policy, viewer, project_id, providers)


def _ask(policy: Policy, viewer: Viewer, project_id: str, providers: tuple[ProviderKey, ...]) -> Grants:
    return tuple(
        (policy.allowed_actions(viewer, project_id, p), policy.visibility(viewer, project_id, p))
        for p in providers
    )


@attrs.frozen(kw_only=True)
class RolePolicy:
    """The shipped policy: a role table; several roles add up; unknown roles grant
    nothing. ``Viewer.grants`` ("repo", "org", "urls", "named-urls") widen visibility beyond the role. ``rules``
    is copied into a read-only mapping: the answers are memoised."""

    rules: Mapping[str, RoleRule] = attrs.field(factory=lambda: dict(DEFAULT_RULES), converter=_read_only)
    # (roles, grants, providers) -> the answers of grants_for: they depend on nothing else, and a status
    # request would otherwise ask eight questions. Bounded; cleared when full.
    _memo: dict[tuple[frozenset[str], frozenset[str], tuple[ProviderKey, ...]], Grants] = attrs.field(
        init=False, factory=dict, eq=False, repr=False, hash=False
    )

    def grants_for(self, viewer: Viewer, project_id: str, providers: tuple[ProviderKey, ...]) -> Grants:
        """``(allowed_actions, visibility)`` per provider. The answers of this class depend only on the
        viewer's roles for the project and its grants, so they are memoised on those (a subclass is asked
        every time): the same object for the same question, so callers may compare answers by identity."""
        if type(self) is not RolePolicy:
            return _ask(self, viewer, project_id, providers)
        if type(viewer) is Viewer:  # viewer.roles_for(project_id), without the call
            roles = viewer.project_roles.get(project_id)
            for_project = viewer.roles if roles is None else frozenset(roles)
        else:  # a subclass may answer roles_for its own way
            for_project = viewer.roles_for(project_id)
        key = (for_project, viewer.grants, providers)
        answer = self._memo.get(key)
        if answer is None:
            answer = _ask(self, viewer, project_id, providers)
            if len(self._memo) >= GRANTS_MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = answer
        return answer

    def allowed_actions(self, viewer: Viewer, project_id: str, provider: ProviderKey) -> frozenset[str]:
        allowed: frozenset[str] = frozenset()
        for role in viewer.roles_for(project_id):
            rule = self.rules.get(role)
            if rule is not None:
                allowed |= rule.actions
        return allowed

    def visibility(self, viewer: Viewer, project_id: str, provider: ProviderKey) -> Visibility:
        repo = org = urls = named_urls = False
        for role in viewer.roles_for(project_id):
            rule = self.rules.get(role)
            if rule is not None:
                repo |= rule.visibility.repo
                org |= rule.visibility.org
                urls |= rule.visibility.urls
                named_urls |= rule.visibility.named_urls
        return Visibility(
            repo=repo or "repo" in viewer.grants,
            org=org or "org" in viewer.grants,
            urls=urls or "urls" in viewer.grants,
            named_urls=named_urls or "named-urls" in viewer.grants,
        )


@attrs.frozen(kw_only=True)
class ProviderView:
    """A provider's raw state as the aggregator found it for one request, before any viewer is applied."""

    provider: ProviderKey
    snapshot: ProviderSnapshot
    changed_at: datetime
    stale: bool = False
    problem: Problem | None = (
        None  # overrides the snapshot's own problem (e.g. the failure behind a stale serve)
    )


def view_item(
    view: ProviderView, *, allowed: frozenset[str], visibility: Visibility, now: datetime
) -> StatusItem:
    """One provider's item as one viewer sees it: redacted summary, allowed actions only, ``can``/``reason``."""
    snapshot = view.snapshot
    problem = view.problem if view.problem is not None else snapshot.problem
    blocked_by = _blocking_reason(view)
    actions: list[Action] = []
    for state in snapshot.actions:
        if state.id not in allowed:
            continue
        blocked = None if state.id in CONNECT_ACTIONS else blocked_by
        can = state.available and blocked is None
        actions.append(
            Action(id=state.id, label=state.label, can=can, reason=None if can else (state.reason or blocked))
        )
    return StatusItem(
        key=view.provider,
        status=snapshot.status,
        summary=render_summary(snapshot.summary, visibility, now),
        updated_at=view.changed_at,
        stale=view.stale,
        problem=problem,
        actions=tuple(actions),
    )


def _blocking_reason(view: ProviderView) -> str | None:
    # A stale serve caused by a rate limit or auth loss also blocks actions that call the provider.
    if view.problem is None:
        return None
    if view.problem.code == "oauth_revoked":
        return "OAuth expired"
    if view.problem.code == "rate_limited":
        return "Rate limited"
    return None
