"""What the runtime tests share: the ready-made recipes as the tests build them (the Java one
also with the older JRE 17 of the release pinned, to roll from), and the example apps of
docs/runtimes.md as release files."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from apps.images import packages, starters

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
JRE = "openjdk-17-jre-headless"


def jre_versions() -> list[str]:
    """The JRE 17 builds bookworm's lists have, oldest first (the release's and its security update's)."""
    return packages.versions("bookworm", JRE)


def java_recipe(jre: str | None = None) -> str:
    """The ready-made Java recipe, with the JRE pinned to `jre` when given."""
    if jre is None:
        return starters.JAVA.recipe
    listed = f"PACKAGES {JRE} tomcat10"
    assert listed in starters.JAVA.recipe
    return starters.JAVA.recipe.replace(listed, f"PACKAGES {JRE}={jre} tomcat10")


def war(webapp: Path = EXAMPLES / "java-hello" / "webapp") -> bytes:
    """The Java example packed as a WAR (a zip), as `python3 -m zipfile -c` does in the docs."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(webapp.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(webapp).as_posix())
    return out.getvalue()


def example_files(key: str) -> dict[str, bytes]:
    """The release files of the example app for the ready-made recipe `key`."""
    if key == "java":
        return {"ROOT.war": war()}
    directory = EXAMPLES / {"node": "node-hello", "python": "python-hello"}[key]
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
