"""Base images built from Debian's packages, for real: mmdebstrap installing from the mirror this
machine's apt uses, as a worker does. No lab needed: `make test` runs these first beside the lab
tests, and the trees they build are the ones the runtime tests on the lab then reuse.

- the ready-made recipes' trees build and hold their runtime;
- the same packages give the same bytes (built twice, from nothing each time);
- a build apt cannot do fails with apt's own words and the last lines of its log on the row;
- a cancelled build stops, processes and half-written tree included, and says who stopped it
  and where."""

from __future__ import annotations

import hashlib
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.applications.models import BaseImage, BuildState
from apps.images import packages, publish, recipe, rootfs
from apps.images.starters import STARTERS
from tests.helpers import eventually
from tests.runtimes_support import java_recipe, jre_versions

# What each ready-made tree must hold for its runtime to start.
HOLDS = {
    "java-old": ["./usr/lib/jvm/java-17-openjdk-amd64/bin/java", "./usr/share/tomcat10/bin/catalina.sh"],
    "java": ["./usr/lib/jvm/java-17-openjdk-amd64/bin/java", "./usr/share/tomcat10/bin/catalina.sh"],
    "node": ["./usr/bin/node"],
    "python": ["./usr/bin/python3", "./usr/lib/python3/dist-packages/gunicorn/__main__.py"],
}


def _recipe_text(key: str) -> str:
    if key == "java-old":
        return java_recipe(jre_versions()[0])
    return STARTERS[key].recipe


def _tree(text: str, cache: Path, log: list[str], *, reuse: bool = True) -> Path:
    parsed = recipe.parse(text, publish.rootfs_names())
    assert packages.problems(parsed.release, parsed.packages) == []
    deb_lines = packages.release(parsed.release).deb_lines
    return rootfs.debian_tar(parsed.release, deb_lines, parsed.packages, cache, log.append, reuse=reuse)


@pytest.mark.parametrize("key", list(HOLDS))
def test_the_ready_made_trees_build_and_hold_their_runtime(key: str) -> None:
    log: list[str] = []
    tree = _tree(_recipe_text(key), Path(settings.ROOTFS_CACHE), log)
    with tarfile.open(tree) as archive:
        names = set(archive.getnames())
    missing = [path for path in HOLDS[key] if path not in names]
    assert missing == [], log[-20:]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_the_same_packages_give_the_same_bytes(tmp_path: Path) -> None:
    text = "FROM debian:bookworm\nPACKAGES hello ca-certificates\n"
    first = _tree(text, tmp_path / "one", [], reuse=False)
    second = _tree(text, tmp_path / "two", [], reuse=False)
    assert first.name == second.name  # the same inputs, the same key
    assert _sha256(first) == _sha256(second)
    with tarfile.open(first) as archive:
        assert "./usr/bin/hello" in archive.getnames()


def _draft(text: str, tag: str) -> BaseImage:
    return BaseImage.objects.create(
        name="slipway/build-test", tag=tag, runtime="test", recipe=text, state=BuildState.DRAFT
    )


@pytest.mark.django_db
def test_a_build_apt_cannot_do_fails_with_apts_words_and_the_logs_last_lines(
    ops: User, settings: Any, tmp_path: Path
) -> None:
    settings.ROOTFS_CACHE = tmp_path
    # Both exist in the lists (so the check lets them through), but they conflict.
    image = _draft("FROM debian:bookworm\nPACKAGES exim4-daemon-light exim4-daemon-heavy\n", "conflict")
    publish.image_publish(user=ops, image=image)
    publish.run(image.pk)
    image.refresh_from_db()
    assert image.state == BuildState.FAILED
    assert image.build_error.startswith("Build failed: ")
    assert "(the log's last lines are below)" in image.build_error
    assert "exim4-daemon" in image.build_log and "E: " in image.build_log
    assert 10 <= len(image.build_log.splitlines()) <= publish.LOG_LINES
    assert list(tmp_path.glob("*.tar")) == [] and list(tmp_path.glob(".*.tmp")) == []


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_build_stops_with_its_processes_and_says_where(
    ops: User, settings: Any, tmp_path: Path
) -> None:
    settings.ROOTFS_CACHE = tmp_path
    image = _draft("FROM debian:bookworm\nPACKAGES python3\n", "cancelled")
    publish.image_publish(user=ops, image=image)
    worker = threading.Thread(target=publish.run, args=(image.pk,), daemon=True)
    worker.start()
    # The page shows the step as the build goes.
    step = eventually(
        lambda: (
            BaseImage.objects.filter(pk=image.pk, build_step__in=[w for _, w in rootfs.STEPS[1:]])
            .values_list("build_step", flat=True)
            .first()
        ),
        120,
        "the build past reading the package lists",
    )
    assert _processes_mentioning(str(tmp_path)), "mmdebstrap runs, writing into the cache"
    publish.image_cancel(user=ops, image=image)
    started = time.monotonic()
    worker.join(60)
    assert not worker.is_alive() and time.monotonic() - started < 30
    image.refresh_from_db()
    assert image.state == BuildState.FAILED
    # The step it was at when cancelled: the one seen, or one after it.
    steps = [words for _, words in rootfs.STEPS]
    where = image.build_error.removeprefix("Cancelled by ops while ").removesuffix(".")
    assert where in steps and steps.index(where) >= steps.index(step), image.build_error
    assert _processes_mentioning(str(tmp_path)) == []
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
