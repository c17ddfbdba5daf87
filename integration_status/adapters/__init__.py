"""The provider adapters: the only code that talks to provider APIs (through httpx, or psycopg for the
Supabase database probe), and the one HTTP client they share.

>>> from integration_status.adapters import HttpClient, provider_adapters
>>> [a.provider for a in provider_adapters(HttpClient())]
['sanity', 'github', 'vercel', 'supabase']

Names are imported on first use, so that ``import integration_status.adapters.env`` (what the CLI reads its
environment with) loads no HTTP stack.
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from integration_status._lazy import lazy_door as _lazy_door

if _TYPE_CHECKING:
    from integration_status.adapters.defaults import provider_adapters
    from integration_status.adapters.env import PUBLIC_URLS, adapter_urls_from_env, connections_from_env
    from integration_status.adapters.github import GitHubAdapter
    from integration_status.adapters.http import HttpClient
    from integration_status.adapters.sanity import SanityAdapter
    from integration_status.adapters.supabase import SupabaseAdapter
    from integration_status.adapters.vercel import VercelAdapter

__all__ = [
    "PUBLIC_URLS",
    "GitHubAdapter",
    "HttpClient",
    "SanityAdapter",
    "SupabaseAdapter",
    "VercelAdapter",
    "adapter_urls_from_env",
    "connections_from_env",
    "provider_adapters",
]

_WHERE = {
    "PUBLIC_URLS": "env",
    "GitHubAdapter": "github",
    "HttpClient": "http",
    "SanityAdapter": "sanity",
    "SupabaseAdapter": "supabase",
    "VercelAdapter": "vercel",
    "adapter_urls_from_env": "env",
    "connections_from_env": "env",
    "provider_adapters": "defaults",
}


__getattr__, __dir__ = _lazy_door(__name__, globals(), _WHERE)
