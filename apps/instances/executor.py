"""Carry out an Operation: claim it, converge the instances it concerns, record the outcome.

Docker calls run in a small thread pool (one app's instances sit on several hosts); the
database is written only from the calling thread.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from apps.applications.models import App, RetainedVolume, VolumeUpload
from apps.hosts import gateway
from apps.hosts.models import Host
from apps.hosts.transport import (
    SPEC_LABEL,
    AddressInUse,
    ContainerFailed,
    ContainerState,
    HostError,
    HostUnreachable,
)
from apps.instances import codefiles, health, volumes
from apps.instances.address_probe import PROBE_ROUNDS, AddressGate
from apps.instances.models import Instance, Operation
from apps.instances.signals import container_replaced
from apps.instances.spec import instance_spec
from apps.network.services import address_release
from portal import jobs

log = logging.getLogger(__name__)


class OperationFailed(Exception):
    """Expected failure; the message is safe to show to users."""


@dataclass
class Outcome:
    instance: Instance
    state: ContainerState | None = None
    removed: bool = False
    error: str = ""
    # A host problem (unreachable, daemon down) the reconcile retries; otherwise the app's
    # own failure, which waits for the owner to change something.
    transient: bool = False
    # The new static address turned out to be in use before the container started.
    taken: AddressInUse | None = None
    # The host did not answer at all (link down, sshd or dockerd gone): it is marked for ops.
    unreachable: bool = False
    # A container made from an older spec that this run replaced: (its id, its last lines).
    replaced: Retired | None = None


@dataclass(frozen=True)
class Retired:
    """A container about to go, and its last lines (read with Docker's times), or why they
    could not be read: it goes all the same."""

    container_id: str
    frames: list[tuple[str, bytes]]
    error: str = ""

    @classmethod
    def read(cls, host: Host, container_id: str) -> Retired:
        query = gateway.LogQuery(tail=settings.EVENTS_KEEP_LINES, timestamps=True)
        if not query.tail:
            return cls(container_id, [])
        try:
            return cls(container_id, list(gateway.container_logs(host, container_id, query)))
        except HostError as exc:
            return cls(container_id, [], error=str(exc))

    def announce(self, instance: Instance, host: Host, reason: str) -> None:
        container_replaced.send(
            sender=Instance,
            instance=instance,
            host=host,
            container_id=self.container_id,
            frames=self.frames,
            error=self.error,
            reason=reason,
        )


def run_operation(op_id: int) -> None:
    now = timezone.now()
    claimed = Operation.objects.filter(pk=op_id, status=Operation.Status.QUEUED).update(
        status=Operation.Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        attempts=F("attempts") + 1,
        error="",
    )
    if not claimed:
        return  # another worker has it, or it already ran
    op = Operation.objects.select_related("app__base_image", "instance").get(pk=op_id)
    try:
        with jobs.Heartbeat(
            Operation.objects.filter(pk=op.pk, status=Operation.Status.RUNNING), f"operation-{op.pk}"
        ):
            HANDLERS[op.kind](op)
    except OperationFailed as exc:
        _finish(op, Operation.Status.FAILED, str(exc))
    except Exception:
        log.exception("operation %s failed unexpectedly", op.pk)
        _finish(
            op,
            Operation.Status.FAILED,
            f"Something went wrong on our side (ref {op.pk}); ops can see the log.",
        )
    else:
        _finish(op, Operation.Status.SUCCEEDED)


class OperationTimeout(Exception):
    """An operation did not end within the time a caller would wait for it."""


def run_or_wait(op: Operation, timeout: float) -> Operation:
    """The operation once it has ended: run here whenever it waits in the queue (at first, or
    again after the reconcile sent a lost worker's run back), else waited for while whoever
    claimed it runs it. Long work built on operations (a drain's moves, a VM move's steps)
    uses this. OperationTimeout past `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if op.status == Operation.Status.QUEUED:
            run_operation(op.pk)
        op.refresh_from_db()
        if op.status in Operation.TERMINAL:
            return op
        if time.monotonic() > deadline:
            raise OperationTimeout(f"{op.get_kind_display()} did not finish within {timeout:g} s")
        time.sleep(0.1)


def _finish(op: Operation, status: str, error: str = "") -> None:
    Operation.objects.filter(pk=op.pk).update(status=status, error=error, finished_at=timezone.now())


# --- converging instances -----------------------------------------------------------------------


def _instances(app: App, only: Instance | list[Instance] | None = None) -> list[Instance]:
    qs = Instance.objects.filter(app=app).select_related(
        "app__base_image",
        "app__ip_pool",
        "app__release__base_image",
        "host",
        "image",
        "release__base_image",
    )
    if isinstance(only, Instance):
        qs = qs.filter(pk=only.pk)
    elif only is not None:
        qs = qs.filter(pk__in=[i.pk for i in only])
    return list(qs.order_by("slot"))


# `spec` holds the opened secret values (instance_spec): an error report shows no variable of this
# frame, nor of the calls that get the spec (the gateway and the transport below it).
@sensitive_variables()
def _apply(
    instance: Instance, restart: bool, volumes_ready: Callable[[Instance], None], gate: AddressGate
) -> Outcome:
    """Docker work for one instance; runs in a pool thread, touches no database."""
    try:
        if instance.desired_state == Instance.Desired.REMOVED:
            gateway.container_remove(instance.host, instance.container_name)
            return Outcome(instance, removed=True)
        volumes_ready(instance)
        spec = instance_spec(instance)
        if restart and not gate.pending(instance):
            try:
                state = gateway.container_restart(instance.host, instance.container_name, spec.port)
            except HostError:
                pass  # no such container (or it is broken): ensure below makes a fresh one
            else:
                if state.running and state.labels.get(SPEC_LABEL) == spec.digest:
                    return Outcome(instance, state)
        fresh = not instance.container_id and instance.state == Instance.State.PENDING
        retired: list[Retired] = []

        def keep(container_id: str) -> None:
            retired.append(Retired.read(instance.host, container_id))

        state = gateway.container_ensure(
            instance.host, spec, fresh=fresh, before_start=lambda: gate.check(instance), before_replace=keep
        )
        # Announced whenever the row learns of a container: one this call started, or one found
        # running that it did not know (started by a worker killed before it could announce).
        fresh_to_row = state.acted or state.id != instance.container_id
        if spec.ipv4 and state.running and fresh_to_row and state.pid:
            _announcer().submit(_announce, instance, state.pid, spec.ipv4)
        return Outcome(instance, state, replaced=retired[-1] if retired else None)
    except AddressInUse as exc:
        return Outcome(instance, error=str(exc), taken=exc)
    except (ContainerFailed, codefiles.FilesMissing) as exc:
        return Outcome(instance, error=str(exc))
    except HostError as exc:
        return Outcome(instance, error=str(exc), transient=True, unreachable=isinstance(exc, HostUnreachable))


@functools.cache
def _announcer() -> ThreadPoolExecutor:
    # Made on first use, in the process that sends (a worker's pool process, not the parent it
    # was forked from). Its threads outlive the operation: nothing waits for them.
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="announce")


def _announce(instance: Instance, pid: int, address: str) -> None:
    # Best effort, like any gratuitous ARP: the instance runs either way, and neighbours learn
    # the address from its first packet at the latest. So it is sent on the side, and the
    # operation does not wait for the host's answer (a round trip to its agent, ~30 ms).
    try:
        gateway.announce(instance.host, pid, address)
    except HostError as exc:
        log.warning("could not announce %s of %s: %s", address, instance.container_name, exc)


def _mark_unreachable(host: Host, error: str) -> None:
    """Placement stops choosing the host at once; the next successful probe makes it active
    again, and the reconcile then converges what is pending on it. A draining host stays
    draining (its drain waits for it)."""
    Host.objects.filter(pk=host.pk, state=Host.State.ACTIVE).update(
        state=Host.State.UNREACHABLE, last_error=error[:2000], last_checked=timezone.now()
    )


def _record(outcome: Outcome) -> None:
    instance = outcome.instance
    if outcome.removed:
        Instance.objects.filter(pk=instance.pk).delete()
        # The container is gone, so its address is free for others now (never before).
        address_release(app=instance.app, slot=instance.slot, why=f"{instance.container_name} is gone")
        return
    if outcome.unreachable:
        _mark_unreachable(instance.host, outcome.error)
    if outcome.error:
        state = Instance.State.PENDING if outcome.transient else Instance.State.FAILED
        Instance.objects.filter(pk=instance.pk).update(
            state=state, last_error=outcome.error, updated_at=timezone.now()
        )
        return
    assert outcome.state is not None
    state = Instance.State.RUNNING if outcome.state.running else Instance.State.STOPPED
    Instance.objects.filter(pk=instance.pk).update(
        state=state,
        container_id=outcome.state.id,
        host_port=outcome.state.host_port,
        last_error="",
        updated_at=timezone.now(),
    )
    if outcome.replaced is not None:
        outcome.replaced.announce(
            instance, instance.host, "replaced by a new container (its settings changed)"
        )


def converge(
    app: App,
    *,
    only: Instance | list[Instance] | None = None,
    restart: bool = False,
    one_at_a_time: bool = False,
    keep_volumes: bool = False,
) -> list[Outcome]:
    """Make the containers of the app (or of some instances) match the rows; raise if any failed.
    A host the app leaves has its volume listed for ops, unless `keep_volumes` (the caller
    deals with it)."""
    instances = _instances(app, only)
    leaving: dict[int, Host] = {}
    for instance in instances:
        if instance.desired_state == Instance.Desired.REMOVED:
            leaving[instance.host_id] = instance.host
            if instance.state != Instance.State.REMOVING:
                Instance.objects.filter(pk=instance.pk).update(state=Instance.State.REMOVING)
    placed = {i.host_id for i in instances if i.desired_state != Instance.Desired.REMOVED}
    # A host the app left once holds files from then, with the mark that says "copied": they
    # are copied over again, and the host's listing under Retained volumes goes.
    left = RetainedVolume.objects.filter(
        app_slug=app.slug, host__in=placed, reason=RetainedVolume.Reason.LEFT, purged_at=None
    )
    files = volumes.FilesSync(app, stale=set(left.values_list("host_id", flat=True)))
    left.delete()
    # Whether the hosts the app leaves hold its files is asked now, alongside the removals
    # (one SSH round trip each, as long as a removal itself), not after them.
    going = [h for pk, h in leaving.items() if pk not in placed and pk != app.volume_home_id]
    asked = {} if keep_volumes else volumes.ask_volumes(app, going)
    outcomes: list[Outcome] = []
    pending = instances
    # New addresses are checked on the segment while their containers are created; one found in
    # use is swapped for another and that instance goes round again.
    for _ in range(PROBE_ROUNDS):
        gate = AddressGate(pending)
        again: list[Instance] = []
        for outcome in _run(pending, restart, files, gate, one_at_a_time):
            why = gate.settle(outcome.instance, outcome.taken)
            if outcome.taken is not None and not why:
                again.append(outcome.instance)
                continue
            if why:
                outcome = Outcome(outcome.instance, error=why)
            _record(outcome)  # each instance shows up as soon as it is done
            outcomes.append(outcome)
            if one_at_a_time and outcome.error:
                break  # stop the roll; the rest keep serving on the old spec
        pending = again
        if not pending:
            break
    for instance in pending:
        outcome = Outcome(
            instance,
            error=f"No free address found for slot {instance.slot}: the last {PROBE_ROUNDS} tried were all "
            "in use on the network; ask ops to look at the pool.",
        )
        _record(outcome)
        outcomes.append(outcome)
    failed = [o for o in outcomes if o.error]
    if failed:
        details = "; ".join(
            f"{o.instance.container_name} on {o.instance.host.name}: {o.error}" for o in failed
        )
        raise OperationFailed(f"{len(failed)} of {len(instances)} instance(s) failed: {details}")
    if keep_volumes:
        return outcomes
    # The files an instance wrote on a host it left may matter to someone: listed, not removed.
    volumes.volumes_left(app, list(leaving.values()), remove=False, asked=asked)
    return outcomes


def _run(
    instances: list[Instance],
    restart: bool,
    files: volumes.FilesSync,
    gate: AddressGate,
    one_at_a_time: bool,
) -> Iterator[Outcome]:
    """Outcomes as they come: one instance after another, or all at once in a thread pool."""
    if one_at_a_time:
        for instance in instances:
            yield _apply(instance, restart, files.ready, gate)
        return
    workers = max(1, min(settings.OPERATION_PARALLELISM, len(instances)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_apply, instance, restart, files.ready, gate) for instance in instances]
        for future in as_completed(futures):
            yield future.result()


# --- handlers ------------------------------------------------------------------------------------


def require_app(op: Operation) -> App:
    if op.app is None:
        raise OperationFailed("The app no longer exists.")
    return op.app


def _converge_app(op: Operation) -> None:
    converge(require_app(op))


def _reconcile(op: Operation) -> None:
    """The instances the reconcile found needing repair, only those (a row made before the
    reconcile named them: the whole app)."""
    app = require_app(op)
    ids = op.params.get("instances")
    if ids is None:
        converge(app)
        return
    only = list(Instance.objects.filter(app=app, pk__in=ids))
    if only:  # none left: removed meanwhile
        converge(app, only=only)


def _converge_instance(op: Operation) -> None:
    app = require_app(op)
    if op.instance is None:
        if op.kind == Operation.Kind.REMOVE:
            return  # already removed
        raise OperationFailed("The instance no longer exists.")
    converge(app, only=op.instance, restart=op.kind == Operation.Kind.RESTART)


def _move(op: Operation) -> None:
    """Remove the container from the old host, then make it on the new one (same name, slot,
    address): the address is free on the segment again before the new container claims it.

    The app's volume goes with it, host to host, checksummed: copied while the old container
    still serves, then once more after it stopped (only what changed meanwhile), so the new
    container starts on the files the old one left."""
    app = require_app(op)
    if op.instance is None:
        raise OperationFailed("The instance no longer exists.")
    source = Host.objects.filter(pk=op.params.get("from_host")).first()
    target = op.instance.host
    synced = False
    if source is not None and source.pk != target.pk:
        try:
            volumes.volume_sync(app, source, target)
            synced = True
        except HostError as exc:
            # The source may be the reason for the move (unreachable): the target then gets the
            # app's upload or its volume home's files, as any new host would.
            log.warning("move of %s: no copy of the volume from %s: %s", op.instance, source, exc)
            Operation.objects.filter(pk=op.pk).update(
                summary=f"{op.summary}; volume not copied from {source.name} ({exc})"[:300]
            )
    retired = None
    if source is not None and op.instance.container_id:
        retired = Retired.read(source, op.instance.container_id)
    if source is not None:
        try:
            gateway.container_remove(source, op.instance.container_name)
        except HostError as exc:
            raise OperationFailed(
                f"Cannot remove {op.instance.container_name} from {source.name}: {exc}"
            ) from exc
    if synced and source is not None:
        volumes.volume_sync(app, source, target)  # what changed while the old container ran on
        if app.volume_home_id == source.pk:
            App.objects.filter(pk=app.pk).update(volume_home=target)
            app.volume_home = target
    converge(app, only=op.instance)
    if retired is not None and source is not None:
        retired.announce(op.instance, source, f"moved from {source.name} to {target.name}")
    if synced and source is not None:
        volumes.volumes_left(app, [source], remove=True)  # its files went with the instance
    elif source is not None:
        volumes.volumes_left(app, [source], remove=False)
    moved = _instances(app, op.instance)
    if moved and moved[0].desired_state == Instance.Desired.RUNNING:
        # A drain moves the next instance only once this one serves again.
        why = health.wait_healthy(moved[0])
        if why:
            raise OperationFailed(f"Moved to {target.name}, but {why}")


def _redeploy(op: Operation) -> None:
    converge(require_app(op), one_at_a_time=True)


def _deploy_release(op: Operation) -> None:
    from apps.instances import rolling  # it builds on converge here

    rolling.run(op)


def _delete(op: Operation) -> None:
    app = require_app(op)
    hosts = list(Host.objects.filter(Q(instances__app=app) | Q(pk=app.volume_home_id)).distinct())
    converge(app, keep_volumes=True)
    if not Instance.objects.filter(app=app).exists():
        # The volume data stays on the hosts that ran the app, listed for ops to purge.
        for host in hosts:
            RetainedVolume.objects.get_or_create(
                host=host,
                app_slug=app.slug,
                purged_at=None,
                defaults={"path": app.volume_path(host), "team": app.team},
            )
        RetainedVolume.objects.filter(
            app_slug=app.slug, purged_at=None, reason=RetainedVolume.Reason.LEFT
        ).update(reason=RetainedVolume.Reason.DELETED)
        # Addresses reserved for slots that never ran go with the app: released, each a row.
        address_release(app=app, why=f"{app.slug} is deleted")
        app.delete()


def _upload(op: Operation) -> None:
    app = require_app(op)
    upload = VolumeUpload.objects.filter(pk=op.params.get("upload"), app=app).first()
    if upload is None:
        raise OperationFailed("The uploaded tarball is gone.")
    hosts = Host.objects.filter(instances__app=app).distinct()
    errors = []
    for host in hosts:
        try:
            volumes.volume_put(app, host, upload)
        except HostError as exc:
            errors.append(str(exc))
    if errors:
        raise OperationFailed("; ".join(errors))


HANDLERS: dict[str, Callable[[Operation], None]] = {
    Operation.Kind.RELEASE: _deploy_release,
    # Rolls queued by a portal from before releases: recreated one at a time on what the rows say.
    Operation.Kind.UPGRADE: _redeploy,
    Operation.Kind.DEPLOY: _converge_app,
    Operation.Kind.SCALE: _converge_app,
    Operation.Kind.RECONCILE: _reconcile,
    Operation.Kind.START: _converge_instance,
    Operation.Kind.STOP: _converge_instance,
    Operation.Kind.RESTART: _converge_instance,
    Operation.Kind.REMOVE: _converge_instance,
    Operation.Kind.REDEPLOY: _redeploy,
    Operation.Kind.MOVE: _move,
    Operation.Kind.DELETE: _delete,
    Operation.Kind.UPLOAD: _upload,
    # Operation.Kind.RESIZE: registered by the resources feature (apps.resources.apply).
}


def register(kind: str, handler: Callable[[Operation], None]) -> None:
    """A feature above the core adds the handler of its own kind of operation (at start-up, from
    its AppConfig.ready), so the core runs it without importing the feature."""
    HANDLERS[kind] = handler
