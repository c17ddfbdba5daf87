"""The four real adapters, wired to one shared :class:`~integration_status.adapters.http.HttpClient`.

>>> from integration_status.adapters.http import HttpClient
>>> [a.provider for a in provider_adapters(HttpClient())]
['sanity', 'github', 'vercel', 'supabase']
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["PUBLIC_URLS", "provider_adapters"]

from integration_status.adapters.env import PUBLIC_URLS
from integration_status.adapters.github import GitHubAdapter
from integration_status.adapters.http import HttpClient
from integration_status.adapters.sanity import SanityAdapter
from integration_status.adapters.supabase import SupabaseAdapter
from integration_status.adapters.vercel import VercelAdapter
from integration_status.protocols import Adapter


def provider_adapters(http: HttpClient, *, urls: Mapping[str, str] | None = None) -> list[Adapter]:
    """GitHub, Vercel, Sanity and Supabase adapters sharing ``http``; ``urls`` overrides base URLs by key
    (``github``, ``vercel``, ``sanity``, ``sanity_query`` — a template with ``{projectId}`` — ``supabase``),
    e.g. for GitHub Enterprise Server or a proxy."""
    u = {**PUBLIC_URLS, **(urls or {})}
    return [
        SanityAdapter(http=http, api_url=u["sanity"], query_url=u["sanity_query"]),
        GitHubAdapter(http=http, base_url=u["github"]),
        VercelAdapter(http=http, base_url=u["vercel"]),
        SupabaseAdapter(http=http, base_url=u["supabase"]),
    ]
