"""The layers of shared/DESIGN.md, checked on the source: each package's models, services,
selectors and tasks import only their own layer or below; pages (views, API, forms, admin, urls,
websocket consumers, management commands) may use anything; the product never imports the lab
or the bench; function-local imports between apps say why in a comment."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "apps"

LAYERS = {
    "audit": 0,  # the audit trail: everything above hosts records into it; it imports no other app
    "hosts": 0,  # inventory, transports, gateway, probing, host-to-host copy
    "accounts": 1,  # teams, roles, who may do what
    "network": 1,  # IP pools and addresses
    "applications": 2,  # the core: apps, volumes
    "instances": 2,  # the core: instances, operations, executor, reconcile, health
    "metrics": 3,
    "resources": 3,
    "console": 3,
    "relocations": 3,
    "images": 3,
    "fleet": 3,
    "events": 3,  # container events, the timeline
    "alerts": 3,  # rules, alerts, webhooks, notifications
    "lab": 4,  # builds on the product; the product never imports it
}
PAGES = {"views", "api", "forms", "admin", "urls", "consumers", "routing", "context_processors"}


def _modules() -> Iterator[tuple[str, Path, bool]]:
    for path in sorted(APPS.rglob("*.py")):
        rel = path.relative_to(APPS)
        if "migrations" in rel.parts:
            continue
        package = rel.parts[0]
        if package == "__init__.py":
            continue
        page = path.stem in PAGES or "management" in rel.parts
        yield package, path, page


def _imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(app imported, line, function-local) for each import of another Slipway app."""
    tree = ast.parse(path.read_text())
    local_lines: set[int] = set()
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        # `if TYPE_CHECKING:` imports are for the type checker only: no edge at run time.
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            typing_only |= {
                inner.lineno for inner in ast.walk(node) if isinstance(inner, ast.Import | ast.ImportFrom)
            }
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    local_lines.add(inner.lineno)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom) or node.lineno in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "apps" and len(parts) > 1:
                yield parts[1], node.lineno, node.lineno in local_lines
            elif parts[0] == "bench":
                yield "bench", node.lineno, node.lineno in local_lines


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in APPS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS), f"give these a layer here and in DESIGN: {packages ^ set(LAYERS)}"


def test_models_services_and_tasks_import_only_their_own_layer_or_below() -> None:
    wrong = []
    for package, path, page in _modules():
        for imported, line, _ in _imports(path):
            if imported == package or imported not in LAYERS:
                continue
            if not page and LAYERS[imported] > LAYERS[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({package}) imports {imported}")
    assert not wrong, "upward imports:\n" + "\n".join(wrong)


def test_hosts_is_the_floor_and_imports_no_other_app_at_all() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for package, path, _ in _modules()
        if package == "hosts"
        for imported, line, _ in _imports(path)
        if imported != "hosts"
    ]
    assert not wrong, "\n".join(wrong)


def test_the_audit_trail_imports_no_other_app() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for package, path, _ in _modules()
        if package == "audit"
        for imported, line, _ in _imports(path)
        if imported != "audit"
    ]
    assert not wrong, "\n".join(wrong)


def test_the_product_never_imports_the_lab_or_the_bench() -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for package, path, _ in _modules()
        if package != "lab"
        for imported, line, _ in _imports(path)
        if imported in {"lab", "bench"}
    ]
    for path in sorted((ROOT / "portal").rglob("*.py")):
        wrong += [
            f"{path.relative_to(ROOT)}:{line} imports {imported}"
            for imported, line, _ in _imports(path)
            if imported in {"lab", "bench"}
        ]
    assert not wrong, "\n".join(wrong)


def test_function_local_imports_between_apps_say_why() -> None:
    unexplained = []
    for package, path, _ in _modules():
        lines = path.read_text().splitlines()
        for imported, line, local in _imports(path):
            if not local or imported == package:
                continue
            # The comment stands on the import line or on the lines just above it.
            context = lines[max(0, line - 4) : line]
            if not any("#" in text for text in context):
                unexplained.append(f"{path.relative_to(ROOT)}:{line} imports {imported} inside a function")
    assert not unexplained, "say why (a cycle it breaks) or move it to the top:\n" + "\n".join(unexplained)
