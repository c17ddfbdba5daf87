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

import anyio
import attrs

from integration_status._env import parse
from integration_status._version import __version__
from integration_status.adapters.env import (
    CLI_PROJECT_ID,
    DEFAULT_URLS,
    OPTIONAL,
    REQUIRED,
    adapter_urls_from_env,
    connections_from_env,
    env_value,
    env_warnings,
)
from integration_status.exceptions import ConfigurationError, IntegrationStatusError
from integration_status.models import ProviderKey, StatusEnvelope
from integration_status.protocols import ProjectConnections, Viewer

__all__ = [
    "CLI_PROJECT_ID",
    "DEFAULT_URLS",
    "adapter_urls_from_env",
    "build_parser",
    "connections_from_env",
    "env_table",
    "env_warnings",
    "exit_code",
    "format_json",
    "format_table",
    "main",
]

DEFAULT_TIMEOUT: Final = 2.5
REDIS_URL_ENV: Final = "INTEGRATION_STATUS_REDIS_URL"
REDIS_PREFIX_ENV: Final = "INTEGRATION_STATUS_REDIS_PREFIX"
REDIS_CLUSTER_ENV: Final = "INTEGRATION_STATUS_REDIS_CLUSTER"

# Label per provider, in the order the workspace status bar shows them.
_LABELS: Final[tuple[tuple[ProviderKey, str], ...]] = (
    ("supabase", "🗃️ DB"),
    ("github", "📦 Git"),
    ("vercel", "🚀 Deploy"),
    ("sanity", "📝 CMS"),
)

#: What each variable of ``check`` means, for ``check --help`` and docs/reference.md.
_MEANINGS: Final[Mapping[str, str]] = {
    "GITHUB_TOKEN": "GitHub token (repo read access)",
    "GITHUB_REPOSITORY": "owner/name",
    "GITHUB_BRANCH": "branch to report (default: the repository's default branch)",
    "VERCEL_TOKEN": "Vercel access token",
    "VERCEL_PROJECT_ID": "Vercel project id or name",
    "VERCEL_TEAM_ID": "team owning the project",
    "SANITY_TOKEN": "Sanity API token",
    "SANITY_PROJECT_ID": "Sanity project id",
    "SANITY_DATASET": "dataset (default: production)",
    "SUPABASE_PROJECT_REF": "Supabase project ref",
    "SUPABASE_ACCESS_TOKEN": "Management API token (this or SUPABASE_DB_URL)",
    "SUPABASE_DB_URL": "PostgreSQL DSN for the direct probe",
}


def env_table() -> str:
    """The variables ``check`` reads, one per line: name, required or optional, meaning."""
    lines = []
    for provider, required in REQUIRED.items():
        for name in required + OPTIONAL[provider]:
            need = "required" if name in required else "optional"
            lines.append(f"  {name:<24} {need:<9} {_MEANINGS[name]}")
    for variable, default in DEFAULT_URLS.values():
        lines.append(f"  {variable:<24} {'optional':<9} API base URL (default: {default})")
    lines.append(
        f"  {'INTEGRATION_STATUS_*':<24} {'optional':<9} service settings, e.g. INTEGRATION_STATUS_CACHE_TTL"
    )
    return "\n".join(lines)


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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the demo server with simulated providers")
    demo.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    demo.add_argument("--port", type=_port, default=8000, help="port to listen on (default: %(default)s)")
    demo.add_argument(
        "--redis",
        metavar="URL",
        default=env_value(env, REDIS_URL_ENV),
        help=f"use Redis for cache, idempotency and events (default: ${REDIS_URL_ENV}, else in memory)",
    )
    demo.add_argument(
        "--redis-cluster",
        action="store_true",
        default=parse(REDIS_CLUSTER_ENV, env_value(env, REDIS_CLUSTER_ENV) or "false", bool),
        help=f"the --redis URL is one node of a Redis Cluster (default: ${REDIS_CLUSTER_ENV}, else no)",
    )
    demo.add_argument(
        "--prefix",
        default=env_value(env, REDIS_PREFIX_ENV) or "integration-status",
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
        "variables; a provider without its required ones is reported as disconnected. "
        "Exit status 1 when any provider is in error, 2 on usage errors.",
        epilog=f"environment variables:\n{env_table()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    try:
        code = _main(argv, env)
        sys.stdout.flush()  # inside the try: a reader that went away (``| head``) is noticed here
    except BrokenPipeError:
        # The reader closed the pipe: stop quietly, as command-line tools do, and keep the interpreter from
        # complaining again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


def _main(argv: Sequence[str] | None, env: Mapping[str, str] | None) -> int:
    env = os.environ if env is None else env
    try:
        parser = build_parser(env)
    except ConfigurationError as exc:  # a default read from the environment is unusable
        print(f"integration-status: {exc}", file=sys.stderr)
        return 2
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
            redis_cluster=args.redis_cluster,
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
        _load("integration_status.service", "Settings").from_env(env)
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
    # This is an application entry point, so it may configure logging (library code never does): log lines go
    # to stderr and only from warnings up, so that stdout carries nothing but the table or the JSON.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
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
    settings = attrs.evolve(
        _load("integration_status.service", "Settings").from_env(env),
        adapter_timeout=args.timeout,
        deadline=args.timeout + 0.5,
    )
    service = _load("integration_status.service", "StatusService")(
        connections=resolver, adapters=adapters, settings=settings
    )
    try:
        async with service:
            result = await service.status(
                CLI_PROJECT_ID, viewer=Viewer(user_id="cli", project_roles={CLI_PROJECT_ID: {"owner"}})
            )
    finally:
        await http.aclose()
    envelope: StatusEnvelope = result.envelope
    return envelope


if __name__ == "__main__":
    sys.exit(main())
