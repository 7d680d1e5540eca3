"""`publish_8_hosts` (issue 23): one base image version onto 8 lab hosts, by the portal's SSH
streaming and by its registry path (push once, every host pulls at once), each beside a raw
baseline doing the same work on the same hosts in the same run:

- SSH streaming beside `ssh root@host docker load < archive`, host after host: the very archive
  the portal built, through this machine's OpenSSH client with the portal's key;
- the registry beside `docker pull host:port/name:tag`, host after host, with the same
  credentials (the docker CLI's own config file) and the CA the portal installed.

The version is Debian bookworm with python3 (the lab's debian-python root filesystem, about 160
MB) plus one file naming the round, so every round's layer is new to the hosts and to the
registry: nothing is found in a cache. Before each measurement the hosts hold none of it. Run on
its own with `python -m bench publish` (into bench/results/publish.json), or as part of `make
bench`; either way on 8 hosts, and then the lab goes back to LAB_HOSTS.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.applications.models import BaseImage, BuildState
from apps.hosts import gateway
from apps.hosts.models import Host
from apps.images import distribute, imagebuild, recipe, registry_settings, rootfs
from apps.images import registry as registry_client
from apps.lab import fleet, netns
from apps.lab import images as lab_images
from apps.lab import registry as lab_registry
from apps.lab.register import register_hosts, register_registry
from bench.common import figure, say

HOSTS = 8
NAME = "bench/publish"


def _layer(round_: int, work: Path) -> Path:
    """The debian-python root filesystem with one more file: a layer no host or registry has."""
    source = rootfs.rootfs_tar("debian-python", Path(settings.ROOTFS_CACHE), lambda _: None)
    out = work / f"layer-{round_}.tar"
    shutil.copyfile(source, out)
    stamp = f"publish bench round {round_} {time.time_ns()}\n".encode()
    info = tarfile.TarInfo("etc/slipway-bench-round")
    info.size, info.mode, info.mtime = len(stamp), 0o644, 0
    with tarfile.open(out, "a") as archive:
        archive.addfile(info, io.BytesIO(stamp))
    return out


def _version(tag: str, layer: Path, work: Path) -> tuple[BaseImage, imagebuild.Built]:
    parsed = recipe.parse(lab_images.recipe_text(lab_images.IMAGES["debian-python"]), list(rootfs.NAMES))
    built = imagebuild.build(parsed, layer, f"{NAME}:{tag}", work / f"{tag}.tar")
    image = BaseImage.objects.create(
        name=NAME, tag=tag, runtime="python", state=BuildState.LOADING, digest=built.digest, size=built.size
    )
    return image, built


def _clear(lab: list[fleet.LabHost], *references: str) -> None:
    """Every name of the round's image off every host (its layer goes with the last name)."""
    for lab_host in lab:
        fleet.docker(lab_host, "rmi", *references, check=False)


def _on_every_host(lab: list[fleet.LabHost], reference: str, digest: str) -> None:
    for lab_host in lab:
        found = fleet.docker(
            lab_host, "image", "inspect", "-f", "{{.Id}}", reference, check=False
        ).stdout.strip()
        assert found == digest, (lab_host.name, reference, found, digest)


def _progress(hosts: list[Host], built: imagebuild.Built) -> dict[str, dict[str, Any]]:
    return {host.name: {"state": "waiting", "done": 0, "total": built.size, "error": ""} for host in hosts}


def _raw_ssh_load(lab: list[fleet.LabHost], archive: Path) -> float:
    gateway.portal_public_key()  # made on first use
    key = Path(settings.SSH_KEY_PATH)
    known = Path(tempfile.mkdtemp(prefix="bench-known-")) / "known_hosts"
    known.write_text("".join(f"{h.address} {h.host_public_key()}\n" for h in lab))
    started = time.perf_counter()
    for lab_host in lab:
        with open(archive, "rb") as source:
            subprocess.run(
                [
                    *("ssh", "-i", str(key), "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes"),
                    *(f"root@{lab_host.address}", "docker", "load", "-q"),
                ],
                stdin=source,
                stdout=subprocess.DEVNULL,
                check=True,
            )
    elapsed = time.perf_counter() - started
    shutil.rmtree(known.parent, ignore_errors=True)
    return elapsed


def _raw_pull_loop(lab: list[fleet.LabHost], reference: str, username: str, password: str) -> float:
    config = Path(tempfile.mkdtemp(prefix="bench-docker-config-"))
    try:
        auth = base64.b64encode(f"{username}:{password}".encode()).decode()
        (config / "config.json").write_text(
            json.dumps({"auths": {reference.split("/", 1)[0]: {"auth": auth}}})
        )
        (config / "config.json").chmod(0o600)
        started = time.perf_counter()
        for lab_host in lab:
            netns.sh(
                fleet.docker_cli(),
                *("--config", str(config), "-H", f"unix://{lab_host.docker_socket}", "pull", "-q", reference),
                timeout=600,
            )
        return time.perf_counter() - started
    finally:
        shutil.rmtree(config, ignore_errors=True)


def bench_publish(rounds: int) -> None:
    config = fleet.LabConfig.from_settings(hosts=HOSTS)
    say(f"publish_8_hosts: {HOSTS} lab hosts and the lab registry")
    lab = fleet.up(config, log=lambda _: None, load_images=False)
    lab_registry.up(config, log=lambda _: None)
    hosts = register_hosts(lab, log=lambda _: None)
    register_registry(config, log=lambda _: None)
    row = registry_settings.registry_active()
    assert row is not None
    username, password = lab_registry.LabRegistry.of(config).credentials()
    work = Path(tempfile.mkdtemp(prefix="bench-publish-", dir=settings.IMAGE_ARCHIVE_DIR))
    by_ssh: list[float] = []
    raw_ssh: list[float] = []
    by_registry: list[float] = []
    raw_pull: list[float] = []
    pushes: list[float] = []
    size = 0
    try:
        for round_ in range(1, rounds + 1):
            layer = _layer(round_, work)

            # The portal's SSH streaming: what publish does without a registry, SSH_LOAD_PARALLEL
            # hosts at a time.
            image, built = _version(f"r{round_}-ssh", layer, work)
            size = built.size
            started = time.perf_counter()
            failed = distribute.through_ssh(image, built, hosts, _progress(hosts, built))
            by_ssh.append(time.perf_counter() - started)
            assert not failed, failed
            _on_every_host(lab, image.reference, built.digest)
            _clear(lab, image.reference)
            raw_ssh.append(_raw_ssh_load(lab, built.path))
            _on_every_host(lab, image.reference, built.digest)
            _clear(lab, image.reference)

            # The portal's registry path: push once, then every host pulls at once.
            image, built = _version(f"r{round_}-registry", layer, work)
            started = time.perf_counter()
            failed = distribute.through_registry(image, built, hosts, _progress(hosts, built))
            by_registry.append(time.perf_counter() - started)
            assert not failed, failed
            remote = distribute.remote_reference(row, image)
            _on_every_host(lab, image.reference, built.digest)
            _clear(lab, image.reference, remote)
            raw_pull.append(_raw_pull_loop(lab, remote, username, password))
            _on_every_host(lab, remote, built.digest)
            _clear(lab, remote)
            # The push alone, for the record: a repository it is new to (every blob sent again).
            started = time.perf_counter()
            registry_client.push(
                registry_settings.access(row),
                built.path,
                f"{NAME}-push-{round_}",
                "1",
                timeout=settings.REGISTRY_TIMEOUT,
                work_dir=work,
            )
            pushes.append(time.perf_counter() - started)
            layer.unlink()
            say(
                f"  round {round_}: ssh {by_ssh[-1]:.2f} s (raw {raw_ssh[-1]:.2f}), registry "
                f"{by_registry[-1]:.2f} s (raw pull loop {raw_pull[-1]:.2f}, push alone {pushes[-1]:.2f})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        BaseImage.objects.filter(name=NAME).delete()
        Host.objects.filter(name__in=[h.name for h in lab[int(settings.LAB_HOSTS) :]]).delete()
        registry_settings.registry_set(
            user=None, url=row.url, username="", password=None, clear_password=True, ca_pem="", enabled=False
        )
        # Back to the lab everyone else uses: hosts beyond LAB_HOSTS go.
        fleet.up(fleet.LabConfig.from_settings(), log=lambda _: None)
    mb = size / 1e6
    note = f"{mb:.0f} MB image, 8 hosts"
    figure(
        "publish_8_hosts_ssh",
        "s",
        statistics.median(by_ssh),
        statistics.median(raw_ssh),
        rounds=rounds,
        note=note,
    )
    figure(
        "publish_8_hosts_registry",
        "s",
        statistics.median(by_registry),
        statistics.median(raw_pull),
        rounds=rounds,
        note=f"{note}; push alone {statistics.median(pushes):.2f} s",
    )
