"""What a URL reveals: the names a provider's host and path shapes embed, read from the URL alone.

A deployment URL is not just "a URL": Vercel builds preview hosts from the project, the branch and the team
(``<project>-git-<branch>-<team>.vercel.app``) and deployment hosts from the project, a hash and the team
(``<project>-<hash>-<team>.vercel.app``); a Sanity Studio host is the project's chosen name
(``<name>.sanity.studio``); GitHub and Vercel dashboard paths start with the organisation. So the default policy
shows a URL only to a viewer who may see every name in it (see
:meth:`integration_status.snapshot.Visibility.allows_url`). When a shape cannot be read with confidence it is
assumed to reveal (a URL hidden too often costs a link; one shown too often leaks a name).

>>> sorted(url_reveals("https://shop-git-feature-login-acme.vercel.app"))
['branch', 'org']
>>> sorted(url_reveals("https://shop-9jaeg38me-acme.vercel.app")), sorted(url_reveals("https://shop.vercel.app"))
(['org'], [])
>>> sorted(url_reveals("https://www.example.com/")), sorted(url_reveals("https://acme-shop.sanity.studio"))
([], ['org'])
"""

from __future__ import annotations

import re
from typing import Final, Literal, TypeAlias
from urllib.parse import urlsplit

__all__ = ["UrlReveals", "url_reveals"]

#: The kinds of names a URL may embed: ``repo`` (a repository), ``branch``, ``org`` (an organisation, team or
#: project chosen by the organisation).
UrlReveals: TypeAlias = frozenset[Literal["repo", "branch", "org"]]

_NOTHING: UrlReveals = frozenset()
_ORG: UrlReveals = frozenset({"org"})
_ORG_BRANCH: UrlReveals = frozenset({"org", "branch"})
_ORG_REPO: UrlReveals = frozenset({"org", "repo"})
_ORG_REPO_BRANCH: UrlReveals = frozenset({"org", "repo", "branch"})

#: Vercel's deployment hash: 9 lower-case letters and digits between the project and the team scope.
_VERCEL_HASH: Final = re.compile(r"[a-z0-9]{9}")
#: What else looks generated rather than chosen (letters and digits mixed, about a hash's length): read as a
#: hash too, since a shape that cannot be read with confidence is taken to reveal.
_HASH_LIKE: Final = re.compile(r"(?=[a-z0-9]*[0-9])(?=[a-z0-9]*[a-z])[a-z0-9]{7,12}")
#: DNS labels are at most 63 characters; Vercel shortens longer generated labels, which then may hold a piece of
#: the branch and the team without the ``-git-`` marker.
_MAX_LABEL: Final = 63
_MAX_URL: Final = 2048


def _vercel_app(label: str) -> UrlReveals:
    if "." in label:  # a sub-sub-domain is no shape Vercel generates
        return _ORG_BRANCH
    if "-git-" in label or len(label) >= _MAX_LABEL - 4:
        return _ORG_BRANCH
    parts = label.split("-")
    if len(parts) >= 3 and any(_VERCEL_HASH.fullmatch(p) or _HASH_LIKE.fullmatch(p) for p in parts[1:-1]):
        return _ORG
    return _NOTHING  # a project's production alias: <project>.vercel.app


def _github(path: list[str]) -> UrlReveals:
    if not path:
        return _NOTHING
    if len(path) == 1:
        return _ORG
    if len(path) >= 4 and path[2] in ("tree", "commits", "compare"):
        return _ORG_REPO_BRANCH
    return _ORG_REPO


def url_reveals(url: str) -> UrlReveals:
    """The names ``url`` embeds (see the module docstring); an unreadable URL reveals everything."""
    if len(url) > _MAX_URL:
        return _ORG_REPO_BRANCH
    try:
        parts = urlsplit(url if "://" in url else "https://" + url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return _ORG_REPO_BRANCH
    if not host:
        return _ORG_REPO_BRANCH
    path = [p for p in parts.path.split("/") if p]
    if host.endswith(".vercel.app"):
        return _vercel_app(host.removesuffix(".vercel.app"))
    if host.endswith(".sanity.studio"):
        return _ORG
    if host in ("github.com", "www.github.com"):
        return _github(path)
    if host in ("vercel.com", "www.vercel.com", "sanity.io", "www.sanity.io"):
        return _ORG if path else _NOTHING
    return _NOTHING
