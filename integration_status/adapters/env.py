"""A project's provider connections and the adapters' base URLs, from environment variables.

What ``integration-status check`` and the demo's ``--providers real`` read: ``GITHUB_TOKEN`` and
``GITHUB_REPOSITORY`` (``GITHUB_BRANCH``), ``VERCEL_TOKEN`` and ``VERCEL_PROJECT_ID`` (``VERCEL_TEAM_ID``),
``SANITY_TOKEN`` and ``SANITY_PROJECT_ID`` (``SANITY_DATASET``), ``SUPABASE_PROJECT_REF`` with
``SUPABASE_ACCESS_TOKEN`` and/or ``SUPABASE_DB_URL``, and a base URL override per API (``GITHUB_API_URL``, ...).
Pure functions over a mapping: pass ``os.environ`` or a dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from integration_status.exceptions import ConfigurationError
from integration_status.models import ProviderKey
from integration_status.protocols import ProjectConnections, ProviderConnection

__all__ = [
    "CLI_PROJECT_ID",
    "DEFAULT_URLS",
    "OPTIONAL",
    "PUBLIC_URLS",
    "REQUIRED",
    "URL_VARIABLES",
    "adapter_urls_from_env",
    "connections_from_env",
    "env_value",
    "env_warnings",
]

PUBLIC_URLS: Final[Mapping[str, str]] = {
    "github": "https://api.github.com",
    "vercel": "https://api.vercel.com",
    "sanity": "https://api.sanity.io",
    "sanity_query": "https://{projectId}.api.sanity.io",
    "supabase": "https://api.supabase.com",
}
"""The public API hosts, by the keys ``provider_adapters(urls=...)`` takes."""

#: The project id of the connections built from the environment.
CLI_PROJECT_ID: Final = "cli"

#: Provider API base URLs: key -> (environment variable, public default).
URL_VARIABLES: Final[Mapping[str, str]] = {
    "github": "GITHUB_API_URL",
    "vercel": "VERCEL_API_URL",
    "sanity": "SANITY_API_URL",
    "sanity_query": "SANITY_QUERY_URL",
    "supabase": "SUPABASE_API_URL",
}
DEFAULT_URLS: Final[Mapping[str, tuple[str, str]]] = {
    key: (variable, PUBLIC_URLS[key]) for key, variable in URL_VARIABLES.items()
}


#: Variables a provider needs (all of them) and those that only refine it. Supabase needs its project ref
#: plus at least one credential; see _supabase_ready.
REQUIRED: Final[Mapping[ProviderKey, tuple[str, ...]]] = {
    "github": ("GITHUB_TOKEN", "GITHUB_REPOSITORY"),
    "vercel": ("VERCEL_TOKEN", "VERCEL_PROJECT_ID"),
    "sanity": ("SANITY_TOKEN", "SANITY_PROJECT_ID"),
    "supabase": ("SUPABASE_PROJECT_REF",),
}
OPTIONAL: Final[Mapping[ProviderKey, tuple[str, ...]]] = {
    "github": ("GITHUB_BRANCH",),
    "vercel": ("VERCEL_TEAM_ID",),
    "sanity": ("SANITY_DATASET",),
    "supabase": ("SUPABASE_ACCESS_TOKEN", "SUPABASE_DB_URL"),
}


def env_value(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value with surrounding whitespace removed; empty counts as unset."""
    value = env.get(name, "").strip()
    return value or None


def _supabase_ready(env: Mapping[str, str]) -> bool:
    # Either credential is enough: the token reaches the Management API, the DSN the database itself.
    return env_value(env, "SUPABASE_PROJECT_REF") is not None and (
        env_value(env, "SUPABASE_ACCESS_TOKEN") is not None or env_value(env, "SUPABASE_DB_URL") is not None
    )


def _configured(env: Mapping[str, str], provider: ProviderKey) -> bool:
    if provider == "supabase":
        return _supabase_ready(env)
    return all(env_value(env, name) is not None for name in REQUIRED[provider])


def connections_from_env(env: Mapping[str, str]) -> ProjectConnections:
    """The connections of project ``"cli"`` from environment variables.

    A provider whose variables are not all set is left out, so it reports ``disconnected``. Raises
    :class:`~integration_status.exceptions.ConfigurationError` for a malformed ``GITHUB_REPOSITORY``.

    >>> sorted(connections_from_env({"VERCEL_TOKEN": "t", "VERCEL_PROJECT_ID": "prj_1"}).providers)
    ['vercel']
    """
    providers: dict[ProviderKey, ProviderConnection] = {}
    if _configured(env, "github"):
        repository = env_value(env, "GITHUB_REPOSITORY") or ""
        owner, _, name = repository.partition("/")
        if not owner or not name or "/" in name:
            raise ConfigurationError("GITHUB_REPOSITORY must look like owner/name")
        settings = {"repository": repository}
        if branch := env_value(env, "GITHUB_BRANCH"):
            settings["branch"] = branch
        providers["github"] = ProviderConnection(
            provider="github", settings=settings, token=env_value(env, "GITHUB_TOKEN")
        )
    if _configured(env, "vercel"):
        settings = {"project": env_value(env, "VERCEL_PROJECT_ID") or ""}
        if team := env_value(env, "VERCEL_TEAM_ID"):
            settings["team_id"] = team
        providers["vercel"] = ProviderConnection(
            provider="vercel", settings=settings, token=env_value(env, "VERCEL_TOKEN")
        )
    if _configured(env, "sanity"):
        settings = {
            "project_id": env_value(env, "SANITY_PROJECT_ID") or "",
            "dataset": env_value(env, "SANITY_DATASET") or "production",
        }
        providers["sanity"] = ProviderConnection(
            provider="sanity", settings=settings, token=env_value(env, "SANITY_TOKEN")
        )
    if _configured(env, "supabase"):
        providers["supabase"] = ProviderConnection(
            provider="supabase",
            settings={"project_ref": env_value(env, "SUPABASE_PROJECT_REF") or ""},
            token=env_value(env, "SUPABASE_ACCESS_TOKEN"),
            dsn=env_value(env, "SUPABASE_DB_URL"),
        )
    return ProjectConnections(project_id=CLI_PROJECT_ID, providers=providers)


def env_warnings(env: Mapping[str, str]) -> list[str]:
    """One line per provider that is partly configured (some of its variables set, so probably a typo).

    Names variables only, never values.
    """
    out: list[str] = []
    for provider, required in REQUIRED.items():
        names = required + OPTIONAL[provider]
        present = [n for n in names if env_value(env, n) is not None]
        if present and not _configured(env, provider):
            missing = [n for n in required if env_value(env, n) is None]
            if provider == "supabase" and not missing:
                missing = ["SUPABASE_ACCESS_TOKEN or SUPABASE_DB_URL"]
            out.append(f"{provider}: {', '.join(present)} set but {', '.join(missing)} missing; disconnected")
    return out


def adapter_urls_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """Provider base URLs (keys of :data:`DEFAULT_URLS`), each overridable by its variable.

    Trailing slashes are dropped. Raises ConfigurationError for a URL that is not http(s), or a
    ``SANITY_QUERY_URL`` without the ``{projectId}`` placeholder.

    >>> adapter_urls_from_env({"GITHUB_API_URL": "http://127.0.0.1:9000/"})["github"]
    'http://127.0.0.1:9000'
    """
    urls: dict[str, str] = {}
    for key, (variable, default) in DEFAULT_URLS.items():
        value = (env_value(env, variable) or default).rstrip("/")
        parts = urlsplit(value.replace("{projectId}", "project"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"{variable} must be an http(s) URL")
        if key == "sanity_query" and "{projectId}" not in value:
            raise ConfigurationError(f"{variable} must contain the placeholder {{projectId}}")
        urls[key] = value
    return urls
