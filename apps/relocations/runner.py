"""What the worker does for a relocation: inspect the VM, and run the move step by step
(copy, create, health, cutover, verify), rolling back to the VM serving again if a step fails.

Each step records its progress in its row, so the page shows it live. What the cutover changes
on the VM is recorded before the next change, so a rollback (even after a worker died) knows
what to put back. The VM's files are only read."""

from __future__ import annotations

import hashlib
import http.client
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.applications import releases
from apps.applications import services as catalog
from apps.applications.models import App, BaseImage
from apps.hosts import gateway, treecopy
from apps.hosts.models import Host
from apps.hosts.transport import CommandResult, HostError
from apps.instances import codefiles, executor, health, placement
from apps.instances.models import Instance, Operation
from apps.instances.services import operation_create
from apps.network.services import address_move, address_unassign
from apps.relocations.inspect import inspect_vm
from apps.relocations.models import RELOCATION_INSPECT, RELOCATION_RUN, Inspection, Relocation, Step
from apps.relocations.services import endpoint
from portal import jobs

log = logging.getLogger(__name__)


class StepFailed(Exception):
    """A step could not finish; the message is safe to show."""


# --- inspection -----------------------------------------------------------------------------------


def vm_runner(relocation: Relocation) -> Callable[..., CommandResult]:
    target = endpoint(relocation)

    def run(argv: list[str], *, timeout: float = 20, max_output: int = 1_000_000) -> CommandResult:
        return gateway.vm_run(
            target,
            _privileged(relocation, argv) if argv[0] == "ip" else argv,
            timeout=timeout,
            max_output=max_output,
        )

    return run


def _privileged(relocation: Relocation, argv: list[str]) -> list[str]:
    # Changing the VM's addresses needs root; a non-root user goes through sudo, never a password.
    return argv if relocation.ssh_user == "root" else ["sudo", "-n", *argv]


def _auth_hint(exc: HostError) -> str:
    text = str(exc)
    if "authentication failed" in text.lower():
        return (
            f"{text}. Install the portal's key on the VM first: give the SSH user's password once "
            "(it is not kept), or add the portal's public key to the user's authorized_keys yourself."
        )
    return text


def inspect(relocation_id: int) -> None:
    if not jobs.claim(RELOCATION_INSPECT, relocation_id):
        return  # another worker has it, or it ended
    with jobs.Heartbeat.of(RELOCATION_INSPECT, relocation_id):
        _inspect(Relocation.objects.get(pk=relocation_id))


def _inspect(relocation: Relocation) -> None:
    after = (
        Relocation.State.INSPECTED
        if not relocation.plan
        else (Relocation.State.ROLLED_BACK if relocation.attempt else Relocation.State.PLANNED)
    )
    # A fresh connection: the VM's key is checked now, not when a cached session was made.
    gateway.vm_forget(endpoint(relocation))
    try:
        # The inspection carries on past commands that fail; a VM that cannot be reached (or
        # shows another key) must fail it instead.
        gateway.vm_run(endpoint(relocation), ["true"], timeout=15)
        report = inspect_vm(vm_runner(relocation), ssh_address=relocation.address)
    except HostError as exc:
        message = _auth_hint(exc)
        Inspection.objects.create(relocation=relocation, error=message)
        state = Relocation.State.READY if not relocation.plan else after
        Relocation.objects.filter(pk=relocation.pk).update(
            state=state, error=message, updated_at=timezone.now()
        )
        return
    except Exception as exc:  # a parsing bug must not leave the relocation "inspecting" for ever
        log.exception("inspection of %s failed", relocation)
        Inspection.objects.create(relocation=relocation, error=f"inspection failed: {exc}")
        Relocation.objects.filter(pk=relocation.pk).update(
            state=Relocation.State.READY if not relocation.plan else after,
            error=f"inspection failed: {exc}",
            updated_at=timezone.now(),
        )
        return
    Inspection.objects.create(relocation=relocation, report=report)
    Relocation.objects.filter(pk=relocation.pk).update(state=after, error="", updated_at=timezone.now())


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Context:
    relocation: Relocation
    plan: dict[str, Any]
    app: App | None = None
    host: Host | None = None
    # sha256 and status of each verify path as the VM answered before the cutover.
    expected: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    # Test hooks by name, to inject a fault at a precise moment (see run()).
    hooks: dict[str, Callable[..., None]] = field(default_factory=dict)

    @property
    def vm_port(self) -> int:
        """The port the VM's app listens on, as the inspection found it (the plan's port is the
        container's, which may differ)."""
        report = self.relocation.latest_report
        main = next(
            (e for e in report.get("listening") or [] if e.get("pid") == report.get("main_pid")),
            None,
        )
        return int((main or {}).get("port") or self.plan.get("port") or 0)

    @property
    def vm(self) -> Any:
        return endpoint(self.relocation)

    @property
    def instance(self) -> Instance | None:
        if self.app is None:
            return None
        return (
            Instance.objects.filter(app=self.app, slot=0)
            .exclude(desired_state=Instance.Desired.REMOVED)
            .first()
        )

    def save_cutover(self, **changes: Any) -> None:
        self.relocation.cutover = {**self.relocation.cutover, **changes}
        Relocation.objects.filter(pk=self.relocation.pk).update(cutover=self.relocation.cutover)


class StepRecorder:
    def __init__(self, step: Step) -> None:
        self.step = step
        self.last = 0.0

    def start(self) -> None:
        Step.objects.filter(pk=self.step.pk).update(state=Step.State.RUNNING, started_at=timezone.now())

    def progress(self, done: int, total: int) -> None:
        Step.objects.filter(pk=self.step.pk).update(done=done, total=total)

    def note(self, text: str) -> None:
        Step.objects.filter(pk=self.step.pk).update(detail=text[:2000])

    def finish(self, state: str, detail: str | None = None) -> None:
        changes: dict[str, Any] = {"state": state, "finished_at": timezone.now()}
        if detail is not None:
            changes["detail"] = detail[:2000]
        Step.objects.filter(pk=self.step.pk).update(**changes)


LOST_IN_CUTOVER = (
    "The worker moving it was lost during the cutover; it was rolled back so the VM serves again. "
    "Run it again"
)


def run(relocation_id: int, *, hooks: dict[str, Callable[..., None]] | None = None) -> None:
    """Run the relocation's current attempt, or finish its rollback. `hooks` (tests) inject a
    fault at a precise moment (a cut link, a stopped daemon): by a step's name, before it;
    "copy_chunk" with the bytes copied so far; "cutover_released" once the VM has given up the
    kept address.

    One delivery claims the row (a second does nothing). If an earlier worker was lost, this
    run takes over: finished steps stay finished, a step it was in is run again (each is
    idempotent: the copy resumes), except the cutover, which is rolled back, since the VM may
    be half changed; the rollback puts back exactly what the cutover recorded it changed."""
    if not jobs.claim(RELOCATION_RUN, relocation_id):
        return  # another worker has it, or it ended
    with jobs.Heartbeat.of(RELOCATION_RUN, relocation_id):
        _run(relocation_id, hooks or {})


def _run(relocation_id: int, hooks: dict[str, Callable[..., None]]) -> None:
    relocation = Relocation.objects.select_related("team", "app", "host", "kept_address").get(
        pk=relocation_id
    )
    gateway.vm_forget(endpoint(relocation))  # the VM's key is checked again for every run
    ctx = Context(
        relocation=relocation,
        plan=relocation.plan,
        app=relocation.app,
        host=relocation.host,
        hooks=hooks,
    )
    steps = {s.name: s for s in relocation.steps.filter(attempt=relocation.attempt)}
    rolling_back = steps.get(Step.Name.ROLLBACK)
    if rolling_back is not None:
        # A rollback asked for again (it had not finished), or one a lost worker was in.
        reason = relocation.error.split(". The rollback did not finish:")[0]
        rollback(ctx, reason if reason and reason != jobs.LOST else "rolled back on request")
        return
    cutover = steps.get(Step.Name.CUTOVER)
    if cutover is not None and cutover.state == Step.State.RUNNING:
        StepRecorder(cutover).finish(Step.State.FAILED, "its worker was lost in the middle of it")
        Step.objects.filter(
            relocation=relocation, attempt=relocation.attempt, state=Step.State.PENDING
        ).update(state=Step.State.SKIPPED)
        rollback(ctx, LOST_IN_CUTOVER)
        return
    handlers: dict[str, Callable[[Context, StepRecorder], str]] = {
        Step.Name.COPY: _copy,
        Step.Name.CREATE: _create,
        Step.Name.HEALTH: _health,
        Step.Name.CUTOVER: _cutover,
        Step.Name.VERIFY: _verify,
    }
    failure = ""
    for name in Step.ORDER:
        step = steps.get(name)
        if step is None or step.state == Step.State.DONE:
            continue
        recorder = StepRecorder(step)
        recorder.start()
        try:
            if name in ctx.hooks:
                ctx.hooks[name](ctx)
            detail = handlers[name](ctx, recorder)
        except Exception as exc:  # every failure rolls back; unexpected ones are logged in full
            if not isinstance(exc, (StepFailed, HostError, treecopy.CopyFailed)):
                log.exception("relocation %s: step %s", relocation.pk, name)
            failure = f"{Step.Name(name).label}: {_message(exc)}"
            recorder.finish(Step.State.FAILED, _message(exc))
            break
        recorder.finish(Step.State.DONE, detail)
    if not failure:
        Relocation.objects.filter(pk=relocation.pk).update(
            state=Relocation.State.DONE, finished_at=timezone.now(), error="", updated_at=timezone.now()
        )
        log.info("relocation %s done", relocation)
        return
    Step.objects.filter(relocation=relocation, attempt=relocation.attempt, state=Step.State.PENDING).update(
        state=Step.State.SKIPPED
    )
    rollback(ctx, failure)


def _message(exc: BaseException) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(" ".join(v) for v in exc.message_dict.values())
    if hasattr(exc, "messages"):
        return " ".join(exc.messages)
    return str(exc) or type(exc).__name__


# --- steps ----------------------------------------------------------------------------------------


def _ensure_app(ctx: Context) -> App:
    """The app the VM becomes: made by the first run with no instances, brought in line with the
    plan by later ones (it has no instances between runs, so nothing is recreated)."""
    plan = ctx.plan
    relocation = ctx.relocation
    image = BaseImage.objects.get(pk=plan["base_image"])
    user = relocation.created_by
    if user is None:
        raise StepFailed("The user who registered the VM is gone; register it again.")
    fields = {
        "command": plan["command"],
        "port": plan["port"],
        "env": plan["env"],
        # Sealed in the plan, sealed in the app: the values are never opened here.
        "secrets": plan.get("secrets") or {},
        "base_image": image,
        "memory_mb": plan["memory_mb"],
        "cpus": plan["cpus"],
        "volume_mount": plan["app_dir"],
        "workdir": plan["workdir"],
        "state_paths": plan.get("state_paths") or [],
    }
    # One transaction: a worker killed between making the app and linking it would leave an app
    # the next run cannot claim ("An app named … already exists") and the move could never end.
    with transaction.atomic():
        app = App.objects.filter(pk=relocation.app_id).first() if relocation.app_id else None
        if app is None:
            app = catalog.app_create(
                user=user,
                team=relocation.team,
                slug=plan["app_slug"],
                base_image=image,
                command=plan["command"],
                port=plan["port"],
                env=plan["env"],
                memory_mb=plan["memory_mb"],
                cpus=plan["cpus"],
            )
            if made := ctx.hooks.get("app_made"):
                made(app)
        for name, value in fields.items():
            setattr(app, name, value)
        app.full_clean()
        app.save()
        relocation.app = app
        Relocation.objects.filter(pk=relocation.pk).update(app=app)
    return app


def _copy(ctx: Context, step: StepRecorder) -> str:
    app = ctx.app = _ensure_app(ctx)
    relocation = ctx.relocation
    host = relocation.host
    if host is None or host.state != Host.State.ACTIVE:
        # A later run goes back to the host that has the files already, while it is usable.
        (host,) = placement.place(app, 1)
        relocation.host = host
        Relocation.objects.filter(pk=relocation.pk).update(host=host)
    ctx.host = host
    # The app's first release is the VM's files on this host; hosts that later run the app copy
    # them from here (its other instances, a scale-up).
    release = releases.release_moved_in(app=app, host=host)
    App.objects.filter(pk=app.pk).update(volume_home=host)
    code = app.release_path(host, release.code_number)
    state = ctx.plan.get("state_paths") or []
    step.note(f"to {host.name}:{code}")
    result = treecopy.copy_tree(
        vm=ctx.vm,
        source=ctx.plan["app_dir"],
        host_run=lambda argv, **kw: gateway.run(host, argv, **kw),
        host_endpoint=host.endpoint,
        target=code,
        excludes=[*ctx.plan["exclude"], *state],
        progress=step.progress,
        on_chunk=ctx.hooks.get("copy_chunk"),
    )
    kept = _copy_state(ctx, host, state)
    # The layout (the state paths' mount points) and the mark that says the files are complete.
    volume = app.volume_path(host)
    gateway.volume_extract(host, volume, codefiles.layout_tar(release), timeout=60)
    gateway.volume_write(
        host, volume, codefiles.marker(release.code_number), codefiles.mark_of(release) + "\n"
    )
    resumed = result.files - result.sent_files
    return (
        f"{result.files} files, {_mb(result.size)} to {host.name}:{code} in {result.seconds:.1f} s "
        f"(release 1); sha256 of every file verified"
        + (f"; {resumed} already there from an earlier run" if resumed else "")
        + (f"; {result.removed} stale removed" if result.removed else "")
        + (f"; persistent: {kept}" if kept else "")
    )


def _copy_state(ctx: Context, host: Host, paths: list[str]) -> str:
    """The app's own data on the VM (its persistent paths) into its persistent directory."""
    assert ctx.app is not None
    out = []
    for path in paths:
        source = f"{ctx.plan['app_dir'].rstrip('/')}/{path}"
        there = gateway.vm_run(ctx.vm, ["test", "-d", source], timeout=15)
        if there.exit_code != 0:
            out.append(f"{path} (not on the VM: starts empty)")
            continue
        copied = treecopy.copy_tree(
            vm=ctx.vm,
            source=source,
            host_run=lambda argv, **kw: gateway.run(host, argv, **kw),
            host_endpoint=host.endpoint,
            target=f"{ctx.app.volume_path(host)}/state/{path}",
            excludes=[],
            progress=lambda done, total: None,
        )
        out.append(f"{path} ({copied.files} files)")
    return ", ".join(out)


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def _wait_operation(op: Operation, timeout: float = 180) -> Operation:
    try:
        return executor.run_or_wait(op, timeout)
    except executor.OperationTimeout as exc:
        raise StepFailed(str(exc)) from None


def _create(ctx: Context, step: StepRecorder) -> str:
    assert ctx.app is not None and ctx.host is not None
    user = ctx.relocation.created_by
    op = catalog.app_scale(user=user, app=ctx.app, instances=1, hosts=[ctx.host])
    op = _wait_operation(op)
    instance = ctx.instance
    if (
        op.status != Operation.Status.SUCCEEDED
        or instance is None
        or instance.state != Instance.State.RUNNING
    ):
        why = (
            (instance.last_error if instance is not None else "") or op.error or "the instance did not start"
        )
        raise StepFailed(why)
    return f"{instance.container_name} running on {ctx.host.name} at {_where(instance)}"


def _where(instance: Instance) -> str:
    address, port = health.target(instance)
    return f"{address}:{port}"


def _target(instance: Instance) -> tuple[str, int]:
    address, port = health.target(instance)
    return address, int(port or 0)


def fetch(address: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, str, int]:
    """GET the path; its status, the sha256 of its body and the body's length."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", "User-Agent": "slipway-relocation"})
        response = conn.getresponse()
        digest = hashlib.sha256()
        length = 0
        while chunk := response.read(1 << 16):
            digest.update(chunk)
            length += len(chunk)
            if length > 64 * 1024 * 1024:
                break
        return response.status, digest.hexdigest(), length
    finally:
        conn.close()


def _answers(address: str, port: int, path: str) -> bool:
    try:
        if path:
            return fetch(address, port, path, timeout=2)[0] < 500
        with socket.create_connection((address, port), timeout=2):
            return True
    except (OSError, http.client.HTTPException):
        return False


def _wait_answer(address: str, port: int, path: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _answers(address, port, path):
            return True
        time.sleep(0.05)
    return False


def _vm_service_address(ctx: Context) -> str:
    return ctx.plan["keep_address"] or ctx.relocation.address


def _health(ctx: Context, step: StepRecorder) -> str:
    instance = ctx.instance
    assert instance is not None
    address, port = _target(instance)
    path = ctx.plan["health_path"]
    timeout = settings.RELOCATION_HEALTH_TIMEOUT
    if not _wait_answer(address, port, path, timeout):
        what = f"GET {path}" if path else "a TCP connection"
        raise StepFailed(
            f"{instance.container_name} did not answer {what} on {address}:{port} within {timeout:g} s "
            "(is the port right, and does the app start in the container?)"
        )
    # Before anything changes on the VM: the container must answer as the VM does.
    differs = []
    for item in ctx.plan["verify_paths"]:
        vm = _fetch_or_fail(_vm_service_address(ctx), ctx.vm_port, item, "the VM")
        here = _fetch_or_fail(address, port, item, "the container")
        ctx.expected[item] = vm
        if vm[:2] != here[:2]:
            differs.append(f"GET {item}: VM {vm[0]} ({vm[2]} bytes), container {here[0]} ({here[2]} bytes)")
    if differs:
        raise StepFailed("the container answers differently from the VM: " + "; ".join(differs))
    Relocation.objects.filter(pk=ctx.relocation.pk).update(
        cutover={**ctx.relocation.cutover, "expected": {k: list(v) for k, v in ctx.expected.items()}}
    )
    checked = f"; {len(ctx.expected)} path(s) answer as on the VM" if ctx.expected else ""
    return f"answers on {address}:{port}{checked}"


def _fetch_or_fail(address: str, port: int, path: str, who: str) -> tuple[int, str, int]:
    try:
        return fetch(address, port, path)
    except (OSError, http.client.HTTPException) as exc:
        raise StepFailed(f"{who} did not answer GET {path} on {address}:{port}: {exc}") from exc


def _vm_addresses(ctx: Context) -> dict[str, tuple[str, int, str]]:
    """The VM's IPv4 addresses now: address -> (device, prefix length, MAC)."""
    run = vm_runner(ctx.relocation)
    listed = run(["ip", "-o", "-4", "addr", "show"], timeout=15)
    links = run(["ip", "-o", "link", "show"], timeout=15)
    if listed.exit_code != 0:
        raise StepFailed(f"cannot list the VM's addresses: {listed.stderr.decode(errors='replace')[-200:]}")
    macs: dict[str, str] = {}
    for line in links.stdout.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) > 1 and "link/ether" in parts:
            macs[parts[1].rstrip(":").split("@")[0]] = parts[parts.index("link/ether") + 1]
    out = {}
    for line in listed.stdout.decode(errors="replace").splitlines():
        parts = line.split()
        if "inet" in parts:
            dev = parts[1]
            address, _, prefix = parts[parts.index("inet") + 1].partition("/")
            out[address] = (dev, int(prefix or 32), macs.get(dev, ""))
    return out


def _cutover(ctx: Context, step: StepRecorder) -> str:
    instance = ctx.instance
    assert instance is not None and ctx.app is not None
    plan = ctx.plan
    run = vm_runner(ctx.relocation)
    port = ctx.vm_port
    keep = plan["keep_address"]
    if keep:
        found = _vm_addresses(ctx)
        if keep not in found:
            raise StepFailed(
                f"{keep} is no longer an address of the VM ({', '.join(found) or 'none'}); inspect again"
            )
        dev, prefix, mac = found[keep]
        ctx.save_cutover(dev=dev, prefixlen=prefix, mac=mac)
    started = time.monotonic()
    # From here the VM stops serving: each change is recorded before the next one.
    ctx.save_cutover(service_stopped=True)
    stopped = run(plan["stop_command"], timeout=60)
    if stopped.exit_code != 0:
        raise StepFailed(
            f"stopping the service on the VM ({' '.join(plan['stop_command'])}) failed with exit code "
            f"{stopped.exit_code}: {stopped.stderr.decode(errors='replace').strip()[-300:]}"
        )
    vm_address = _vm_service_address(ctx)
    deadline = time.monotonic() + 15
    while _answers(vm_address, port, ""):
        if time.monotonic() > deadline:
            raise StepFailed(
                f"the VM still answers on {vm_address}:{port} 15 s after its service was stopped"
            )
        time.sleep(0.05)
    if not keep:
        return f"the VM's service stopped; the app serves on {_where(instance)} (a new address: tell its callers)"
    dev, prefix = ctx.relocation.cutover["dev"], ctx.relocation.cutover["prefixlen"]
    # Recorded before it is done, like the stop above: a worker lost right after the change
    # still leaves the rollback knowing to put the address back (adding it again is harmless).
    ctx.save_cutover(address_released=True)
    released = run(["ip", "addr", "del", f"{keep}/{prefix}", "dev", dev], timeout=15)
    if released.exit_code != 0:
        raise StepFailed(
            f"releasing {keep} on the VM failed: {released.stderr.decode(errors='replace').strip()[-300:]}"
        )
    if "cutover_released" in ctx.hooks:
        ctx.hooks["cutover_released"](ctx)
    _give_address_to_app(ctx, instance, keep)
    op = operation_create(
        app=ctx.app,
        kind=Operation.Kind.REDEPLOY,
        user=ctx.relocation.created_by,
        instance=instance,
        summary=f"cut over: {instance.container_name} takes {keep} from VM {ctx.relocation.name}",
    )
    op = _wait_operation(op)
    instance.refresh_from_db()
    if op.status != Operation.Status.SUCCEEDED or instance.state != Instance.State.RUNNING:
        raise StepFailed(
            f"{instance.container_name} did not come up on {keep}: {instance.last_error or op.error}"
        )
    return f"the VM's service stopped and {keep} moved to {instance.container_name} in {time.monotonic() - started:.1f} s"


@transaction.atomic
def _give_address_to_app(ctx: Context, instance: Instance, address: str) -> None:
    kept = ctx.relocation.kept_address
    assert kept is not None and ctx.app is not None
    address_move(allocation=kept, app=ctx.app, slot=instance.slot, why=f"cutover of VM {ctx.relocation.name}")
    Instance.objects.filter(pk=instance.pk).update(address=address)
    # In the same transaction: the rollback gives the address back exactly when it was moved.
    ctx.save_cutover(address_moved=True)


def _verify(ctx: Context, step: StepRecorder) -> str:
    instance = ctx.instance
    assert instance is not None
    address, port = _target(instance)
    if not _wait_answer(address, port, ctx.plan["health_path"], 30):
        raise StepFailed(f"nothing answers on {address}:{port} after the cutover")
    expected = ctx.expected or {
        k: tuple(v) for k, v in (ctx.relocation.cutover.get("expected") or {}).items()
    }
    for item, (status, digest, length) in expected.items():
        got = _fetch_or_fail(address, port, item, "the app")
        if got[:2] != (status, digest):
            raise StepFailed(
                f"GET {item} on {address}:{port} answers {got[0]} with {got[2]} bytes; the VM answered {status} "
                f"with {length} bytes"
            )
    return f"{address}:{port} answers" + (
        f" the same as the VM on {len(expected)} path(s)" if expected else ""
    )


# --- rollback -------------------------------------------------------------------------------------


def rollback(ctx: Context, reason: str) -> None:
    """Put the VM back as it was (address, service) and take the app's instance away; the app
    and its copied files stay, so the next run resumes."""
    relocation = ctx.relocation
    # A rollback tried again (after ops fixed what stopped it) reuses its row.
    step, _ = Step.objects.update_or_create(
        relocation=relocation,
        attempt=relocation.attempt,
        name=Step.Name.ROLLBACK,
        defaults={
            "position": len(Step.ORDER),
            "state": Step.State.PENDING,
            "detail": "",
            "finished_at": None,
        },
    )
    recorder = StepRecorder(step)
    recorder.start()
    done: list[str] = []
    # What keeps the VM from serving again fails the rollback; the app's instance that could not
    # be removed now does not (it is marked removed, and the reconcile finishes it).
    problems: list[str] = []
    notes: list[str] = []
    cut = dict(relocation.cutover)
    keep = ctx.plan.get("keep_address") or ""
    try:
        if cut.get("address_moved") and relocation.kept_address is not None:
            # The address is the VM's again before the container lets go of it.
            address_unassign(
                allocation=relocation.kept_address,
                held_by=f"VM {relocation.name} (moving to Slipway)",
                why=f"rollback of the move of {relocation.name}",
            )
            Instance.objects.filter(app=ctx.app, slot=0).update(address=None)
        app = App.objects.filter(pk=relocation.app_id).first() if relocation.app_id else None
        if app is not None:
            # An operation of the app still under way (the cutover's redeploy, sent again after
            # a lost worker) ends first: run side by side, it could start the instance again
            # after the scale below removed it.
            for op in Operation.objects.filter(app=app).exclude(status__in=Operation.TERMINAL):
                _wait_operation(op)
        if app is not None and app.instance_set.exclude(desired_state=Instance.Desired.REMOVED).exists():
            op = _wait_operation(catalog.app_scale(user=relocation.created_by, app=app, instances=0))
            if op.status != Operation.Status.SUCCEEDED:
                notes.append(f"the instance is marked removed; the reconcile finishes it ({op.error})")
            else:
                done.append("instance removed")
    except Exception as exc:
        log.exception("relocation %s: rollback of the app", relocation.pk)
        notes.append(f"removing the instance failed: {_message(exc)}")
    run = vm_runner(relocation)
    try:
        if cut.get("address_released"):
            back = run(["ip", "addr", "add", f"{keep}/{cut['prefixlen']}", "dev", cut["dev"]], timeout=15)
            err = back.stderr.decode(errors="replace")
            if back.exit_code != 0 and "File exists" not in err:
                problems.append(f"giving {keep} back to the VM failed: {err.strip()[-300:]}")
            else:
                _announce_vm(ctx, keep, cut.get("mac", ""))
                done.append(f"{keep} back on the VM")
        if cut.get("service_stopped"):
            started = run(ctx.plan["start_command"], timeout=60)
            if started.exit_code != 0:
                problems.append(
                    f"starting the service on the VM failed (exit code {started.exit_code}): "
                    f"{started.stderr.decode(errors='replace').strip()[-300:]}"
                )
            else:
                done.append("service started on the VM")
    except HostError as exc:
        problems.append(f"the VM cannot be reached to put it back: {exc}")
    address = _vm_service_address(ctx)
    port = ctx.vm_port
    if port and not problems and not _wait_answer(address, port, ctx.plan.get("health_path", ""), 30):
        problems.append(f"the VM does not answer on {address}:{port} after the rollback")
    if problems:
        recorder.finish(Step.State.FAILED, "; ".join(problems))
        Relocation.objects.filter(pk=relocation.pk).update(
            state=Relocation.State.FAILED,
            error=f"{reason}. The rollback did not finish: {'; '.join(problems)}",
            updated_at=timezone.now(),
        )
        log.error("relocation %s: rollback failed: %s", relocation, problems)
        return
    if not cut.get("service_stopped"):
        done.append("nothing had changed on the VM; it kept serving")
    recorder.finish(Step.State.DONE, "; ".join([", ".join(done), *notes]))
    # Only now is nothing left to put back; a failed rollback keeps the record for its retry.
    Relocation.objects.filter(pk=relocation.pk).update(
        state=Relocation.State.ROLLED_BACK, error=reason, cutover={}, updated_at=timezone.now()
    )


def _announce_vm(ctx: Context, address: str, mac: str) -> None:
    """Neighbours learned the container's MAC for the address; tell them it is the VM's again."""
    if not mac or ctx.app is None or ctx.app.ip_pool is None:
        return
    pool = ctx.app.ip_pool
    for host in pool.hosts.filter(state=Host.State.ACTIVE):
        try:
            gateway.announce_for(host, pool.docker_network, address, mac)
            return
        except HostError as exc:
            log.warning("announcing %s for the VM from %s failed: %s", address, host, exc)
