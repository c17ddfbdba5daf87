"""The ``integration-status`` command: ``demo`` runs the demo server, ``check`` asks the real providers.

``check`` reads credentials from environment variables, builds the connections of one project (``"cli"``),
asks the four providers through the same service the endpoints use, and prints what an owner would see::

    $ GITHUB_TOKEN=... GITHUB_REPOSITORY=octo/app integration-status check
    🗃️ DB      disconnected
    📦 Git     connected     Linked to main · Last push 2m ago
    🚀 Deploy  disconnected
    📝 CMS     disconnected

Exit status: 0 when no provider is in ``error``, 1 when one is, 2 on usage or configuration errors.
Environment handling and output formatting are pure functions; only :func:`_run_check` does I/O.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import structlog

from integration_status.exceptions import ConfigurationError, IntegrationStatusError
from integration_status.models import ProviderKey, StatusEnvelope
from integration_status.protocols import ProjectConnections, ProviderConnection, Viewer

__all__ = [
    "CLI_PROJECT_ID",
    "DEFAULT_URLS",
    "adapter_urls_from_env",
    "build_parser",
    "connections_from_env",
    "env_warnings",
    "exit_code",
    "format_json",
    "format_table",
    "main",
]

CLI_PROJECT_ID: Final = "cli"
DEFAULT_TIMEOUT: Final = 2.5
REDIS_URL_ENV: Final = "INTEGRATION_STATUS_REDIS_URL"
REDIS_PREFIX_ENV: Final = "INTEGRATION_STATUS_REDIS_PREFIX"

#: Provider API base URLs: key -> (environment variable, public default).
DEFAULT_URLS: Final[Mapping[str, tuple[str, str]]] = {
    "github": ("GITHUB_API_URL", "https://api.github.com"),
    "vercel": ("VERCEL_API_URL", "https://api.vercel.com"),
    "sanity": ("SANITY_API_URL", "https://api.sanity.io"),
    "sanity_query": ("SANITY_QUERY_URL", "https://{projectId}.api.sanity.io"),
    "supabase": ("SUPABASE_API_URL", "https://api.supabase.com"),
}

# Label per provider, in the order the workspace status bar shows them.
_LABELS: Final[tuple[tuple[ProviderKey, str], ...]] = (
    ("supabase", "🗃️ DB"),
    ("github", "📦 Git"),
    ("vercel", "🚀 Deploy"),
    ("sanity", "📝 CMS"),
)

# Variables a provider needs (all of them) and those that only refine it. Supabase needs its project ref
# plus at least one credential; see _supabase_ready.
_REQUIRED: Final[Mapping[ProviderKey, tuple[str, ...]]] = {
    "github": ("GITHUB_TOKEN", "GITHUB_REPOSITORY"),
    "vercel": ("VERCEL_TOKEN", "VERCEL_PROJECT_ID"),
    "sanity": ("SANITY_TOKEN", "SANITY_PROJECT_ID"),
    "supabase": ("SUPABASE_PROJECT_REF",),
}
_OPTIONAL: Final[Mapping[ProviderKey, tuple[str, ...]]] = {
    "github": ("GITHUB_BRANCH",),
    "vercel": ("VERCEL_TEAM_ID",),
    "sanity": ("SANITY_DATASET",),
    "supabase": ("SUPABASE_ACCESS_TOKEN", "SUPABASE_DB_URL"),
}


# --- environment -> configuration (pure) -----------------------------------------------------------------


def _get(env: Mapping[str, str], name: str) -> str | None:
    """A variable's value with surrounding whitespace removed; empty counts as unset."""
    value = env.get(name, "").strip()
    return value or None


def _supabase_ready(env: Mapping[str, str]) -> bool:
    # Either credential is enough: the token reaches the Management API, the DSN the database itself.
    return _get(env, "SUPABASE_PROJECT_REF") is not None and (
        _get(env, "SUPABASE_ACCESS_TOKEN") is not None or _get(env, "SUPABASE_DB_URL") is not None
    )


def _configured(env: Mapping[str, str], provider: ProviderKey) -> bool:
    if provider == "supabase":
        return _supabase_ready(env)
    return all(_get(env, name) is not None for name in _REQUIRED[provider])


def connections_from_env(env: Mapping[str, str]) -> ProjectConnections:
    """The connections of project ``"cli"`` from environment variables.

    A provider whose variables are not all set is left out, so it reports ``disconnected``. Raises
    :class:`~integration_status.exceptions.ConfigurationError` for a malformed ``GITHUB_REPOSITORY``.

    >>> sorted(connections_from_env({"VERCEL_TOKEN": "t", "VERCEL_PROJECT_ID": "prj_1"}).providers)
    ['vercel']
    """
    providers: dict[ProviderKey, ProviderConnection] = {}
    if _configured(env, "github"):
        repository = _get(env, "GITHUB_REPOSITORY") or ""
        owner, _, name = repository.partition("/")
        if not owner or not name or "/" in name:
            raise ConfigurationError("GITHUB_REPOSITORY must look like owner/name")
        settings = {"repository": repository}
        if branch := _get(env, "GITHUB_BRANCH"):
            settings["branch"] = branch
        providers["github"] = ProviderConnection(
            provider="github", settings=settings, token=_get(env, "GITHUB_TOKEN")
        )
    if _configured(env, "vercel"):
        settings = {"project": _get(env, "VERCEL_PROJECT_ID") or ""}
        if team := _get(env, "VERCEL_TEAM_ID"):
            settings["team_id"] = team
        providers["vercel"] = ProviderConnection(
            provider="vercel", settings=settings, token=_get(env, "VERCEL_TOKEN")
        )
    if _configured(env, "sanity"):
        settings = {
            "project_id": _get(env, "SANITY_PROJECT_ID") or "",
            "dataset": _get(env, "SANITY_DATASET") or "production",
        }
        providers["sanity"] = ProviderConnection(
            provider="sanity", settings=settings, token=_get(env, "SANITY_TOKEN")
        )
    if _configured(env, "supabase"):
        providers["supabase"] = ProviderConnection(
            provider="supabase",
            settings={"project_ref": _get(env, "SUPABASE_PROJECT_REF") or ""},
            token=_get(env, "SUPABASE_ACCESS_TOKEN"),
            dsn=_get(env, "SUPABASE_DB_URL"),
        )
    return ProjectConnections(project_id=CLI_PROJECT_ID, providers=providers)


def env_warnings(env: Mapping[str, str]) -> list[str]:
    """One line per provider that is partly configured (some of its variables set, so probably a typo).

    Names variables only, never values.
    """
    out: list[str] = []
    for provider, required in _REQUIRED.items():
        names = required + _OPTIONAL[provider]
        present = [n for n in names if _get(env, n) is not None]
        if present and not _configured(env, provider):
            missing = [n for n in required if _get(env, n) is None]
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
        value = (_get(env, variable) or default).rstrip("/")
        parts = urlsplit(value.replace("{projectId}", "project"))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"{variable} must be an http(s) URL")
        if key == "sanity_query" and "{projectId}" not in value:
            raise ConfigurationError(f"{variable} must contain the placeholder {{projectId}}")
        urls[key] = value
    return urls


# --- envelope -> output (pure) ---------------------------------------------------------------------------


def format_table(envelope: StatusEnvelope) -> str:
    """One line per provider in status-bar order: label, status, summary, and the problem if any."""
    by_key = {item.key: item for item in envelope.items}
    lines: list[str] = []
    for key, label in _LABELS:
        item = by_key.get(key)
        if item is None:
            continue
        # U+FE0F (the emoji presentation selector in 🗃️) takes no column, so it does not count as padding.
        pad = " " * max(0, 9 - len(label) + label.count("\ufe0f"))
        parts = [label + pad, f"{item.status:<12}"]
        if item.summary:
            parts.append(item.summary)
        if item.stale:
            parts.append("(stale)")
        if item.problem is not None:
            problem = (
                item.problem.code
                if item.problem.hint is None
                else f"{item.problem.code}: {item.problem.hint}"
            )
            parts.append(f"[{problem}]")
        lines.append(" ".join(parts).rstrip())
    return "\n".join(lines)


def format_json(envelope: StatusEnvelope) -> str:
    """The status envelope exactly as ``GET /status`` returns it."""
    return json.dumps(envelope.to_json(), ensure_ascii=False, separators=(",", ":"))


def exit_code(envelope: StatusEnvelope) -> int:
    """1 when any provider is in ``error``, else 0."""
    return 1 if any(item.status == "error" for item in envelope.items) else 0


# --- arguments -------------------------------------------------------------------------------------------


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError("must be between 0 and 60 seconds")
    return value


def _within(text: str, convert: Callable[[str], float], low: float, high: float) -> float:
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
    return value


def _seconds(text: str) -> float:
    return _within(text, float, 0.001, 3600)


def _count(text: str) -> int:
    return int(_within(text, int, 1, 1_000_000))


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return value


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argument parser; ``env`` supplies defaults (``INTEGRATION_STATUS_REDIS_URL``)."""
    parser = argparse.ArgumentParser(
        prog="integration-status", description="GitHub / Vercel / Sanity / Supabase connection status."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the demo server with simulated providers")
    demo.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    demo.add_argument("--port", type=_port, default=8000, help="port to listen on (default: %(default)s)")
    demo.add_argument(
        "--redis",
        metavar="URL",
        default=_get(env, REDIS_URL_ENV),
        help=f"use Redis for cache, idempotency and events (default: ${REDIS_URL_ENV}, else in memory)",
    )
    demo.add_argument(
        "--prefix",
        default=_get(env, REDIS_PREFIX_ENV) or "integration-status",
        help=f"key prefix in Redis; demos sharing Redis and prefix act as one (default: ${REDIS_PREFIX_ENV}, "
        "else %(default)s)",
    )
    demo.add_argument(
        "--providers",
        choices=("simulated", "real"),
        default="simulated",
        help="simulated providers, or the real ones configured like `check` from environment variables "
        "(project id `demo`) (default: %(default)s)",
    )

    demo.add_argument(
        "--header-timeout",
        type=_seconds,
        default=10.0,
        help="seconds a request head may take before the connection is closed (default: %(default)s)",
    )
    demo.add_argument(
        "--keep-alive",
        type=_seconds,
        default=5.0,
        help="seconds an idle keep-alive connection stays open (default: %(default)s)",
    )
    demo.add_argument(
        "--max-connections",
        type=_count,
        default=8192,
        help="open connections beyond which new ones are closed at once (default: %(default)s)",
    )

    check = commands.add_parser(
        "check",
        help="ask the real providers using credentials from environment variables",
        description="Credentials come from the GITHUB_*, VERCEL_*, SANITY_* and SUPABASE_* environment "
        "variables; a provider without them is reported as disconnected. "
        "Exit status 1 when any provider is in error, 2 on usage errors.",
    )
    check.add_argument("--json", action="store_true", help="print the status envelope as JSON")
    check.add_argument(
        "--timeout",
        type=_timeout,
        default=DEFAULT_TIMEOUT,
        help="seconds each provider may take (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point of the ``integration-status`` console script; returns the exit status."""
    env = os.environ if env is None else env
    parser = build_parser(env)
    args = parser.parse_args(argv)
    if args.command == "demo":
        server = importlib.import_module("integration_status.demo.server")
        serving = importlib.import_module("integration_status.web.serving")
        limits = serving.ServerLimits(
            header_timeout=args.header_timeout,
            keep_alive=args.keep_alive,
            max_connections=args.max_connections,
        )
        server.run(
            host=args.host,
            port=args.port,
            redis_url=args.redis,
            redis_prefix=args.prefix,
            providers=args.providers,
            limits=limits,
        )
        return 0
    if args.command == "check":
        return _check(args, env)
    parser.print_help(sys.stderr)
    return 2


def _check(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    try:
        connections_from_env(env)
        adapter_urls_from_env(env)
    except ConfigurationError as exc:
        print(f"integration-status check: {exc}", file=sys.stderr)
        return 2
    for line in env_warnings(env):
        print(f"integration-status check: {line}", file=sys.stderr)
    _configure_logging()
    try:
        envelope = anyio.run(_run_check, args, env)
    except IntegrationStatusError as exc:
        # Our own messages carry no secrets (see exceptions.py); a provider's raw text is never printed.
        print(f"integration-status check: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(format_json(envelope) if args.json else format_table(envelope))
    return exit_code(envelope)


def _configure_logging() -> None:
    # This is an application entry point, so it may configure structlog (library code never does): log lines
    # go to stderr and only from warnings up, so that stdout carries nothing but the table or the JSON.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


# --- the one place that runs the service -----------------------------------------------------------------


def _load(module: str, name: str) -> Any:
    # Looked up at call time: `demo` and argument parsing must work without loading the service and adapters.
    return getattr(importlib.import_module(module), name)


async def _run_check(args: argparse.Namespace, env: Mapping[str, str]) -> StatusEnvelope:
    """Build the service with the real adapters and ask for the status of project ``"cli"`` as its owner."""
    connections = connections_from_env(env)
    urls = adapter_urls_from_env(env)

    async def resolver(project_id: str) -> ProjectConnections | None:
        return connections if project_id == connections.project_id else None

    http = _load("integration_status.adapters.http", "HttpClient")()
    adapters = _load("integration_status.adapters.defaults", "provider_adapters")(http, urls=urls)
    # A one-shot check waits for real answers: the response deadline covers the whole adapter timeout
    # instead of the endpoint's 450 ms, so nothing is reported as a cold-start placeholder.
    settings = _load("integration_status.service", "Settings")(
        adapter_timeout=args.timeout, deadline=args.timeout + 0.5
    )
    service = _load("integration_status.service", "StatusService")(
        connections=resolver, adapters=adapters, settings=settings
    )
    try:
        async with service:
            result = await service.status(CLI_PROJECT_ID, viewer=Viewer(user_id="cli", roles={"owner"}))
    finally:
        await http.aclose()
    envelope: StatusEnvelope = result.envelope
    return envelope


if __name__ == "__main__":
    sys.exit(main())
