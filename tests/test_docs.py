"""Every ```python block in README.md and docs/ runs, so the documentation cannot rot.

The blocks of one file run in order in one fresh interpreter (a later block may use what an earlier one
defined), with the repository on PYTHONPATH and an empty temporary working directory. A block preceded by
``<!-- not-run: reason -->`` is only compiled (it needs a server, the network or credentials).
See docs/README.md.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import require_postgres, require_redis

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->\s*$")
#: ``<!-- needs: postgres redis -->`` on a page: the local services its blocks use (skipped outside CI without).
NEEDS = re.compile(r"<!--\s*needs:\s*([\w ]+?)\s*-->")
RUNNER = """
import json, sys, traceback
with open(sys.argv[1]) as f:
    blocks = json.load(f)
namespace = {"__name__": "__main__"}
for block in blocks:
    try:
        exec(compile(block["code"], f"{block['file']}:{block['line']}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"the block at {block['file']}:{block['line']} failed", file=sys.stderr)
        sys.exit(1)
"""


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[dict[str, object]]:
    """The python blocks of one Markdown file: code, first line number, and the not-run reason (or None)."""
    text = path.read_text(encoding="utf-8")
    found: list[dict[str, object]] = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = NOT_RUN.search(before)
        found.append(
            {
                "file": str(path.relative_to(ROOT)),
                "line": text.count("\n", 0, match.start()) + 2,
                "code": match.group(1),
                "not_run": reason.group(1) if reason else None,
            }
        )
    return found


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path: Path, tmp_path: Path) -> None:
    """The file's python blocks compile, and all but the marked not-run ones run in order without error."""
    found = blocks(path)
    if not found:
        pytest.skip("no python blocks")
    for block in found:
        # Even not-run blocks must parse (a top-level await is fine in a snippet).
        compile(
            str(block["code"]),
            f"{block['file']}:{block['line']}",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        )
        if block["not_run"] is not None:
            assert len(str(block["not_run"])) >= 5, f"{block['file']}:{block['line']}: say why it is not run"
    needs = NEEDS.search(path.read_text(encoding="utf-8"))
    for service in needs.group(1).split() if needs else ():
        {"postgres": require_postgres, "redis": require_redis}[service]()
    runnable = [b for b in found if b["not_run"] is None]
    if not runnable:
        pytest.skip("every python block is marked not-run")
    (tmp_path / "blocks.json").write_text(json.dumps(runnable))
    (tmp_path / "runner.py").write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-W", "error", str(tmp_path / "runner.py"), str(tmp_path / "blocks.json")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_not_run_marker_is_recognised(tmp_path: Path) -> None:
    """A block right after the not-run comment is marked; the next one is not."""
    doc = tmp_path / "x.md"
    doc.write_text(
        "<!-- not-run: needs a server -->\n```python\nimport nowhere\n```\n\n```python\nx = 1\n```\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        found = blocks(doc)
    finally:
        ROOT = saved
    assert [b["not_run"] for b in found] == ["needs a server", None]
    assert found[1]["code"] == "x = 1\n"


def _imported_modules(code: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "integration_status" or m.startswith("integration_status.")}


def test_docs_and_examples_import_only_from_public_doors() -> None:
    """README, docs/ and examples/ show hosts only the public doors, never an internal module."""
    from tests.test_public_api import DOORS

    offenders: list[str] = []
    sources = [(str(b["file"]), int(b["line"]), str(b["code"])) for p in doc_files() for b in blocks(p)]
    sources += [
        (str(p.relative_to(ROOT)), 1, p.read_text()) for p in sorted((ROOT / "examples").glob("*.py"))
    ]
    for where, line, code in sources:
        for module in sorted(_imported_modules(code) - set(DOORS)):
            offenders.append(f"{where}:{line} imports {module}")
    assert offenders == []


def test_docs_speak_of_the_project_alone() -> None:
    """No page cites a specification document or folders the repository does not contain."""
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        for needle in ("SPEC.md", "SPEC ", "SPEC:", "shared/"):
            assert needle not in text, f"{path.relative_to(ROOT)} mentions {needle!r}"


def test_relative_links_lead_to_files_that_exist() -> None:
    """Every relative Markdown link of README.md and docs/ names a file or folder of the repository."""
    link = re.compile(r"\]\((?!https?://|mailto:|#)([^)#\s]+)(?:#[^)]*)?\)")
    broken = []
    for path in doc_files():
        for target in link.findall(path.read_text(encoding="utf-8")):
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert broken == []
