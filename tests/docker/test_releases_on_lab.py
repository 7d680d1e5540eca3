"""Releases on the lab fleet: an archive becomes a release, deployed one instance at a time behind
the health check (never all down, through a real Celery worker); a release failing its check
stops after the first instance and puts it back; the persistent directory outlives releases and
rollbacks; a rollback copies nothing; retention prunes old releases from the hosts but never the
running one or the one before it; a host that gets its first instance later gets the release
the app runs."""

from __future__ import annotations

import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import override_settings

from apps.accounts.models import Team
from apps.applications import releases, services
from apps.applications.models import App, BaseImage, Release
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from apps.network.models import IPPool
from tests.helpers import archive, eventually


def _answers(address: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/index.html", timeout=2) as response:
            return bytes(response.read())
    except OSError:
        return None


def _serving(app: App) -> dict[int, bytes | None]:
    return {i.slot: _answers(str(i.address)) for i in Instance.objects.filter(app=app)}


def _all_serve(app: App, content: bytes) -> dict[int, bytes | None]:
    return eventually(
        lambda: (lambda seen: seen if set(seen.values()) == {content} else None)(_serving(app)),
        15,
        f"every instance of {app.slug} serving {content!r}",
    )


def _run(op: Operation | None) -> Operation:
    assert op is not None
    executor.run_operation(op.pk)
    op.refresh_from_db()
    return op


def _ship(owner: User, app: App, files: dict[str, bytes], **kwargs: Any) -> tuple[Release, Operation | None]:
    data = archive(files)
    return releases.release_create(user=owner, app=app, fileobj=data, size=len(data.getvalue()), **kwargs)


def _by_name(lab: list[fleet.LabHost]) -> dict[str, fleet.LabHost]:
    return {h.name: h for h in lab}


@pytest.fixture
def site(
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    lab_pool: IPPool,
    lab: list[fleet.LabHost],
    remove_apps: list[str],
) -> Iterator[Callable[[str, int], App]]:
    """An app whose release 2 (its first upload) serves `A` on N instances, with an HTTP health
    check on that page."""
    made: list[str] = []

    def make(slug: str, instances: int) -> App:
        remove_apps.append(slug)
        made.append(slug)
        for lab_host in lab:
            shutil.rmtree(lab_host.volume_root / slug, ignore_errors=True)
        app = services.app_create(
            user=owner,
            team=alpha,
            slug=slug,
            base_image=busybox,
            memory_mb=32,
            cpus="0.1",
            health_check="http",
            health_path="/index.html",
            health_timeout=5,
        )
        release, op = _ship(owner, app, {"index.html": b"A\n"})
        assert op is None and release.number == 2  # no instances yet: they start on it
        assert _run(services.app_scale(user=owner, app=app, instances=instances)).status == "succeeded"
        _all_serve(app, b"A\n")
        return app

    yield make
    for slug in made:
        for lab_host in lab:
            shutil.rmtree(lab_host.volume_root / slug, ignore_errors=True)


def test_a_release_rolls_one_instance_at_a_time_and_the_app_never_goes_down(
    owner: User, site: Callable[[str, int], App], lab: list[fleet.LabHost], worker: None
) -> None:
    app = site("relroll", 3)
    instances = list(Instance.objects.filter(app=app).select_related("host"))
    answering: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            answering.append(sum(1 for i in instances if _answers(str(i.address))))
            stop.wait(0.05)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        release, op = _ship(owner, app, {"index.html": b"B\n"}, note="the B page")
        assert op is not None and op.kind == Operation.Kind.RELEASE
        assert [row["state"] for row in op.params["instances"]] == ["waiting"] * 3
        op = eventually(
            lambda: (lambda o: o if o.terminal else None)(Operation.objects.get(pk=op.pk)), 120, "the deploy"
        )
    finally:
        stop.set()
        thread.join()
    assert op.status == Operation.Status.SUCCEEDED, op.error
    # The probe went round all through the deploy (each round asks all three instances).
    assert len(answering) >= 5 and min(answering) > 0, f"every instance was down at once: {answering}"
    assert [row["state"] for row in op.params["instances"]] == ["done"] * 3
    assert all(row["detail"].startswith("passed its health check after") for row in op.params["instances"])
    _all_serve(app, b"B\n")
    app.refresh_from_db()
    assert app.release == release and release.number == 3 and release.note == "the B page"
    after = {i.slot: i for i in Instance.objects.filter(app=app).select_related("host")}
    for old in instances:
        new = after[old.slot]
        # Same slot, host and static address: only the files changed.
        assert (new.release, new.host, new.address) == (release, old.host, old.address)
        volume = _by_name(lab)[new.host.name].volume_root / app.slug
        assert (volume / "releases" / "3" / "index.html").read_bytes() == b"B\n"
        assert (volume / "releases" / "2" / "index.html").read_bytes() == b"A\n"  # kept for a rollback


def test_a_release_failing_its_health_check_stops_after_the_first_instance_and_puts_it_back(
    owner: User, site: Callable[[str, int], App]
) -> None:
    app = site("relbad", 3)
    # No index.html: the health check's GET answers 404.
    release, op = _ship(owner, app, {"other.html": b"B\n"})
    op = _run(op)
    assert op.status == Operation.Status.FAILED
    assert "did not pass its health check within 5 s" in op.error and "answered HTTP 404" in op.error, (
        op.error
    )
    assert "The deploy of release 3 stopped; relbad stays on release 2" in op.error
    assert "1 instance(s) it had touched run release 2 again" in op.error
    assert [row["state"] for row in op.params["instances"]] == ["rolled back", "not started", "not started"]
    app.refresh_from_db()
    # The page never says the app runs what it does not: it runs release 2 and has its settings.
    assert app.release is not None and app.release.number == 2
    assert set(Instance.objects.filter(app=app).values_list("release__number", "state")) == {(2, "running")}
    _all_serve(app, b"A\n")
    # The failed release stays listed (it can be fixed and deployed again, or rolled back to).
    assert release.number == 3 and Release.objects.get(pk=release.pk).pruned_at is None


def test_the_persistent_directory_outlives_releases_and_rollbacks_and_the_files_are_read_only(
    owner: User, site: Callable[[str, int], App], lab: list[fleet.LabHost]
) -> None:
    app = site("relstate", 1)
    instance = Instance.objects.select_related("host").get(app=app)
    lab_host = _by_name(lab)[instance.host.name]

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        name = Instance.objects.get(pk=instance.pk).container_name
        return fleet.docker(lab_host, "exec", name, "sh", "-c", command, check=False)

    assert sh('echo "$SLIPWAY_DATA" && echo kept by release 2 > /srv/data/note').stdout == "/srv/data\n"
    refused = sh("touch /srv/app/new-file")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    assert _run(_ship(owner, app, {"index.html": b"B\n"})[1]).status == "succeeded"
    _all_serve(app, b"B\n")
    assert sh("cat /srv/data/note").stdout == "kept by release 2\n"
    # Back to release 2: a new release (4) that uses release 2's files, already on the host.
    restored, op = releases.release_rollback(user=owner, app=app, number=2)
    assert (restored.number, restored.restored_from, restored.code_number) == (4, 2, 2)
    assert restored.changes[0] == "rollback to release 2"
    volume = lab_host.volume_root / app.slug
    dirs_before = sorted(p.name for p in (volume / "releases").iterdir())
    assert _run(op).status == "succeeded"
    _all_serve(app, b"A\n")
    assert sorted(p.name for p in (volume / "releases").iterdir()) == dirs_before  # nothing copied
    assert sh("cat /srv/data/note").stdout == "kept by release 2\n"


def test_retention_prunes_old_releases_but_not_the_running_one_or_the_one_before(
    owner: User, site: Callable[[str, int], App], lab: list[fleet.LabHost]
) -> None:
    with override_settings(RELEASES_KEEP=2):
        app = site("relkeep", 1)
        for page in (b"B\n", b"C\n", b"D\n"):
            assert _run(_ship(owner, app, {"index.html": page})[1]).status == "succeeded"
        _all_serve(app, b"D\n")
        kept = dict(app.releases.values_list("number", "pruned_at"))
        assert [n for n, pruned in sorted(kept.items()) if pruned is None] == [4, 5]
        instance = Instance.objects.select_related("host").get(app=app)
        volume = _by_name(lab)[instance.host.name].volume_root / app.slug / "releases"
        assert sorted(p.name for p in volume.iterdir() if not p.name.startswith(".")) == ["4", "5"]
        assert not Release.objects.get(app=app, number=3).archive  # gone from the portal's storage too
        with pytest.raises(ValidationError, match=r"Release 3 was pruned .*Kept releases: 4, 5"):
            releases.release_rollback(user=owner, app=app, number=3)
        # Rolling back to 4 keeps 4's files (used by the new release 6) and 5 (the one before).
        restored, op = releases.release_rollback(user=owner, app=app)
        assert restored.restored_from == 4
        assert _run(op).status == "succeeded"
        _all_serve(app, b"C\n")
        assert sorted(p.name for p in volume.iterdir() if not p.name.startswith(".")) == ["4", "5"]
        # A host that gets its first instance now gets exactly the release the app runs.
        assert _run(services.app_scale(user=owner, app=app, instances=2)).status == "succeeded"
        hosts = set(Instance.objects.filter(app=app).values_list("host__name", flat=True))
        assert len(hosts) == 2
        assert set(Instance.objects.filter(app=app).values_list("release__number", flat=True)) == {6}
        _all_serve(app, b"C\n")
        for name in hosts:
            other = _by_name(lab)[name].volume_root / app.slug / "releases"
            assert (other / "4" / "index.html").read_bytes() == b"C\n"


def test_a_deploy_while_another_runs_is_refused_with_which_one(
    owner: User, site: Callable[[str, int], App]
) -> None:
    app = site("relbusy", 1)
    _, first = _ship(owner, app, {"index.html": b"B\n"})
    assert first is not None
    with pytest.raises(
        releases.DeployRunning, match=f"Release 3 of relbusy is being deployed \\(operation {first.pk}"
    ):
        _ship(owner, app, {"index.html": b"C\n"})
    with pytest.raises(releases.DeployRunning):
        releases.release_rollback(user=owner, app=app)
    assert list(app.releases.order_by("number").values_list("number", flat=True)) == [1, 2, 3]
    assert _run(first).status == "succeeded"
    _all_serve(app, b"B\n")
