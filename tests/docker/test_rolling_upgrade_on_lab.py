"""Base image versions on the lab fleet: v2 of slipway/busybox is built by the portal from its
recipe and loaded onto both hosts; a 3-instance app rolls onto it one instance at a time (same
addresses, same files, never all down) through a real Celery worker; a v2 that fails the health
check stops after its first instance and leaves the app on v1; withdrawn versions take no new
instances."""

from __future__ import annotations

import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from apps.accounts.models import Team
from apps.applications import releases, services
from apps.applications.models import App, BaseImage, BuildState
from apps.hosts.models import Host
from apps.images import publish
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from apps.network.models import IPPool
from tests.helpers import archive

V2_RECIPE = """# slipway/busybox, version 2: what v1 has, and its version in the environment
FROM scratch
ADD busybox /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV SLIPWAY_IMAGE_VERSION=2
CMD ["/bin/sh"]
LABEL io.slipway.base-image=busybox
"""


def _answers(address: str) -> bytes | None:
    try:
        # A slow answer is still an answer: on CI's two busy cores the lab's containers get
        # the CPU last (apps/lab/fleet.py), and a busybox httpd may take over half a second.
        with urllib.request.urlopen(f"http://{address}:8080/index.html", timeout=2) as response:
            return bytes(response.read())
    except OSError:
        return None


def _serves(address: str, content: bytes) -> bool:
    """A container that just started answers within moments (its gratuitous ARP reaches the
    segment after it started): wait that long, no longer."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _answers(address) == content:
            return True
        time.sleep(0.1)
    return False


def _image_of(lab_host: fleet.LabHost, container: str) -> str:
    return fleet.docker(lab_host, "inspect", "-f", "{{.Image}}", container).stdout.strip()


def _publish(ops: User, image: BaseImage, lab: list[fleet.LabHost]) -> BaseImage:
    for lab_host in lab:  # loaded by an earlier run: take it away, so the load is exercised
        fleet.docker(lab_host, "rmi", "-f", image.reference, check=False)
    publish.image_publish(user=ops, image=image)
    publish.run(image.pk)
    image.refresh_from_db()
    return image


def _version(busybox: BaseImage, tag: str, **fields: object) -> BaseImage:
    return BaseImage.objects.create(
        name=busybox.name,
        tag=tag,
        runtime=busybox.runtime,
        default_command=fields.pop("default_command", busybox.default_command),
        default_port=busybox.default_port,
        recipe=V2_RECIPE,
        state=BuildState.DRAFT,
        **fields,
    )


@pytest.fixture
def v2(busybox: BaseImage, ops: User, lab: list[fleet.LabHost], lab_hosts: list[Host]) -> Iterator[BaseImage]:
    image = _publish(ops, _version(busybox, "2"), lab)
    yield image
    for lab_host in lab:
        fleet.docker(lab_host, "rmi", "-f", image.reference, check=False)


def _web(owner: User, alpha: Team, busybox: BaseImage, lab: list[fleet.LabHost], slug: str) -> App:
    for lab_host in lab:
        shutil.rmtree(lab_host.volume_root / slug, ignore_errors=True)
    app = services.app_create(
        user=owner, team=alpha, slug=slug, base_image=busybox, memory_mb=32, cpus="0.1", health_timeout=5
    )
    # The app's files: release 2, which its instances start on.
    page = archive({"index.html": f"{slug} content\n".encode()})
    releases.release_create(user=owner, app=app, fileobj=page, size=len(page.getvalue()))
    op = services.app_scale(user=owner, app=app, instances=3)
    executor.run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == Operation.Status.SUCCEEDED, op.error
    return app


def _wait(op: Operation, seconds: float = 180) -> Operation:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        op.refresh_from_db()
        if op.status in Operation.TERMINAL:
            return op
        time.sleep(0.2)
    raise AssertionError(f"operation still {op.status} after {seconds} s: {op.params}")


def test_publishing_builds_from_the_recipe_and_loads_every_host(
    v2: BaseImage, lab: list[fleet.LabHost], lab_hosts: list[Host]
) -> None:
    assert v2.state == BuildState.PUBLISHED, v2.build_error
    assert v2.digest.startswith("sha256:") and v2.size and v2.size > 100_000
    assert set(v2.hosts.values_list("name", flat=True)) == {h.name for h in lab_hosts}
    for lab_host in lab:
        # Every host has the very image the portal built: Docker's ID is the recipe's digest.
        assert (
            fleet.docker(lab_host, "image", "inspect", "-f", "{{.Id}}", v2.reference).stdout.strip()
            == v2.digest
        )
        progress = v2.load_progress[lab_host.name]
        assert progress["state"] == "loaded" and progress["done"] == progress["total"] == v2.size
    # Published again (ops retrying after a failure elsewhere): hosts that have it are not sent it.
    BaseImage.objects.filter(pk=v2.pk).update(state=BuildState.FAILED)
    v2.refresh_from_db()
    publish.image_publish(user=User.objects.get(username="ops"), image=v2)
    publish.run(v2.pk)
    v2.refresh_from_db()
    assert v2.state == BuildState.PUBLISHED
    assert all(p.get("note") == "had it already" for p in v2.load_progress.values()), v2.load_progress
    # Published again with a changed recipe: refused, and the version stays as it was.
    published = v2.digest
    BaseImage.objects.filter(pk=v2.pk).update(recipe=V2_RECIPE.replace("VERSION=2", "VERSION=2b"))
    publish.image_publish(user=User.objects.get(username="ops"), image=v2)
    publish.run(v2.pk)
    v2.refresh_from_db()
    assert v2.state == BuildState.PUBLISHED and v2.digest == published
    assert "make the change a new version (a new tag)" in v2.build_error


def test_a_broken_recipe_is_refused_with_every_problem(busybox: BaseImage, ops: User) -> None:
    image = _version(busybox, "2-bad")
    image.recipe = "FROM debian\nADD busybox /\nRUN apt-get install -y curl\n"
    image.save()
    with pytest.raises(ValidationError) as refused:
        publish.image_publish(user=ops, image=image)
    text = " ".join(refused.value.messages)
    assert "line 1" in text and "scratch" in text and "line 3: RUN is not supported" in text
    image.refresh_from_db()
    assert image.state == BuildState.DRAFT


def test_rolling_upgrade_moves_every_instance_keeping_address_and_files(
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    v2: BaseImage,
    lab_pool: IPPool,
    lab: list[fleet.LabHost],
    remove_apps: list[str],
    worker: None,
) -> None:
    remove_apps.append("rollweb")
    app = _web(owner, alpha, busybox, lab, "rollweb")
    before = {i.slot: i for i in Instance.objects.filter(app=app).select_related("host")}
    assert all(_serves(str(i.address), b"rollweb content\n") for i in before.values())

    answering: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            answering.append(sum(1 for i in before.values() if _answers(str(i.address))))
            stop.wait(0.05)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        op = services.app_upgrade(user=owner, app=app, base_image=v2)
        assert op is not None and op.kind == Operation.Kind.RELEASE
        op = _wait(op)
    finally:
        stop.set()
        thread.join()
    assert op.status == Operation.Status.SUCCEEDED, op.error
    assert answering and min(answering) > 0, "every instance was down at once"
    assert [row["state"] for row in op.params["instances"]] == ["done"] * 3
    by_name = {h.name: h for h in lab}
    app.refresh_from_db()
    assert app.base_image == v2
    for slot, old in before.items():
        new = Instance.objects.select_related("host", "image").get(app=app, slot=slot)
        assert new.image == v2 and new.state == Instance.State.RUNNING
        assert new.address == old.address and new.host == old.host
        assert _image_of(by_name[new.host.name], new.container_name) == v2.digest
        assert _serves(str(new.address), b"rollweb content\n")
    # The new version's own environment is in the containers.
    env = fleet.docker(by_name[before[0].host.name], "exec", before[0].container_name, "env").stdout
    assert "SLIPWAY_IMAGE_VERSION=2" in env


def test_a_version_failing_the_health_check_stops_after_one_instance_and_leaves_v1(
    owner: User,
    ops: User,
    alpha: Team,
    busybox: BaseImage,
    lab_pool: IPPool,
    lab: list[fleet.LabHost],
    remove_apps: list[str],
) -> None:
    # Its default command runs but never serves: the container is up, the check fails.
    broken = _publish(ops, _version(busybox, "2-broken", default_command=["sleep", "600"]), lab)
    assert broken.state == BuildState.PUBLISHED, broken.build_error
    remove_apps.append("rollbad")
    app = _web(owner, alpha, busybox, lab, "rollbad")
    try:
        op = services.app_upgrade(user=owner, app=app, base_image=broken)
        assert op is not None
        executor.run_operation(op.pk)
        op.refresh_from_db()
        assert op.status == Operation.Status.FAILED
        assert "did not pass its health check within 5 s" in op.error, op.error
        assert "rollbad stays on release 2" in op.error and "run release 2 again" in op.error
        assert [row["state"] for row in op.params["instances"]] == [
            "rolled back",
            "not started",
            "not started",
        ]
        app.refresh_from_db()
        assert app.base_image == busybox
        by_name = {h.name: h for h in lab}
        v1_id = fleet.docker(lab[0], "image", "inspect", "-f", "{{.Id}}", busybox.reference).stdout.strip()
        for instance in Instance.objects.filter(app=app).select_related("host", "image"):
            assert instance.image == busybox
            assert instance.state == Instance.State.RUNNING
            assert _image_of(by_name[instance.host.name], instance.container_name).startswith("sha256:")
            assert _serves(str(instance.address), b"rollbad content\n")
        first = Instance.objects.get(app=app, slot=0)
        assert _image_of(by_name[first.host.name], first.container_name) == v1_id
    finally:
        for lab_host in lab:
            fleet.docker(lab_host, "rmi", "-f", broken.reference, check=False)


def test_withdrawn_versions_refuse_new_instances(
    owner: User, alpha: Team, busybox: BaseImage, v2: BaseImage, lab_pool: IPPool
) -> None:
    app = services.app_create(
        user=owner, team=alpha, slug="rollgone", base_image=busybox, memory_mb=32, cpus="0.1"
    )
    busybox.withdrawn = True
    busybox.save()
    with pytest.raises(ValidationError, match="slipway/busybox:1 is withdrawn: it takes no new instances"):
        services.app_scale(user=owner, app=app, instances=1)
    with pytest.raises(ValidationError, match="withdrawn and takes no new instances; use slipway/busybox:2"):
        services.app_create(user=owner, team=alpha, slug="rollgone2", base_image=busybox)
    assert not Instance.objects.filter(app=app).exists()
