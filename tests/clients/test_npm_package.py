"""clients/typescript is a publishable npm package: what ``npm pack`` would ship, and where its entry points lead."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "typescript"


def test_package_json_points_at_files_that_exist() -> None:
    """An ES module package whose main, types and exports name files in the package, publishable (not private)."""
    package = json.loads((CLIENT / "package.json").read_text())
    assert package["type"] == "module"
    assert "private" not in package
    assert package["license"] == "MIT"
    entry = package["exports"]["."]
    for path in (package["main"], package["types"], entry["types"], entry["default"]):
        assert (CLIENT / path).is_file(), path
    assert list(entry) == ["types", "default"]  # "types" first, as TypeScript's resolution requires


def test_npm_pack_ships_the_module_types_readme_and_license_only() -> None:
    """``npm pack --dry-run`` lists exactly the client, its declarations, the README, LICENSE and package.json."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm not found: the package check needs Node.js (apt-get install nodejs npm)")
    result = subprocess.run(
        [npm, "pack", "--dry-run", "--json", "--ignore-scripts"],
        cwd=CLIENT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    (report,) = json.loads(result.stdout)
    assert {f["path"] for f in report["files"]} == {
        "LICENSE",
        "README.md",
        "integration-status.d.ts",
        "integration-status.js",
        "package.json",
    }
    assert report["name"] == "integration-status-client"


def test_the_license_is_the_projects() -> None:
    """The package carries the project's MIT license text."""
    assert (CLIENT / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    assert "MIT License" in (ROOT / "LICENSE").read_text()


def test_the_readme_documents_the_stream_behaviour() -> None:
    """The README explains Last-Event-ID resumption and the overloaded frame, and shows React Query."""
    readme = (CLIENT / "README.md").read_text()
    for words in (
        "Last-Event-ID",
        "lastEventId",
        "event: overloaded",
        "@tanstack/react-query",
        "retry: 30000",
    ):
        assert words in readme, words
