"""An app's container plants symlinks to host files where it can write, on the real lab hosts:
its whole volume (an app from before releases) or its persistent directory. Then a release, a
move to the other host, another release. Nothing is written outside the volume, nothing of the
host is read or bound into it, and the app still gets its files."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from apps.applications import releases, services
from apps.applications.models import App, Release
from apps.hosts.models import Host
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from tests.helpers import archive

SLUG = "linkjail"
MOUNT = "/srv/app"
STATE = "/srv/data"


def _run(op: Operation) -> Operation:
    executor.run_operation(op.pk)
    op.refresh_from_db()
    return op


def _by_name(lab: list[fleet.LabHost], host: Host) -> fleet.LabHost:
    return next(h for h in lab if h.name == host.name)


def _snapshot(place: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry under place: its kind and content (files) or target (links)."""
    out: dict[str, tuple[str, bytes]] = {}
    for path in sorted(place.rglob("*")):
        name = str(path.relative_to(place))
        if path.is_symlink():
            out[name] = ("link", os.readlink(path).encode())
        elif path.is_file():
            out[name] = ("file", path.read_bytes())
        else:
            out[name] = ("dir", b"")
    return out


def _in_container(lab_host: fleet.LabHost, name: str, *argv: str) -> str:
    return str(fleet.docker(lab_host, "exec", name, *argv).stdout)


@pytest.fixture
def outside(lab: list[fleet.LabHost]) -> Iterator[Path]:
    """Host files the app must never reach (stands in for /etc): outside every volume root, on
    the filesystem the lab hosts share."""
    place = lab[0].config.state_dir / "escape-target"
    shutil.rmtree(place, ignore_errors=True)
    place.mkdir(parents=True)
    (place / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (place / "upload-marker").write_text("not yours\n")
    (place / "copied-marker").write_text("not yours either\n")
    yield place
    shutil.rmtree(place, ignore_errors=True)


@pytest.fixture
def jailed(deploy: Callable[..., App]) -> App:
    """An app from before releases: its whole volume bound read-write, written in place."""
    app = deploy(SLUG, instances=1)
    Release.objects.filter(app=app).update(source=Release.Source.VOLUME)
    executor.converge(App.objects.get(pk=app.pk))
    return app


def test_planted_links_do_not_let_a_release_or_a_move_reach_host_files(
    jailed: App,
    owner: User,
    ops: User,
    outside: Path,
    lab: list[fleet.LabHost],
    lab_hosts: list[Host],
    transactional_db: None,
) -> None:
    instance = Instance.objects.select_related("host").get(app=jailed)
    home = _by_name(lab, instance.host)
    container = instance.container_name
    before = _snapshot(outside)
    # From before releases, the app (root in its container) has its whole volume to itself and
    # links where the release layout goes: its files, its persistent directory, their marks.
    for name in ("releases", "state", "conf"):
        _in_container(home, container, "rm", "-rf", f"{MOUNT}/{name}")
        _in_container(home, container, "ln", "-s", str(outside), f"{MOUNT}/{name}")
    volume = home.volume_root / SLUG
    assert (volume / "releases").is_symlink()

    tarball = archive({"conf/app.ini": b"port=8080\n", "index.html": b"hello through the jail\n"})
    _, deploy = releases.release_create(
        user=owner,
        app=jailed,
        fileobj=tarball,
        size=len(tarball.getvalue()),
        config={"state_paths": ["logs"]},
    )
    assert deploy is not None
    op = _run(deploy)
    assert op.status == Operation.Status.SUCCEEDED, op.error
    assert _snapshot(outside) == before, "the release wrote outside the volume"
    # The layout is made of real directories where the links were; the release's files are in it.
    for name in ("releases", "state", "state/logs"):
        assert not (volume / name).is_symlink() and (volume / name).is_dir(), name
    assert (volume / "releases/2/conf/app.ini").read_bytes() == b"port=8080\n"
    container = Instance.objects.get(pk=instance.pk).container_name
    assert _in_container(home, container, "cat", f"{MOUNT}/conf/app.ini") == "port=8080\n"

    # Now on the release layout, the app can write only its persistent directory: it links its
    # persistent path and a mark-like name there to the host's files.
    _in_container(home, container, "rm", "-rf", f"{STATE}/logs")
    _in_container(home, container, "ln", "-s", str(outside), f"{STATE}/logs")
    _in_container(home, container, "ln", "-s", str(outside / "copied-marker"), f"{STATE}/.slipway-copied")
    _in_container(home, container, "mkfifo", f"{STATE}/pipe")
    # The target holds links an earlier instance there left, where the move puts the layout.
    target_host = next(h for h in lab_hosts if h.pk != instance.host_id)
    target = _by_name(lab, target_host)
    there = target.volume_root / SLUG
    there.mkdir(parents=True, exist_ok=True)
    (there / "releases").symlink_to(outside)
    (there / ".slipway-copied").symlink_to(outside / "copied-marker")

    op = _run(services.instance_move(user=ops, instance=instance, host=target_host))
    assert op.status == Operation.Status.SUCCEEDED, op.error
    assert "volume not copied" not in op.summary, op.summary
    assert _snapshot(outside) == before, "the move wrote outside the volume"
    moved = Instance.objects.select_related("host").get(pk=instance.pk)
    assert moved.host_id == target_host.pk and moved.state == Instance.State.RUNNING
    # Its persistent directory came along with its links as links; the bound path is a real
    # directory again (a link there would have had Docker bind the host's files in).
    assert not (there / "releases").is_symlink() and (there / "releases/2/index.html").is_file()
    assert not (there / "state/logs").is_symlink() and (there / "state/logs").is_dir()
    assert not (there / "state/pipe").exists()  # fifos stay behind
    assert not (there / ".slipway-copied").is_symlink()
    assert _in_container(target, moved.container_name, "ls", "-A", f"{MOUNT}/logs") == ""
    assert (
        _in_container(target, moved.container_name, "cat", f"{MOUNT}/index.html")
        == "hello through the jail\n"
    )


def test_a_persistent_path_the_app_turned_into_a_link_is_a_directory_again_at_the_next_deploy(
    deploy: Callable[..., App], owner: User, outside: Path, lab: list[fleet.LabHost]
) -> None:
    app = deploy(SLUG, instances=1)
    _, op = releases.release_create(user=owner, app=app, config={"state_paths": ["logs"]})
    assert op is not None
    assert _run(op).status == Operation.Status.SUCCEEDED, op.error
    instance = Instance.objects.select_related("host").get(app=app)
    home = _by_name(lab, instance.host)
    before = _snapshot(outside)
    _in_container(home, instance.container_name, "rm", "-rf", f"{STATE}/logs")
    _in_container(home, instance.container_name, "ln", "-s", str(outside), f"{STATE}/logs")
    _, op = releases.release_create(user=owner, app=app, note="again")
    assert op is not None
    assert _run(op).status == Operation.Status.SUCCEEDED, op.error
    logs = home.volume_root / SLUG / "state/logs"
    assert not logs.is_symlink() and logs.is_dir()
    name = Instance.objects.get(pk=instance.pk).container_name
    assert "passwd" not in _in_container(home, name, "ls", "-A", f"{MOUNT}/logs")
    assert _snapshot(outside) == before
