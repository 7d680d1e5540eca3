"""The docs keep up with the code: docs/settings.md lists exactly the variables that
portal/settings.py reads, and the README stays short and links only to pages that exist.

Plain file parsing: no database, no services, no Django settings needed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "portal" / "settings.py"
SETTINGS_DOC = ROOT / "docs" / "settings.md"
README = ROOT / "README.md"

HELPERS = {"envstr", "envbool", "envint", "envfloat", "envlist"}
# A table row whose first cell is one backticked variable name: | `NAME` | default | meaning |
DOC_ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|")
DOC_LINK = re.compile(r"\]\((docs/[^)#\s]+\.md)(?:#[^)\s]*)?\)")


def _is_environ_read(func: ast.expr) -> bool:
    """os.environ.get(...) or os.getenv(...)."""
    if not isinstance(func, ast.Attribute):
        return False
    owner = func.value
    if func.attr == "getenv":
        return isinstance(owner, ast.Name) and owner.id == "os"
    if func.attr == "get":
        return (
            isinstance(owner, ast.Attribute)
            and owner.attr == "environ"
            and isinstance(owner.value, ast.Name)
            and owner.value.id == "os"
        )
    return False


def _environ_subscript(node: ast.AST) -> str | None:
    """os.environ["NAME"]."""
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "environ"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "os"
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
    ):
        return node.slice.value
    return None


def settings_read() -> set[str]:
    """Every variable name portal/settings.py reads from the environment."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(SETTINGS.read_text(), filename=str(SETTINGS))):
        subscript = _environ_subscript(node)
        if subscript:
            names.add(subscript)
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        helper = isinstance(func, ast.Name) and func.id in HELPERS
        if not (helper or _is_environ_read(func)):
            continue
        first = node.args[0]
        assert isinstance(first, ast.Constant) and isinstance(first.value, str), (
            f"portal/settings.py line {node.lineno}: the variable name must be a string literal, "
            "so the docs can be checked against it"
        )
        names.add(first.value)
    return names


def settings_documented() -> set[str]:
    """The backticked names in the first column of docs/settings.md's tables."""
    names: set[str] = set()
    for line in SETTINGS_DOC.read_text().splitlines():
        match = DOC_ROW.match(line.strip())
        if match:
            names.add(match.group(1))
    return names


def test_settings_md_lists_exactly_the_variables_settings_py_reads() -> None:
    read, documented = settings_read(), settings_documented()
    assert read, "found no environment reads in portal/settings.py: has the parser gone wrong?"
    missing = sorted(read - documented)
    extra = sorted(documented - read)
    assert not missing and not extra, (
        "docs/settings.md is out of step with portal/settings.py.\n"
        f"  read but not documented (add a row `| `NAME` | default | meaning |`): {missing}\n"
        f"  documented but not read (remove the row or read it): {extra}"
    )


def test_readme_is_short_and_names_the_two_commands() -> None:
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines; manuals belong in docs/"
    assert "make up" in text
    assert "make test" in text


def test_every_docs_link_in_the_readme_points_at_a_page_that_exists() -> None:
    links = set(DOC_LINK.findall(README.read_text()))
    assert links, "README.md links to no docs/*.md page"
    broken = sorted(link for link in links if not (ROOT / link).is_file())
    assert not broken, f"README.md links to docs pages that do not exist: {broken}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    links = set(DOC_LINK.findall(README.read_text()))
    pages = {f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md")}
    unlinked = sorted(pages - links)
    assert not unlinked, f"docs pages the README does not link to: {unlinked}"
