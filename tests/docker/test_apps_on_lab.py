"""Apps on the real lab fleet: deploy, scale, remove, delete and reconcile, with real containers."""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from apps.accounts.models import Team
from apps.applications import releases, services
from apps.applications.models import App, BaseImage, RetainedVolume
from apps.audit.models import AuditEntry
from apps.hosts.models import Host
from apps.instances import executor, reconcile
from apps.instances.models import Finding, Instance, Operation
from apps.lab import fleet
from apps.network.models import IPPool
from tests.helpers import archive


def _run(op: Operation) -> Operation:
    executor.run_operation(op.pk)
    op.refresh_from_db()
    return op


def _lab_host(lab: list[fleet.LabHost], host: Host) -> fleet.LabHost:
    return next(h for h in lab if h.name == host.name)


def _containers(lab: list[fleet.LabHost], slug: str) -> dict[str, str]:
    """name -> status of the app's containers on every lab host, as the hosts' own CLI sees them."""
    found = {}
    for lab_host in lab:
        out = fleet.docker(
            lab_host,
            "ps",
            "-a",
            "--filter",
            f"label=io.slipway.app={slug}",
            "--format",
            "{{.Names}} {{.State}}",
        ).stdout
        for line in out.split("\n"):
            if line.strip():
                name, state = line.split()
                found[name] = state
    return found


def _get(endpoint: str, path: str = "/") -> bytes:
    deadline = time.monotonic() + 10
    while True:
        try:
            return urllib.request.urlopen(f"http://{endpoint}{path}", timeout=2).read()
        except urllib.error.HTTPError:
            raise  # the app answered: no point asking again
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def app(owner: User, alpha: Team, busybox: BaseImage, lab_pool: IPPool, remove_apps: list[str]) -> App:
    remove_apps.append("shop")
    return services.app_create(
        user=owner, team=alpha, slug="shop", base_image=busybox, memory_mb=32, cpus="0.1"
    )


def test_deploy_scale_up_and_down_serves_the_volume(
    app: App, owner: User, lab: list[fleet.LabHost], lab_hosts: list[Host]
) -> None:
    tarball = archive({"index.html": b"hello from slipway\n", "data/x.txt": b"x"})
    release, op = releases.release_create(user=owner, app=app, fileobj=tarball, size=len(tarball.getvalue()))
    assert op is None and release.number == 2  # no host runs the app yet: new instances start on it

    op = _run(services.app_scale(user=owner, app=app, instances=3))
    assert op.status == Operation.Status.SUCCEEDED, op.error
    instances = list(Instance.objects.filter(app=app).select_related("host"))
    assert [i.state for i in instances] == ["running"] * 3
    assert {i.host.name for i in instances} == {h.name for h in lab_hosts}  # spread over both hosts
    assert _containers(lab, "shop") == {
        "slw-shop-0": "running",
        "slw-shop-1": "running",
        "slw-shop-2": "running",
    }
    for instance in instances:
        # Each host got the release's files before its first instance started.
        assert _get(instance.endpoint) == b"hello from slipway\n"

    op = _run(services.app_scale(user=owner, app=app, instances=1))
    assert op.status == Operation.Status.SUCCEEDED, op.error
    assert list(Instance.objects.filter(app=app).values_list("slot", flat=True)) == [0]
    assert _containers(lab, "shop") == {"slw-shop-0": "running"}


def test_a_new_release_reaches_every_host_running_the_app(
    app: App, owner: User, lab: list[fleet.LabHost]
) -> None:
    assert _run(services.app_scale(user=owner, app=app, instances=2)).status == Operation.Status.SUCCEEDED
    tarball = archive({"index.html": b"version 2\n"})
    _, deploy = releases.release_create(user=owner, app=app, fileobj=tarball, size=len(tarball.getvalue()))
    assert deploy is not None
    op = _run(deploy)
    assert op.status == Operation.Status.SUCCEEDED, op.error
    for instance in Instance.objects.filter(app=app).select_related("host"):
        assert _get(instance.endpoint) == b"version 2\n"


def test_stop_start_restart_and_remove_one_instance(app: App, owner: User, lab: list[fleet.LabHost]) -> None:
    _run(services.app_scale(user=owner, app=app, instances=2))
    first = Instance.objects.get(app=app, slot=0)
    started_before = fleet.docker(
        _lab_host(lab, first.host), "inspect", "-f", "{{.State.StartedAt}}", "slw-shop-0"
    ).stdout

    assert _run(services.instance_action(user=owner, instance=first, action="stop")).status == "succeeded"
    assert _containers(lab, "shop")["slw-shop-0"] == "exited"
    first.refresh_from_db()
    assert first.state == Instance.State.STOPPED

    assert _run(services.instance_action(user=owner, instance=first, action="start")).status == "succeeded"
    assert _run(services.instance_action(user=owner, instance=first, action="restart")).status == "succeeded"
    started_after = fleet.docker(
        _lab_host(lab, first.host), "inspect", "-f", "{{.State.StartedAt}}", "slw-shop-0"
    ).stdout
    assert started_after != started_before
    first.refresh_from_db()
    assert first.state == Instance.State.RUNNING

    op = _run(services.instance_action(user=owner, instance=first, action="remove"))
    assert op.status == "succeeded", op.error
    assert _containers(lab, "shop") == {"slw-shop-1": "running"}
    app.refresh_from_db()
    assert app.instances == 1
    # The host it left keeps the files it wrote there, listed for ops instead of forgotten.
    [left] = RetainedVolume.objects.filter(app_slug="shop", purged_at=None)
    assert (left.host, left.reason) == (first.host, RetainedVolume.Reason.LEFT)
    assert Path(left.path).is_dir()
    # Placed there again, the app uses the volume again: the listing goes, and so does purging.
    _run(services.app_scale(user=owner, app=app, instances=2))
    assert Instance.objects.filter(app=app, host=first.host).exists()
    assert not RetainedVolume.objects.filter(app_slug="shop").exists()
    listed = RetainedVolume.objects.create(
        host=first.host, app_slug="shop", path=left.path, reason=RetainedVolume.Reason.LEFT
    )
    purged = services.volume_purge(volume=listed)
    assert purged.purged_at is None and "runs on" in purged.purge_error
    assert Path(left.path).is_dir()
    listed.delete()


def test_deleting_an_app_removes_its_containers_and_keeps_its_log(
    app: App, owner: User, lab: list[fleet.LabHost], lab_hosts: list[Host]
) -> None:
    _run(services.app_scale(user=owner, app=app, instances=2))
    op = _run(services.app_delete(user=owner, app=app))
    assert op.status == Operation.Status.SUCCEEDED, op.error
    assert _containers(lab, "shop") == {}
    assert not App.objects.filter(slug="shop").exists()
    kinds = list(
        Operation.objects.filter(app_slug="shop").order_by("created_at").values_list("kind", flat=True)
    )
    assert kinds == ["scale", "delete"]

    # The volume data stays on both hosts until ops purge it, and the name is not reused before.
    retained = list(RetainedVolume.objects.filter(app_slug="shop").select_related("host"))
    assert {v.host.name for v in retained} == {h.name for h in lab_hosts}
    for volume in retained:
        assert Path(volume.path).is_dir()  # the lab hosts share this machine's filesystem
    with pytest.raises(ValidationError, match="belonged to a deleted app whose volume data is still kept"):
        services.app_create(user=owner, team=app.team, slug="shop", base_image=app.base_image)
    for volume in retained:
        purged = services.volume_purge(volume=volume)
        assert purged.purged_at is not None, purged.purge_error
        assert not Path(volume.path).exists()
    assert (
        services.app_create(user=owner, team=app.team, slug="shop", base_image=app.base_image).slug == "shop"
    )


def test_reconcile_brings_back_killed_and_removed_containers_and_reports_unknown_ones(
    app: App, owner: User, lab: list[fleet.LabHost], cleanup_containers: list[str]
) -> None:
    _run(services.app_scale(user=owner, app=app, instances=2))
    zero = Instance.objects.select_related("host").get(app=app, slot=0)
    one = Instance.objects.select_related("host").get(app=app, slot=1)
    fleet.docker(_lab_host(lab, zero.host), "kill", "slw-shop-0")
    fleet.docker(_lab_host(lab, one.host), "rm", "-f", "slw-shop-1")
    # A container with Slipway's labels that no row explains (made by hand, or left by a lost database).
    cleanup_containers.append("slw-ghost-0")
    fleet.docker(
        _lab_host(lab, zero.host),
        "run",
        "-d",
        "--name",
        "slw-ghost-0",
        "--label",
        "io.slipway.managed=1",
        "--label",
        "io.slipway.app=ghost",
        "slipway/busybox:1",
        "sleep",
        "300",
    )

    report = reconcile.reconcile()
    assert sorted(report.repaired["shop"]) == [
        "slw-shop-0 was exited; start",
        "slw-shop-1 was missing; re-create",
    ]
    assert f"{zero.host.name}: slw-ghost-0" in report.unknown
    finding = Finding.objects.get(subject="slw-ghost-0", resolved_at=None)
    assert "ghost" in finding.detail

    op = Operation.objects.get(app=app, kind=Operation.Kind.RECONCILE)
    # The repair is the reconcile's change in the audit trail, made by no person.
    row = AuditEntry.objects.get(action="app.reconcile", data__operation=op.pk)
    assert (row.source, row.actor, row.object_repr) == ("reconcile", None, "shop")
    assert _run(op).status == Operation.Status.SUCCEEDED, op.error
    assert _containers(lab, "shop") == {"slw-shop-0": "running", "slw-shop-1": "running"}

    # Settled: the next sweep repairs nothing; the ghost gone resolves its finding.
    fleet.docker(_lab_host(lab, zero.host), "rm", "-f", "slw-ghost-0")
    report = reconcile.reconcile()
    assert report.repaired == {}
    finding.refresh_from_db()
    assert finding.resolved_at is not None


def test_a_container_that_cannot_start_fails_the_operation_and_leaves_no_orphan(
    app: App, owner: User, lab: list[fleet.LabHost], lab_hosts: list[Host], busybox: BaseImage
) -> None:
    target = lab_hosts[0]
    busybox.hosts.set([target])
    # Where the release's files go is a dangling link (marked complete): Docker creates the
    # container, then cannot mount the files when starting it.
    volume = Path(_lab_host(lab, target).volume_root) / "shop"
    shutil.rmtree(volume, ignore_errors=True)
    (volume / "releases").mkdir(parents=True)
    (volume / "releases" / "1").symlink_to(volume / "gone")
    (volume / "releases" / ".1.done").write_text("empty\n")
    try:
        op = _run(services.app_scale(user=owner, app=app, instances=1))
        assert op.status == Operation.Status.FAILED
        assert "slw-shop-0 on lab-h1" in op.error and "Docker refused slw-shop-0" in op.error
        instance = Instance.objects.get(app=app)
        assert instance.state == Instance.State.FAILED
        assert _containers(lab, "shop") == {}  # created, failed to start, removed again
        # The owner's failure is not retried by the reconcile behind their back...
        assert "shop" not in reconcile.reconcile().repaired
    finally:
        (volume / "releases" / ".1.done").unlink()
    # ...but a retry (here: restart from the page) works once the cause is gone.
    op = _run(services.instance_action(user=owner, instance=instance, action="restart"))
    assert op.status == Operation.Status.SUCCEEDED, op.error
    assert _containers(lab, "shop") == {"slw-shop-0": "running"}


def test_a_program_that_crashes_is_shown_failed_with_its_last_words(
    app: App, owner: User, lab: list[fleet.LabHost]
) -> None:
    services.app_update(user=owner, app=app, command=["sh", "-c", "echo config missing >&2; exit 3"])
    _run(services.app_scale(user=owner, app=app, instances=1))
    instance = Instance.objects.get(app=app)
    # Whether the first start already saw it die or not, the reconcile sees Docker restarting it.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        instance.refresh_from_db()
        if instance.state == Instance.State.FAILED:
            break
        reconcile.reconcile()
        time.sleep(0.5)
    assert instance.state == Instance.State.FAILED
    assert "config missing" in instance.last_error
    assert "code 3" in instance.last_error or "keeps crashing" in instance.last_error

    # Fixed by a release (sleep listens on no port: it has no health check to pass).
    services.app_update(user=owner, app=app, command=["sleep", "300"], health_check="none")
    op = _run(Operation.objects.get(app=app, kind=Operation.Kind.RELEASE))
    assert op.status == Operation.Status.SUCCEEDED, op.error
    assert _containers(lab, "shop") == {"slw-shop-0": "running"}


def test_a_daemon_that_is_down_fails_the_operation_with_the_reason_and_reconcile_finishes_later(
    app: App, owner: User, lab: list[fleet.LabHost], lab_hosts: list[Host], busybox: BaseImage
) -> None:
    target = lab_hosts[1]
    busybox.hosts.set([target])  # place on lab-h2 only
    lab_host = _lab_host(lab, target)
    fleet.stop_dockerd(lab_host)
    try:
        op = _run(services.app_scale(user=owner, app=app, instances=1))
        assert op.status == Operation.Status.FAILED
        assert "lab-h2" in op.error
        assert "Docker daemon unreachable" in op.error or "Cannot connect to the Docker daemon" in op.error
    finally:
        fleet.up(lab_host.config, log=lambda _: None)
    reconcile.reconcile()
    repair = Operation.objects.get(app=app, kind=Operation.Kind.RECONCILE)
    assert _run(repair).status == Operation.Status.SUCCEEDED, repair.error
    assert _containers(lab, "shop") == {"slw-shop-0": "running"}


def test_instances_come_back_after_their_hosts_daemon_restarts(
    app: App, owner: User, lab: list[fleet.LabHost], lab_hosts: list[Host]
) -> None:
    _run(services.app_scale(user=owner, app=app, instances=2))
    on_second = Instance.objects.get(app=app, host=lab_hosts[1])
    lab_host = _lab_host(lab, lab_hosts[1])
    fleet.stop_dockerd(lab_host)  # its containers stop with it
    fleet.up(lab_host.config, log=lambda _: None)
    # Docker's restart policy, or else the reconcile, brings the instance back.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _containers(lab, "shop").get(on_second.container_name) != "running":
        for op in Operation.objects.filter(
            app=app, kind=Operation.Kind.RECONCILE, status=Operation.Status.QUEUED
        ):
            _run(op)
        reconcile.reconcile()
        time.sleep(0.5)
    assert _containers(lab, "shop") == {"slw-shop-0": "running", "slw-shop-1": "running"}
    # It answers on its address again.
    reconcile.reconcile()
    with pytest.raises(urllib.error.HTTPError, match="404"):  # the empty volume has no index
        _get(Instance.objects.get(pk=on_second.pk).endpoint, "/")
