"""An app's container plants symlinks to host files in its volume, on the real lab hosts; then an
upload and a move to the other host. Nothing is written outside the volume, nothing of the host
is read into it, and the app still gets its files."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from apps.applications import services
from apps.applications.models import App
from apps.hosts.models import Host
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet

SLUG = "linkjail"
MOUNT = "/srv/app"


def _run(op: Operation) -> Operation:
    executor.run_operation(op.pk)
    op.refresh_from_db()
    return op


def _tarball(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


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
    return deploy(SLUG, instances=1)


def test_planted_links_do_not_let_an_upload_or_a_move_reach_host_files(
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

    # The app, root in its container, links into the host's files.
    _in_container(home, container, "ln", "-s", str(outside), f"{MOUNT}/conf")
    _in_container(home, container, "ln", "-s", str(outside / "upload-marker"), f"{MOUNT}/.slipway-upload")
    volume = home.volume_root / SLUG
    assert (volume / "conf").is_symlink()

    tarball = _tarball({"conf/app.ini": b"port=8080\n", "index.html": b"hello through the jail\n"})
    upload = services.volume_upload(user=owner, app=jailed, fileobj=tarball, size=len(tarball.getvalue()))
    op = _run(upload)
    assert op.status == Operation.Status.SUCCEEDED, op.error
    assert _snapshot(outside) == before, "the upload wrote outside the volume"
    # The app gets its file, in a real directory where its link was; the marker is Slipway's own.
    assert not (volume / "conf").is_symlink() and (volume / "conf/app.ini").read_bytes() == b"port=8080\n"
    assert _in_container(home, container, "cat", f"{MOUNT}/conf/app.ini") == "port=8080\n"
    marker = volume / ".slipway-upload"
    digest = hashlib.sha256(tarball.getvalue()).hexdigest()
    assert not marker.is_symlink() and marker.read_text() == f"{digest}\n"

    # Before the move: more links in the source volume, a fifo and a device node; the target
    # holds links an earlier instance there left (where the copy puts a directory and markers).
    _in_container(home, container, "ln", "-s", str(outside), f"{MOUNT}/data")
    _in_container(home, container, "ln", "-s", str(outside / "copied-marker"), f"{MOUNT}/.slipway-copied")
    _in_container(home, container, "mkfifo", f"{MOUNT}/pipe")
    # Docker's default capabilities allow mknod; where they do not, there is no device to test.
    fleet.docker(home, "exec", container, "mknod", f"{MOUNT}/disk", "b", "7", "0", check=False)
    target_host = next(h for h in lab_hosts if h.pk != instance.host_id)
    target = _by_name(lab, target_host)
    there = target.volume_root / SLUG
    there.mkdir(parents=True, exist_ok=True)
    (there / "conf").symlink_to(outside)
    (there / ".slipway-copied").symlink_to(outside / "copied-marker")
    (there / ".slipway-upload").symlink_to(outside / "upload-marker")

    op = _run(services.instance_move(user=ops, instance=instance, host=target_host))
    assert op.status == Operation.Status.SUCCEEDED, op.error
    assert "volume not copied" not in op.summary, op.summary

    assert _snapshot(outside) == before, "the move wrote outside the volume"
    moved = Instance.objects.select_related("host").get(pk=instance.pk)
    assert moved.host_id == target_host.pk and moved.state == Instance.State.RUNNING
    # The app's files came along: its own links as links, nothing of the host read through them.
    assert (there / "conf/app.ini").read_bytes() == b"port=8080\n" and not (there / "conf").is_symlink()
    assert os.readlink(there / "data") == str(outside)
    assert not (there / "disk").exists() and not (there / "pipe").exists()  # devices and fifos stay behind
    copied = there / ".slipway-copied"
    assert not copied.is_symlink() and copied.read_text() == f"moved from {home.name}\n"
    assert not (there / ".slipway-upload").is_symlink()
    assert (there / ".slipway-upload").read_text() == f"{digest}\n"
    assert _in_container(target, moved.container_name, "cat", f"{MOUNT}/conf/app.ini") == "port=8080\n"
    assert (
        _in_container(target, moved.container_name, "cat", f"{MOUNT}/index.html")
        == "hello through the jail\n"
    )


def test_an_upload_that_a_directory_of_the_app_blocks_fails_with_the_path_and_the_reason(
    jailed: App, owner: User, outside: Path, lab: list[fleet.LabHost]
) -> None:
    instance = Instance.objects.select_related("host").get(app=jailed)
    home = _by_name(lab, instance.host)
    # The app made a directory with files where the upload puts a file: never removed for it.
    _in_container(home, instance.container_name, "mkdir", "-p", f"{MOUNT}/index.html/keep")
    tarball = _tarball({"index.html": b"page\n"})
    op = _run(services.volume_upload(user=owner, app=jailed, fileobj=tarball, size=len(tarball.getvalue())))
    assert op.status == Operation.Status.FAILED
    volume = home.volume_root / SLUG
    assert (
        f"{home.name}: unpacking into {volume} failed: index.html: a directory with files in it" in op.error
    )
    assert (volume / "index.html/keep").is_dir()
