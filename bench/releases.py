"""Issue 21's figures, each beside raw Docker doing the same work on the same hosts in the same
round:

- `deploy_4`: a 10 MB archive POSTed to the releases API until all 4 instances of the app run the
  new release, each recreated in turn and past its TCP health check (the worker unpacks the
  archive on both hosts first); raw: the same archive copied to both hosts by OpenSSH
  (`ssh host 'tar -xzf - -C dir' < archive`, both at once), then the app's four containers by
  hand one after another: stop, rm, `docker run` on the new directory, wait until its port
  accepts a connection.
- `rollback_4`: the rollback API call until all 4 instances run the release before again, past
  their checks (its files are on the hosts already); raw: the four stop/rm/run/connect cycles on
  the previous directory, already there.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import socket
import statistics
import subprocess
import tarfile
import time
from collections.abc import Callable
from functools import partial

from django.conf import settings
from django.test import Client

from apps.applications.models import App
from apps.hosts import gateway
from apps.hosts.transport import ContainerSpec
from apps.instances.models import Instance, Operation
from apps.instances.spec import instance_spec
from apps.lab import fleet, netns
from bench.common import RAW_ADDRESSES, figure, raw_run_args, wait_for

ARCHIVE_MB = 10


def _archive(round_: int) -> bytes:
    """40 files of 256 KiB of random bytes (they do not compress) and a page saying the round."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in [("index.html", f"round {round_}\n".encode())] + [
            (f"assets/blob-{n:02d}.bin", os.urandom(256 * 1024)) for n in range(ARCHIVE_MB * 4)
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), compresslevel=1)


def _accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_op(op_id: int) -> Operation:
    wait_for(
        lambda: Operation.objects.filter(pk=op_id, status__in=Operation.TERMINAL).exists(),
        timeout=300,
        what="the deploy",
    )
    op = Operation.objects.get(pk=op_id)
    assert op.status == Operation.Status.SUCCEEDED, op.error
    return op


def _raw_dir(roots: dict[str, str], number: int, host: str) -> str:
    return f"{roots[host]}/{number}"


def _on_dir(spec: ContainerSpec, directory: str) -> ContainerSpec:
    """The instance's container with its release's files from `directory` instead."""
    mount = spec.ro_binds[0][1]
    return dataclasses.replace(spec, ro_binds=((directory, mount), *spec.ro_binds[1:]))


def bench_releases(
    client: Client, app: App, lab: list[fleet.LabHost], by_name: dict[str, fleet.LabHost], rounds: int
) -> None:
    """The app has 4 instances on two hosts when this starts."""
    gateway.portal_public_key()
    ssh = ["ssh", "-i", str(settings.SSH_KEY_PATH), "-o", "StrictHostKeyChecking=no"]
    ssh += ["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    raw_root = {h.name: f"{h.volume_root}/bench-raw-releases" for h in lab}

    def specs() -> list[tuple[fleet.LabHost, ContainerSpec]]:
        return [
            (by_name[i.host.name], instance_spec(i))
            for i in Instance.objects.filter(app=app)
            .select_related("app__release", "host", "release__base_image")
            .order_by("slot")
        ]

    def raw_cycles(made: list[tuple[fleet.LabHost, ContainerSpec]], directory: Callable[[str], str]) -> float:
        """The four containers by hand, one after another, each until its port accepts."""
        names = [(h, spec, f"bench-rel-{n}", RAW_ADDRESSES[n]) for n, (h, spec) in enumerate(made)]
        started = time.perf_counter()
        for lab_host, spec, name, ip in names:
            fleet.docker(lab_host, "stop", "-t", "10", name, check=False)
            fleet.docker(lab_host, "rm", "-f", name, check=False)
            fleet.docker(lab_host, *raw_run_args(_on_dir(spec, directory(lab_host.name)), name, ip))
            wait_for(partial(_accepts, ip, spec.port or 8080), timeout=30, interval=0.02)
        return time.perf_counter() - started

    deploys, raw_deploys, rollbacks, raw_rollbacks = [], [], [], []
    for lab_host in lab:
        netns.sh("rm", "-rf", raw_root[lab_host.name])
    try:
        for i in range(rounds):
            data = _archive(i)
            upload = io.BytesIO(data)
            upload.name = "release.tar.gz"
            started = time.perf_counter()
            response = client.post(
                f"/api/v1/apps/{app.slug}/releases/", {"file": upload, "note": f"bench {i}"}
            )
            assert response.status_code == 202, response.content
            _wait_op(response.json()["operation"]["id"])
            deploys.append(time.perf_counter() - started)
            made = specs()
            # Raw: the archive onto both hosts at once, then the four cycles onto it.
            started = time.perf_counter()
            copies = [
                subprocess.Popen(
                    [
                        *ssh,
                        f"root@{h.address}",
                        f"mkdir -p {raw_root[h.name]}/{i} && tar -xzf - -C {raw_root[h.name]}/{i}",
                    ],
                    stdin=subprocess.PIPE,
                )
                for h in lab
            ]
            for copy in copies:
                copy.communicate(data)
                assert copy.returncode == 0
            raw_deploys.append(
                time.perf_counter() - started + raw_cycles(made, partial(_raw_dir, raw_root, i))
            )

            started = time.perf_counter()
            response = client.post(f"/api/v1/apps/{app.slug}/rollback/", {}, content_type="application/json")
            assert response.status_code == 202, response.content
            _wait_op(response.json()["operation"]["id"])
            rollbacks.append(time.perf_counter() - started)
            # Raw: back onto the directory before (round 0 goes back to this round's own copy
            # made anew: what the hosts had before the bench is not the raw side's).
            before = i - 1 if i else i
            raw_rollbacks.append(raw_cycles(specs(), partial(_raw_dir, raw_root, before)))
    finally:
        for lab_host in lab:
            ids = fleet.docker(lab_host, "ps", "-aq", "--filter", "name=bench-rel-").stdout.split()
            if ids:
                fleet.docker(lab_host, "rm", "-f", *ids, check=False)
            netns.sh("rm", "-rf", raw_root[lab_host.name])
    note = f"{ARCHIVE_MB} MB archive, 4 instances on 2 hosts, one at a time behind a TCP check"
    figure(
        "deploy_4", "s", statistics.median(deploys), statistics.median(raw_deploys), rounds=rounds, note=note
    )
    figure(
        "rollback_4",
        "s",
        statistics.median(rollbacks),
        statistics.median(raw_rollbacks),
        rounds=rounds,
        note="nothing copied: the release before is on the hosts",
    )
