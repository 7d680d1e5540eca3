"""Moving the lab's legacy VM into a container, for real: its app answers on its IP before, and the
same content answers from a container on the same IP after; the VM's service is stopped and its
files are untouched. Faults at the copy (the link cut), the health check (a wrong port), the
cutover (the target host's dockerd gone) and the verification (the copy differs): each rolls
back and the VM serves again."""

from __future__ import annotations

import hashlib
import ipaddress
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import Team
from apps.applications import services as catalog
from apps.applications.models import App, BaseImage
from apps.console import services as console
from apps.hosts.models import Host
from apps.hosts.transport import fingerprint
from apps.instances import executor, reconcile
from apps.instances.models import Instance, Operation
from apps.lab import fleet, netns
from apps.lab.vm import (
    LegacyVM,
    vm_down,
    vm_exec,
    vm_host_public_key,
    vm_password,
    vm_restore,
    vm_rotate_host_key,
    vm_up,
)
from apps.metrics import services as metrics
from apps.metrics.models import Sample
from apps.network.models import IPAllocation, IPPool
from apps.relocations import runner, services
from apps.relocations.models import Relocation, Step
from tests.conftest import TEST_BROKER_URL, _database_url
from tests.helpers import KillableWorker, eventually, frozen

# Inside the tests' pool range, away from the addresses the tests' instances take (from .200.1 up).
SSH_ADDRESS = "10.213.232.11"
SERVICE_ADDRESS = "10.213.232.10"


@pytest.fixture(scope="module")
def vm(lab: list[fleet.LabHost]) -> Iterator[LegacyVM]:
    machine = LegacyVM(
        lab[0].config,
        "vmr",
        ssh_address=ipaddress.IPv4Address(SSH_ADDRESS),
        service_address=ipaddress.IPv4Address(SERVICE_ADDRESS),
        # More than the SSH window (2 MB) can hold in flight, so a cut link stalls the copy.
        data_mb=8,
    )
    vm_up(machine, log=lambda _: None)
    yield machine
    vm_down(machine)


@pytest.fixture
def served(vm: LegacyVM, lab: list[fleet.LabHost], remove_apps: list[str]) -> Iterator[LegacyVM]:
    """The VM serving as before each test; afterwards the test's containers go first (one may
    hold the VM's address), then the VM gets its address and service back."""
    vm_restore(vm)
    _forget_volumes(lab)
    remove_apps.append("notes")
    yield vm
    for lab_host in lab:
        ids = fleet.docker(lab_host, "ps", "-aq", "--filter", "label=io.slipway.app=notes").stdout.split()
        if ids:
            fleet.docker(lab_host, "rm", "-f", *ids, check=False)
    _forget_volumes(lab)
    vm_restore(vm)


def _forget_volumes(lab: list[fleet.LabHost]) -> None:
    # The hosts' disks outlive the test database: a copy left by another test would be "resumed".
    for lab_host in lab:
        shutil.rmtree(lab_host.volume_root / "notes", ignore_errors=True)


@pytest.fixture
def python_image(lab_images: dict[str, BaseImage]) -> BaseImage:
    return lab_images["slipway/debian-python"]


def _get(address: str, path: str = "/", timeout: float = 3) -> bytes:
    with urllib.request.urlopen(f"http://{address}:8080{path}", timeout=timeout) as response:
        return bytes(response.read())


def _get_eventually(address: str, path: str = "/", timeout: float = 15) -> bytes:
    """A container reported running may take a moment before its app listens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _get(address, path)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _files(vm: LegacyVM) -> dict[str, str]:
    """sha256 of every file in the VM's app directory, read from its disk."""
    root = vm.inside(vm.app_dir)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _register(vm: LegacyVM, owner: User, team: Team) -> Relocation:
    relocation = services.relocation_register(user=owner, team=team, name="notes", address=SSH_ADDRESS)
    assert relocation.offered_key == vm_host_public_key(vm)
    relocation = services.relocation_confirm_key(
        user=owner, relocation=relocation, fingerprint_seen=fingerprint(vm_host_public_key(vm))
    )
    return services.relocation_install_key(user=owner, relocation=relocation, password=vm_password(vm))


def _inspect_inline(relocation: Relocation, owner: User) -> Relocation:
    services.relocation_inspect(user=owner, relocation=relocation)
    runner.inspect(relocation.pk)
    relocation.refresh_from_db()
    assert relocation.state == Relocation.State.INSPECTED, relocation.error
    return relocation


def _planned(relocation: Relocation, owner: User, **changes: Any) -> Relocation:
    plan = services.plan_suggestion(relocation)
    plan.update(changes)
    return services.relocation_plan(user=owner, relocation=relocation, plan=plan)


def _run_inline(relocation: Relocation, owner: User, **hooks: Any) -> Relocation:
    services.relocation_run(user=owner, relocation=relocation)
    runner.run(relocation.pk, hooks=hooks)
    relocation.refresh_from_db()
    return relocation


def _steps(relocation: Relocation) -> dict[str, Step]:
    return {s.name: s for s in services.steps_of(relocation)}


def _vm_addresses(vm: LegacyVM) -> str:
    return vm_exec(vm, "ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout


def _assert_vm_serves(vm: LegacyVM, before: bytes) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            assert _get(SERVICE_ADDRESS) == before
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert f" {SERVICE_ADDRESS}/" in _vm_addresses(vm)
    assert vm_exec(vm, "/etc/init.d/notes", "status", check=False).returncode == 0


def test_the_vm_moves_into_a_container_on_its_own_ip_through_the_worker(
    served: LegacyVM,
    owner: User,
    alpha: Team,
    lab_pool: IPPool,
    python_image: BaseImage,
    lab_hosts: list[Host],
    own_worker: KillableWorker,
) -> None:
    vm = served
    index_before = _get(SERVICE_ADDRESS)
    data_name = sorted(p.name for p in vm.inside(f"{vm.app_dir}/data").iterdir() if p.suffix == ".bin")[0]
    blob_before = _get(SERVICE_ADDRESS, f"/data/{data_name}")
    files_before = _files(vm)

    # Through the REST API, as a script of the owner's would.
    api = APIClient()
    api.force_authenticate(owner)
    made = api.post(
        "/api/v1/relocations/", {"team": alpha.slug, "name": "notes", "address": SSH_ADDRESS}, format="json"
    )
    assert made.status_code == 201, made.content
    base = f"/api/v1/relocations/{made.json()['id']}/"
    assert made.json()["offered_fingerprint"] == fingerprint(vm_host_public_key(vm))
    assert made.json()["pinned_fingerprint"] is None
    wrong = api.post(base + "confirm-key/", {"fingerprint": "SHA256:nope"}, format="json")
    assert wrong.status_code == 400 and "not a SHA256 fingerprint" in str(wrong.json())
    other = "SHA256:" + "A" * 43
    wrong = api.post(base + "confirm-key/", {"fingerprint": other}, format="json")
    assert wrong.status_code == 400 and "not the fingerprint the VM offered" in str(wrong.json())
    pinned = api.post(
        base + "confirm-key/", {"fingerprint": made.json()["offered_fingerprint"]}, format="json"
    )
    assert pinned.status_code == 200 and pinned.json()["state"] == "ready"
    assert api.post(base + "install-key/", {"password": vm_password(vm)}, format="json").status_code == 200
    assert api.post(base + "inspect/").status_code == 202
    relocation = Relocation.objects.get(pk=made.json()["id"])
    relocation = _wait(relocation, lambda r: r.state != Relocation.State.INSPECTING, 60)
    assert relocation.state == Relocation.State.INSPECTED, relocation.error
    report = api.get(base + "inspections/").json()[0]["report"]
    assert any(entry["port"] == 8080 and entry["runtime"] == "python" for entry in report["listening"])
    plan = api.get(base + "plan/").json()
    assert plan["saved"] is False
    plan = plan["plan"]
    assert plan["keep_address"] == SERVICE_ADDRESS
    assert plan["app_dir"] == vm.app_dir
    assert plan["base_image"] == python_image.pk
    refused = api.put(base + "plan/", {"plan": {**plan, "app_dir": "/etc"}}, format="json")
    assert refused.status_code == 400 and "system directory" in str(refused.json()["app_dir"])
    saved = api.put(base + "plan/", {"plan": plan}, format="json")
    assert saved.status_code == 200, saved.content
    assert IPAllocation.objects.get(address=SERVICE_ADDRESS).app is None  # held for the move

    assert api.post(base + "run/").status_code == 202
    relocation = _wait(relocation, lambda r: r.state != Relocation.State.RUNNING, 180)
    shown = api.get(base).json()
    assert shown["state"] == "done" and [s["percent"] for s in shown["steps"]] == [100] * 5
    steps = _steps(relocation)
    assert relocation.state == Relocation.State.DONE, (
        relocation.error,
        {n: s.detail for n, s in steps.items()},
    )
    assert [s.state for s in steps.values()] == [Step.State.DONE] * 5
    assert steps["copy"].done == steps["copy"].total > 3_000_000
    assert "sha256" in steps["copy"].detail

    # The same content, from a container now holding the VM's address.
    assert _get(SERVICE_ADDRESS) == index_before
    assert _get(SERVICE_ADDRESS, f"/data/{data_name}") == blob_before
    app = App.objects.get(slug="notes")
    instance = Instance.objects.get(app=app, slot=0)
    assert instance.address == SERVICE_ADDRESS and instance.state == Instance.State.RUNNING
    allocation = IPAllocation.objects.get(address=SERVICE_ADDRESS)
    assert (allocation.app, allocation.slot) == (app, 0)
    lab_host = next(h for h in fleet.LabConfig.from_settings().all_hosts() if h.name == instance.host.name)
    ip = fleet.docker(
        lab_host, "inspect", "-f", "{{.NetworkSettings.Networks.public.IPAddress}}", instance.container_name
    )
    assert ip.stdout.strip() == SERVICE_ADDRESS
    # The VM's files are the app's release 1, read-only in the container.
    assert app.release is not None and (app.release.number, app.release.source) == (1, "host")
    assert (lab_host.volume_root / "notes" / "releases" / "1" / "notes.ini").is_file()
    written = fleet.docker(lab_host, "exec", instance.container_name, "touch", f"{vm.app_dir}/x", check=False)
    assert "Read-only file system" in written.stderr
    # The VM: its service stopped, the address given up, its files as they were.
    assert vm_exec(vm, "/etc/init.d/notes", "status", check=False).returncode != 0
    assert f" {SERVICE_ADDRESS}/" not in _vm_addresses(vm)
    assert _files(vm) == files_before

    # An ordinary app: commands run in it (its working directory is the VM's), the metrics sweep
    # finds it, and a second instance on the other host gets the files host to host.
    out = bytearray()
    session = console.exec_run(user=owner, instance=instance, on_output=out.extend, argv=["cat", "notes.ini"])
    assert session.exit_code == 0 and bytes(out) == vm.inside(f"{vm.app_dir}/notes.ini").read_bytes()
    metrics.collect_all()
    assert Sample.objects.filter(app=app, slot=0).exists()
    op = catalog.app_scale(user=owner, app=app, instances=2)
    op = _wait_op(op)
    assert op.status == Operation.Status.SUCCEEDED, op.error
    second = Instance.objects.get(app=app, slot=1)
    assert second.host != instance.host
    assert second.address and _get_eventually(second.address) == index_before


def test_a_cut_link_during_the_copy_rolls_back_and_the_next_run_resumes(
    served: LegacyVM,
    owner: User,
    alpha: Team,
    lab_pool: IPPool,
    python_image: BaseImage,
    lab_hosts: list[Host],
    transactional_db: None,
    settings: Any,
) -> None:
    vm = served
    settings.RELOCATION_STALL_TIMEOUT = 2
    before = _get(SERVICE_ADDRESS)
    relocation = _planned(_inspect_inline(_register(vm, owner, alpha), owner), owner)
    cut: list[float] = []

    def cut_link(moved: int) -> None:
        # Past the first 1 MB file the link goes down for a few seconds, as a flapping switch port.
        # What is in flight by then (the SSH window, about 2 MB) still arrives; the rest cannot.
        if moved > 1_200_000 and not cut:
            cut.append(time.monotonic())
            netns.sh("ip", "link", "set", vm.veth, "down")
            threading.Timer(4, lambda: netns.sh("ip", "link", "set", vm.veth, "up")).start()

    relocation = _run_inline(relocation, owner, copy_chunk=cut_link)
    steps = _steps(relocation)
    assert cut, "the hook never ran"
    assert relocation.state == Relocation.State.ROLLED_BACK, relocation.error
    assert steps["copy"].state == Step.State.FAILED
    assert "stalled" in steps["copy"].detail, steps["copy"].detail
    assert "Copy" in relocation.error
    assert steps["rollback"].state == Step.State.DONE
    assert not Instance.objects.filter(app__slug="notes").exists()
    _assert_vm_serves(vm, before)

    # Run again: the files that made it are not sent again.
    relocation = _run_inline(relocation, owner)
    steps = _steps(relocation)
    assert relocation.state == Relocation.State.DONE, (
        relocation.error,
        {n: s.detail for n, s in steps.items()},
    )
    assert "already there from an earlier run" in steps["copy"].detail, steps["copy"].detail
    assert _get(SERVICE_ADDRESS) == before


def test_a_wrong_port_fails_the_health_check_and_the_vm_keeps_serving(
    served: LegacyVM,
    owner: User,
    alpha: Team,
    lab_pool: IPPool,
    python_image: BaseImage,
    lab_hosts: list[Host],
    transactional_db: None,
    settings: Any,
) -> None:
    vm = served
    settings.RELOCATION_HEALTH_TIMEOUT = 3
    before = _get(SERVICE_ADDRESS)
    relocation = _planned(_inspect_inline(_register(vm, owner, alpha), owner), owner, port=8081)
    relocation = _run_inline(relocation, owner)
    steps = _steps(relocation)
    assert relocation.state == Relocation.State.ROLLED_BACK
    assert steps["health"].state == Step.State.FAILED
    assert "did not answer" in steps["health"].detail and ":8081" in steps["health"].detail
    assert steps["cutover"].state == Step.State.SKIPPED
    assert "nothing had changed on the VM" in steps["rollback"].detail
    app = App.objects.get(slug="notes")
    assert (
        app.instances == 0 and not app.instance_set.exclude(desired_state=Instance.Desired.REMOVED).exists()
    )
    assert IPAllocation.objects.get(address=SERVICE_ADDRESS).app is None  # still held for the VM
    _assert_vm_serves(vm, before)


def test_the_target_host_failing_at_cutover_gives_the_vm_its_address_back(
    served: LegacyVM,
    owner: User,
    alpha: Team,
    lab: list[fleet.LabHost],
    lab_pool: IPPool,
    python_image: BaseImage,
    lab_hosts: list[Host],
    transactional_db: None,
) -> None:
    vm = served
    before = _get(SERVICE_ADDRESS)
    relocation = _planned(_inspect_inline(_register(vm, owner, alpha), owner), owner)

    def daemon_dies(ctx: runner.Context) -> None:
        # The VM has given up its address; the host that should take it over loses its dockerd.
        assert ctx.host is not None
        fleet.stop_dockerd(next(h for h in lab if h.name == ctx.host.name))

    try:
        relocation = _run_inline(relocation, owner, cutover_released=daemon_dies)
    finally:
        fleet.up(lab[0].config, log=lambda _: None)
    steps = _steps(relocation)
    assert relocation.state == Relocation.State.ROLLED_BACK, relocation.error
    assert steps["cutover"].state == Step.State.FAILED
    assert f"{SERVICE_ADDRESS} back on the VM" in steps["rollback"].detail
    assert "service started on the VM" in steps["rollback"].detail
    _assert_vm_serves(vm, before)


def test_a_copy_that_answers_differently_after_the_cutover_is_rolled_back(
    served: LegacyVM,
    owner: User,
    alpha: Team,
    lab: list[fleet.LabHost],
    lab_pool: IPPool,
    python_image: BaseImage,
    lab_hosts: list[Host],
    transactional_db: None,
) -> None:
    vm = served
    before = _get(SERVICE_ADDRESS)
    # Its data directory is the app's state: kept in its persistent directory, writable.
    relocation = _planned(_inspect_inline(_register(vm, owner, alpha), owner), owner, state_paths=["data"])

    def lose_a_file(ctx: runner.Context) -> None:
        # After the cutover, one data file goes missing in the container's persistent directory:
        # the index differs.
        instance = ctx.instance
        assert instance is not None
        lab_host = next(h for h in lab if h.name == instance.host.name)
        victim = sorted(p.name for p in vm.inside(f"{vm.app_dir}/data").iterdir())[0]
        # The VM's data went to the app's persistent directory, not into its release's files.
        volume = lab_host.volume_root / "notes"
        assert (volume / "state" / "data" / victim).is_file()
        assert not (volume / "releases" / "1" / "data" / victim).exists()
        fleet.docker(lab_host, "exec", instance.container_name, "rm", f"{vm.app_dir}/data/{victim}")

    relocation = _run_inline(relocation, owner, verify=lose_a_file)
    steps = _steps(relocation)
    assert relocation.state == Relocation.State.ROLLED_BACK, relocation.error
    assert steps["cutover"].state == Step.State.DONE
    assert steps["verify"].state == Step.State.FAILED and "the VM answered" in steps["verify"].detail
    assert f"{SERVICE_ADDRESS} back on the VM" in steps["rollback"].detail
    allocation = IPAllocation.objects.get(address=SERVICE_ADDRESS)
    assert allocation.app is None  # held for the VM again, not the app's
    # Neighbours were told the address is the VM's again: it answers at once, not after ARP ages out.
    _assert_vm_serves(vm, before)


def test_an_unconfirmed_or_changed_host_key_is_refused(
    vm: LegacyVM, owner: User, alpha: Team, lab_pool: IPPool, transactional_db: None
) -> None:
    relocation = services.relocation_register(user=owner, team=alpha, name="notes", address=SSH_ADDRESS)
    with pytest.raises(ValidationError, match="Confirm the VM's host key"):
        services.relocation_inspect(user=owner, relocation=relocation)
    relocation = services.relocation_confirm_key(
        user=owner, relocation=relocation, fingerprint_seen=fingerprint(relocation.offered_key)
    )
    with pytest.raises(ValidationError, match="password was refused"):
        services.relocation_install_key(user=owner, relocation=relocation, password="not-the-password")
    services.relocation_install_key(user=owner, relocation=relocation, password=vm_password(vm))

    vm_rotate_host_key(vm)
    with pytest.raises(ValidationError, match="host key changed"):
        services.relocation_install_key(user=owner, relocation=relocation, password=vm_password(vm))
    services.relocation_inspect(user=owner, relocation=relocation)
    runner.inspect(relocation.pk)
    relocation.refresh_from_db()
    assert relocation.state == Relocation.State.READY
    assert "host key changed" in relocation.error
    assert "host key changed" in relocation.inspections.get().error


def _wait(relocation: Relocation, done: Any, timeout: float) -> Relocation:
    deadline = time.monotonic() + timeout
    while True:
        relocation.refresh_from_db()
        if done(relocation) or time.monotonic() > deadline:
            return relocation
        time.sleep(0.3)


def _wait_op(op: Operation, timeout: float = 120) -> Operation:
    deadline = time.monotonic() + timeout
    while True:
        op.refresh_from_db()
        if op.status in Operation.TERMINAL:
            return op
        if time.monotonic() > deadline:
            executor.run_operation(op.pk)
            op.refresh_from_db()
            return op
        time.sleep(0.3)


# --- a worker lost mid-run (SIGKILL) ----------------------------------------------------------------


def _relocation_ended(relocation: Relocation, seconds: float = 240) -> Relocation:
    return eventually(
        lambda: Relocation.objects.exclude(state=Relocation.State.RUNNING).filter(pk=relocation.pk).first(),
        seconds,
        "the relocation to end",
        every=0.3,
    )


def _take_over(relocation: Relocation) -> KillableWorker:
    """After the kill: the dead worker's heartbeat is silent (the row is set an hour back rather
    than waiting), the reconcile sends the run again, a new worker takes it over."""
    relocation.refresh_from_db()
    assert relocation.state == Relocation.State.RUNNING and relocation.heartbeat_at is not None
    Relocation.objects.filter(pk=relocation.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    Operation.objects.filter(status=Operation.Status.RUNNING).update(
        heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    worker = KillableWorker(TEST_BROKER_URL, _database_url(), RELOCATION_STALL_TIMEOUT="120")
    assert reconcile.reconcile().jobs_resent.get("relocation") == [relocation.pk]
    return worker


def test_a_worker_killed_mid_copy_is_taken_over_and_the_move_finishes(
    served: LegacyVM,
    owner: User,
    alpha: Team,
    lab_pool: IPPool,
    python_image: BaseImage,
    lab_hosts: list[Host],
    transactional_db: None,
    settings: Any,
) -> None:
    vm = served
    before = _get(SERVICE_ADDRESS)
    relocation = _planned(_inspect_inline(_register(vm, owner, alpha), owner), owner)
    # The copy waits on a link that is down (and would wait long): the kill lands mid-copy.
    worker = KillableWorker(TEST_BROKER_URL, _database_url(), RELOCATION_STALL_TIMEOUT="120")
    try:
        services.relocation_run(user=owner, relocation=relocation)
        eventually(
            lambda: Step.objects.filter(
                relocation=relocation, name="copy", state=Step.State.RUNNING
            ).exists(),
            60,
            "the copy under way",
        )
        netns.sh("ip", "link", "set", vm.veth, "down")
        try:
            worker.kill()
        finally:
            netns.sh("ip", "link", "set", vm.veth, "up")
        worker.stop()
        claims = Relocation.objects.get(pk=relocation.pk).attempts
        worker = _take_over(relocation)
        relocation = _relocation_ended(relocation)
    finally:
        worker.stop()
    steps = _steps(relocation)
    assert relocation.state == Relocation.State.DONE, (
        relocation.error,
        {n: s.detail for n, s in steps.items()},
    )
    assert relocation.attempts == claims + 1  # taken over once
    assert [s.state for s in steps.values()] == [Step.State.DONE] * 5
    # The address answers from exactly one place: the container, with the VM's content.
    assert _get_eventually(SERVICE_ADDRESS) == before
    assert f" {SERVICE_ADDRESS}/" not in _vm_addresses(vm)
    instance = Instance.objects.get(app__slug="notes", slot=0)
    assert instance.address == SERVICE_ADDRESS and instance.state == Instance.State.RUNNING


def test_a_worker_killed_mid_cutover_is_rolled_back_and_the_vm_serves_again(
    served: LegacyVM,
    owner: User,
    alpha: Team,
    lab: list[fleet.LabHost],
    lab_pool: IPPool,
    python_image: BaseImage,
    lab_hosts: list[Host],
    transactional_db: None,
    settings: Any,
) -> None:
    vm = served
    before = _get(SERVICE_ADDRESS)
    relocation = _planned(_inspect_inline(_register(vm, owner, alpha), owner), owner)
    worker = KillableWorker(TEST_BROKER_URL, _database_url())
    try:
        services.relocation_run(user=owner, relocation=relocation)
        eventually(
            lambda: Step.objects.filter(
                relocation=relocation, name="cutover", state=Step.State.RUNNING
            ).exists(),
            120,
            "the cutover under way",
        )
        relocation.refresh_from_db()
        assert relocation.host is not None
        target = next(h for h in lab if h.name == relocation.host.name)
        # The VM gives up its address, which moves to the app; the container that should take
        # it waits on a dockerd held still. The worker dies there: the VM serves nothing now.
        with frozen(target):
            eventually(
                lambda: Relocation.objects.get(pk=relocation.pk).cutover.get("address_moved"),
                60,
                "the VM's address moved to the app",
            )
            worker.kill()
        worker.stop()
        claims = Relocation.objects.get(pk=relocation.pk).attempts
        worker = _take_over(relocation)
        relocation = _relocation_ended(relocation)
    finally:
        worker.stop()
    steps = _steps(relocation)
    assert relocation.state == Relocation.State.ROLLED_BACK, relocation.error
    assert relocation.attempts == claims + 1  # taken over once
    assert relocation.error.startswith(runner.LOST_IN_CUTOVER)
    assert steps["cutover"].state == Step.State.FAILED and "worker was lost" in steps["cutover"].detail
    assert steps["verify"].state == Step.State.SKIPPED
    assert f"{SERVICE_ADDRESS} back on the VM" in steps["rollback"].detail, steps["rollback"].detail
    # The address answers from exactly one place: the VM again; no container of the app holds it.
    _assert_vm_serves(vm, before)
    assert IPAllocation.objects.get(address=SERVICE_ADDRESS).app is None  # held for the VM again
    eventually(
        lambda: (
            not Instance.objects.filter(app__slug="notes")
            .exclude(desired_state=Instance.Desired.REMOVED)
            .exists()
            and not any(
                fleet.docker(h, "ps", "-q", "--filter", "label=io.slipway.app=notes").stdout.strip()
                for h in lab
            )
        ),
        60,
        "the app's container gone",
    )
