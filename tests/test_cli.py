"""The ``integration-status`` command: environment parsing, output formatting and argument handling."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integration_status.cli import (
    adapter_urls_from_env,
    build_parser,
    connections_from_env,
    env_warnings,
    exit_code,
    format_json,
    format_table,
    main,
)
from integration_status.exceptions import ConfigurationError
from integration_status.models import PROVIDERS, STATUSES, Action, Problem, StatusEnvelope, StatusItem

TOKENS = {
    "GITHUB_TOKEN": "ghp_secret_github_0001",
    "VERCEL_TOKEN": "vercel_secret_0002",
    "SANITY_TOKEN": "sk_secret_sanity_0003",
    "SUPABASE_ACCESS_TOKEN": "sbp_secret_supabase_0004",
    "SUPABASE_DB_URL": "postgresql://postgres:db_secret_0005@db.example.co:5432/postgres",
}
FULL_ENV = {
    **TOKENS,
    "GITHUB_REPOSITORY": "octo/app",
    "GITHUB_BRANCH": "main",
    "VERCEL_PROJECT_ID": "prj_123",
    "VERCEL_TEAM_ID": "team_456",
    "SANITY_PROJECT_ID": "abc123",
    "SANITY_DATASET": "staging",
    "SUPABASE_PROJECT_REF": "refxyz",
}
NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


def _envelope(**statuses: str) -> StatusEnvelope:
    items = [
        StatusItem(key=key, status=statuses.get(key, "disconnected"), updated_at=NOW)  # type: ignore[arg-type]
        for key in PROVIDERS
    ]
    return StatusEnvelope(project_id="cli", items=items, hash="abc")


# --- connections_from_env ----------------------------------------------------------------------------------


def test_no_variables_means_no_connections() -> None:
    """An empty environment links no provider, so all four report disconnected."""
    conns = connections_from_env({})
    assert conns.project_id == "cli"
    assert dict(conns.providers) == {}


def test_full_environment_links_all_four() -> None:
    """Every provider's variables end up in its connection settings and credentials."""
    conns = connections_from_env(FULL_ENV)
    assert set(conns.providers) == set(PROVIDERS)
    github, vercel = conns.providers["github"], conns.providers["vercel"]
    sanity, supabase = conns.providers["sanity"], conns.providers["supabase"]
    assert dict(github.settings) == {"repository": "octo/app", "branch": "main"}
    assert github.token is not None
    assert github.token.reveal() == TOKENS["GITHUB_TOKEN"]
    assert dict(vercel.settings) == {"project": "prj_123", "team_id": "team_456"}
    assert vercel.token is not None
    assert vercel.token.reveal() == TOKENS["VERCEL_TOKEN"]
    assert dict(sanity.settings) == {"project_id": "abc123", "dataset": "staging"}
    assert sanity.token is not None
    assert sanity.token.reveal() == TOKENS["SANITY_TOKEN"]
    assert dict(supabase.settings) == {"project_ref": "refxyz"}
    assert supabase.token is not None
    assert supabase.token.reveal() == TOKENS["SUPABASE_ACCESS_TOKEN"]
    assert supabase.dsn is not None
    assert supabase.dsn.reveal() == TOKENS["SUPABASE_DB_URL"]


def test_connections_repr_shows_no_secret() -> None:
    """The repr of the connections built from the environment contains none of the credentials."""
    text = repr(connections_from_env(FULL_ENV))
    for secret in TOKENS.values():
        assert secret not in text
    assert "db_secret_0005" not in text


def test_optional_variables_have_defaults() -> None:
    """Without branch, team or dataset the settings omit them, and Sanity's dataset is production."""
    env = {
        k: v for k, v in FULL_ENV.items() if k not in {"GITHUB_BRANCH", "VERCEL_TEAM_ID", "SANITY_DATASET"}
    }
    conns = connections_from_env(env)
    assert dict(conns.providers["github"].settings) == {"repository": "octo/app"}
    assert dict(conns.providers["vercel"].settings) == {"project": "prj_123"}
    assert conns.providers["sanity"].settings["dataset"] == "production"


@pytest.mark.parametrize(
    ("missing", "provider"),
    [
        ("GITHUB_TOKEN", "github"),
        ("GITHUB_REPOSITORY", "github"),
        ("VERCEL_TOKEN", "vercel"),
        ("VERCEL_PROJECT_ID", "vercel"),
        ("SANITY_TOKEN", "sanity"),
        ("SANITY_PROJECT_ID", "sanity"),
        ("SUPABASE_PROJECT_REF", "supabase"),
    ],
)
def test_provider_without_a_required_variable_is_absent(missing: str, provider: str) -> None:
    """Dropping one required variable leaves that provider out and keeps the other three."""
    env = {k: v for k, v in FULL_ENV.items() if k != missing}
    conns = connections_from_env(env)
    assert provider not in conns.providers
    assert len(conns.providers) == 3


def test_blank_values_count_as_unset() -> None:
    """Empty or whitespace-only variables do not link a provider; values are stripped."""
    conns = connections_from_env(
        {"GITHUB_TOKEN": "  ", "GITHUB_REPOSITORY": "octo/app", "VERCEL_TOKEN": " t \n"}
    )
    assert dict(conns.providers) == {}
    conns = connections_from_env({"VERCEL_TOKEN": " t \n", "VERCEL_PROJECT_ID": " prj "})
    assert conns.providers["vercel"].settings["project"] == "prj"
    token = conns.providers["vercel"].token
    assert token is not None
    assert token.reveal() == "t"


def test_supabase_needs_one_credential() -> None:
    """Supabase links with its project ref plus either the access token or the database URL."""
    only_dsn = connections_from_env({"SUPABASE_PROJECT_REF": "r", "SUPABASE_DB_URL": "postgresql://h/db"})
    assert only_dsn.providers["supabase"].token is None
    assert only_dsn.providers["supabase"].dsn is not None
    only_token = connections_from_env({"SUPABASE_PROJECT_REF": "r", "SUPABASE_ACCESS_TOKEN": "sbp"})
    assert only_token.providers["supabase"].dsn is None
    assert "supabase" not in connections_from_env({"SUPABASE_PROJECT_REF": "r"}).providers


@pytest.mark.parametrize("repository", ["octo", "octo/", "/app", "octo/app/extra"])
def test_malformed_repository_is_a_configuration_error(repository: str) -> None:
    """GITHUB_REPOSITORY must be owner/name."""
    with pytest.raises(ConfigurationError, match="owner/name"):
        connections_from_env({"GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": repository})


def test_partial_configuration_is_warned_about_without_values() -> None:
    """A provider with some but not all variables gets a warning naming the missing variables, not values."""
    warnings = env_warnings({"GITHUB_TOKEN": TOKENS["GITHUB_TOKEN"], "SUPABASE_PROJECT_REF": "r"})
    assert len(warnings) == 2
    github = next(w for w in warnings if w.startswith("github"))
    assert "GITHUB_REPOSITORY" in github
    assert TOKENS["GITHUB_TOKEN"] not in github
    supabase = next(w for w in warnings if w.startswith("supabase"))
    assert "SUPABASE_ACCESS_TOKEN or SUPABASE_DB_URL" in supabase
    assert env_warnings(FULL_ENV) == []
    assert env_warnings({}) == []


# --- adapter_urls_from_env ---------------------------------------------------------------------------------


def test_urls_default_to_the_public_hosts() -> None:
    """Without overrides every provider uses its public API host."""
    assert adapter_urls_from_env({}) == {
        "github": "https://api.github.com",
        "vercel": "https://api.vercel.com",
        "sanity": "https://api.sanity.io",
        "sanity_query": "https://{projectId}.api.sanity.io",
        "supabase": "https://api.supabase.com",
    }


def test_urls_are_overridable() -> None:
    """Each *_API_URL variable replaces its default, without a trailing slash."""
    env = {
        "GITHUB_API_URL": "http://127.0.0.1:9001/",
        "VERCEL_API_URL": "http://127.0.0.1:9002",
        "SANITY_API_URL": "http://127.0.0.1:9003/sanity",
        "SANITY_QUERY_URL": "http://127.0.0.1:9004/{projectId}/",
        "SUPABASE_API_URL": "http://127.0.0.1:9005",
    }
    assert adapter_urls_from_env(env) == {
        "github": "http://127.0.0.1:9001",
        "vercel": "http://127.0.0.1:9002",
        "sanity": "http://127.0.0.1:9003/sanity",
        "sanity_query": "http://127.0.0.1:9004/{projectId}",
        "supabase": "http://127.0.0.1:9005",
    }


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GITHUB_API_URL", "ftp://example.com", "GITHUB_API_URL"),
        ("VERCEL_API_URL", "not a url", "VERCEL_API_URL"),
        ("SANITY_QUERY_URL", "https://api.sanity.io", "projectId"),
    ],
)
def test_bad_urls_are_configuration_errors(variable: str, value: str, message: str) -> None:
    """A non-http(s) URL, or a query URL without {projectId}, is refused naming the variable."""
    with pytest.raises(ConfigurationError, match=message):
        adapter_urls_from_env({variable: value})


# --- output ------------------------------------------------------------------------------------------------


def test_table_lists_providers_in_status_bar_order() -> None:
    """The table has one line per provider: DB, Git, Deploy, CMS, each with its emoji label and status."""
    lines = format_table(_envelope(github="connected", supabase="warning")).splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("🗃️ DB")
    assert "warning" in lines[0]
    assert lines[1].startswith("📦 Git")
    assert "connected" in lines[1]
    assert lines[2].startswith("🚀 Deploy")
    assert "disconnected" in lines[2]
    assert lines[3].startswith("📝 CMS")
    assert "disconnected" in lines[3]


def test_table_status_column_lines_up_on_screen() -> None:
    """The status column starts at the same screen column on every line (the emoji selector takes none)."""
    statuses = dict(zip(PROVIDERS, STATUSES, strict=True))
    lines = format_table(_envelope(**statuses)).splitlines()
    columns = {
        line.replace("\ufe0f", "").index(status)
        for line, status in zip(
            lines,
            [statuses["supabase"], statuses["github"], statuses["vercel"], statuses["sanity"]],
            strict=True,
        )
    }
    assert len(columns) == 1


def test_table_shows_summary_stale_and_problem() -> None:
    """Summary, the stale marker and the problem code with its hint all appear on the provider's line."""
    github = StatusItem(
        key="github",
        status="connected",
        updated_at=NOW,
        summary="Linked to main · Last push 2m ago",
        stale=True,
        problem=Problem(code="rate_limited", hint="Retry in 30s"),
        actions=(Action(id="push", label="Push", can=True),),
    )
    vercel = StatusItem(key="vercel", status="error", updated_at=NOW, problem=Problem(code="timeout"))
    replaced = {"github": github, "vercel": vercel}
    envelope = StatusEnvelope(project_id="cli", items=[replaced.get(i.key, i) for i in _envelope().items])
    lines = format_table(envelope).splitlines()
    assert "Linked to main · Last push 2m ago" in lines[1]
    assert "(stale)" in lines[1]
    assert "[rate_limited: Retry in 30s]" in lines[1]
    assert lines[2].endswith("[timeout]")
    assert "(stale)" not in lines[2]


def test_json_is_exactly_the_status_envelope() -> None:
    """--json output parses back to the same envelope, with keys projectId, items, hash in wire order."""
    envelope = _envelope(github="connected", vercel="error")
    text = format_json(envelope)
    data = json.loads(text)
    assert list(data) == ["projectId", "items", "hash"]
    assert [item["key"] for item in data["items"]] == ["sanity", "github", "vercel", "supabase"]
    assert data == envelope.to_json()
    assert StatusEnvelope.from_json(data) == envelope


@given(st.lists(st.sampled_from(STATUSES), min_size=4, max_size=4))
def test_exit_code_is_one_exactly_when_an_item_is_in_error(statuses: list[str]) -> None:
    """The exit status is 1 if and only if some provider's status is error."""
    envelope = _envelope(**dict(zip(PROVIDERS, statuses, strict=True)))
    assert exit_code(envelope) == (1 if "error" in statuses else 0)


# --- arguments ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"], ["demo", "--help"]])
def test_help_exits_zero(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--help at every level prints usage and exits 0."""
    with pytest.raises(SystemExit) as info:
        main(argv, env={})
    assert info.value.code == 0
    assert "usage: integration-status" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--timeout", "soon"],
        ["check", "--timeout", "0"],
        ["check", "--timeout", "-1"],
        ["check", "--bogus"],
        ["demo", "--port", "70000"],
        ["demo", "--port", "http"],
        ["launch"],
    ],
)
def test_bad_arguments_exit_two(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Malformed options and unknown commands are usage errors: exit status 2 with a message on stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv, env={})
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_no_command_prints_help_and_returns_two(capsys: pytest.CaptureFixture[str]) -> None:
    """Running without a command shows the commands and returns the usage-error status."""
    assert main([], env={}) == 2
    err = capsys.readouterr().err
    assert "check" in err
    assert "demo" in err


def test_check_parses_json_and_timeout() -> None:
    """check takes --json and a --timeout in seconds, defaulting to 2.5 s."""
    parser = build_parser({})
    assert parser.parse_args(["check"]).timeout == 2.5
    args = parser.parse_args(["check", "--json", "--timeout", "3"])
    assert args.json is True
    assert args.timeout == 3.0


def test_demo_redis_defaults_to_the_environment() -> None:
    """demo --redis falls back to INTEGRATION_STATUS_REDIS_URL, and the flag wins over it."""
    env = {"INTEGRATION_STATUS_REDIS_URL": "redis://127.0.0.1:6379/3"}
    args = build_parser(env).parse_args(["demo"])
    assert (args.host, args.port, args.redis) == ("127.0.0.1", 8000, "redis://127.0.0.1:6379/3")
    assert build_parser({}).parse_args(["demo"]).redis is None
    args = build_parser(env).parse_args(["demo", "--redis", "redis://other:6379/0", "--port", "9000"])
    assert (args.port, args.redis) == (9000, "redis://other:6379/0")


def test_demo_redis_cluster_comes_from_the_flag_or_the_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--redis-cluster defaults to INTEGRATION_STATUS_REDIS_CLUSTER; an unusable value exits 2 naming it."""
    assert build_parser({}).parse_args(["demo"]).redis_cluster is False
    assert build_parser({}).parse_args(["demo", "--redis-cluster"]).redis_cluster is True
    assert (
        build_parser({"INTEGRATION_STATUS_REDIS_CLUSTER": "true"}).parse_args(["demo"]).redis_cluster is True
    )
    assert main(["demo"], env={"INTEGRATION_STATUS_REDIS_CLUSTER": "maybe"}) == 2
    assert "INTEGRATION_STATUS_REDIS_CLUSTER must be true or false" in capsys.readouterr().err


def test_check_with_bad_configuration_exits_two_without_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed variable stops check before any provider is asked: exit 2, message without the token."""
    env = {"GITHUB_TOKEN": TOKENS["GITHUB_TOKEN"], "GITHUB_REPOSITORY": "not-a-repo"}
    assert main(["check"], env=env) == 2
    captured = capsys.readouterr()
    assert "GITHUB_REPOSITORY must look like owner/name" in captured.err
    assert TOKENS["GITHUB_TOKEN"] not in captured.err + captured.out


def test_importing_the_cli_stays_light() -> None:
    """Importing the CLI module loads neither psycopg, httpx, redis nor a web framework."""
    code = (
        "import sys, integration_status.cli; "
        "print(sorted(m for m in ('psycopg', 'httpx', 'redis', 'starlette', 'flask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
