"""Releases on the lab fleet: an archive becomes a release, deployed one instance at a time behind
the health check (never all down, through a real Celery worker); a release failing its check
stops after the first instance and puts it back; the persistent directory outlives releases and
rollbacks; a rollback copies nothing; retention prunes old releases from the hosts but never the
running one or the one before it; a host that gets its first instance later gets the release
the app runs."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User

from apps.applications import releases
from apps.applications.models import App, Release
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from tests.docker.releases_support import all_serve, answers, by_name, run, ship
from tests.helpers import eventually


def test_a_release_rolls_one_instance_at_a_time_and_the_app_never_goes_down(
    owner: User, site: Callable[[str, int], App], lab: list[fleet.LabHost], worker: None
) -> None:
    app = site("relroll", 3)
    instances = list(Instance.objects.filter(app=app).select_related("host"))
    answering: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            answering.append(sum(1 for i in instances if answers(str(i.address))))
            stop.wait(0.05)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        release, op = ship(owner, app, {"index.html": b"B\n"}, note="the B page")
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
    all_serve(app, b"B\n")
    app.refresh_from_db()
    assert app.release == release and release.number == 3 and release.note == "the B page"
    after = {i.slot: i for i in Instance.objects.filter(app=app).select_related("host")}
    for old in instances:
        new = after[old.slot]
        # Same slot, host and static address: only the files changed.
        assert (new.release, new.host, new.address) == (release, old.host, old.address)
        volume = by_name(lab)[new.host.name].volume_root / app.slug
        assert (volume / "releases" / "3" / "index.html").read_bytes() == b"B\n"
        assert (volume / "releases" / "2" / "index.html").read_bytes() == b"A\n"  # kept for a rollback


def test_a_release_failing_its_health_check_stops_after_the_first_instance_and_puts_it_back(
    owner: User, site: Callable[[str, int], App]
) -> None:
    app = site("relbad", 3)
    # No index.html: the health check's GET answers 404.
    release, op = ship(owner, app, {"other.html": b"B\n"})
    op = run(op)
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
    all_serve(app, b"A\n")
    # The failed release stays listed (it can be fixed and deployed again, or rolled back to).
    assert release.number == 3 and Release.objects.get(pk=release.pk).pruned_at is None


def test_the_persistent_directory_outlives_releases_and_rollbacks_and_the_files_are_read_only(
    owner: User, site: Callable[[str, int], App], lab: list[fleet.LabHost]
) -> None:
    app = site("relstate", 1)
    instance = Instance.objects.select_related("host").get(app=app)
    lab_host = by_name(lab)[instance.host.name]

    def sh(command: str) -> subprocess.CompletedProcess[str]:
        name = Instance.objects.get(pk=instance.pk).container_name
        return fleet.docker(lab_host, "exec", name, "sh", "-c", command, check=False)

    assert sh('echo "$SLIPWAY_DATA" && echo kept by release 2 > /srv/data/note').stdout == "/srv/data\n"
    refused = sh("touch /srv/app/new-file")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    assert run(ship(owner, app, {"index.html": b"B\n"})[1]).status == "succeeded"
    all_serve(app, b"B\n")
    assert sh("cat /srv/data/note").stdout == "kept by release 2\n"
    # Back to release 2: a new release (4) that uses release 2's files, already on the host.
    restored, op = releases.release_rollback(user=owner, app=app, number=2)
    assert (restored.number, restored.restored_from, restored.code_number) == (4, 2, 2)
    assert restored.changes[0] == "rollback to release 2"
    volume = lab_host.volume_root / app.slug
    dirs_before = sorted(p.name for p in (volume / "releases").iterdir())
    assert run(op).status == "succeeded"
    all_serve(app, b"A\n")
    assert sorted(p.name for p in (volume / "releases").iterdir()) == dirs_before  # nothing copied
    assert sh("cat /srv/data/note").stdout == "kept by release 2\n"


def test_a_deploy_while_another_runs_is_refused_with_which_one(
    owner: User, site: Callable[[str, int], App]
) -> None:
    app = site("relbusy", 1)
    _, first = ship(owner, app, {"index.html": b"B\n"})
    assert first is not None
    with pytest.raises(
        releases.DeployRunning, match=f"Release 3 of relbusy is being deployed \\(operation {first.pk}"
    ):
        ship(owner, app, {"index.html": b"C\n"})
    with pytest.raises(releases.DeployRunning):
        releases.release_rollback(user=owner, app=app)
    assert list(app.releases.order_by("number").values_list("number", flat=True)) == [1, 2, 3]
    assert run(first).status == "succeeded"
    all_serve(app, b"B\n")
