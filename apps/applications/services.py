"""App lifecycle: create, change, scale, instance actions, delete, put files in the volume.

Every write validates first, happens in one transaction with its Operation row (the audit
and job record), and sends the work to a worker only after commit.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.accounts import permissions
from apps.accounts.models import Team, slug_validator
from apps.applications import releases, secret_env
from apps.applications.models import App, BaseImage, BuildState, Release, RetainedVolume
from apps.applications.quota import check_quota
from apps.audit import services as audit
from apps.hosts import gateway
from apps.hosts.models import Host
from apps.hosts.transport import HostError
from apps.instances import placement
from apps.instances.models import Instance, Operation
from apps.instances.services import operation_create
from apps.network.services import address_allocate, address_request, default_pool

# Every change of these makes a release, deployed one instance (or batch) at a time behind the
# health check. A release that changes only the health check recreates nothing: the deploy checks.
CONTAINER_FIELDS = ("command", "port", "env", "volume_mount", "workdir", "state_paths")
HEALTH_FIELDS = ("health_check", "health_path", "health_timeout")
# What the columns hold (DecimalField(5, 2); a 32-bit integer), whatever the hosts have.
MAX_CPUS = Decimal("999.99")
MAX_MEMORY_MB = 2**31 - 1
EDITABLE_FIELDS = ("base_image", *CONTAINER_FIELDS, *HEALTH_FIELDS)


def parse_limits(memory_mb: Any, cpus: Any, *, largest: bool = True) -> tuple[int, Decimal]:
    """Per-instance memory (MiB) and CPU (cores) as given by a user, or every reason they are
    not acceptable. `largest`: also refuse more than the largest host has."""
    errors: dict[str, str] = {}
    largest_memory, largest_cpus = placement.fleet_limits() if largest else (0, Decimal(0))
    try:
        memory = int(memory_mb)
    except (TypeError, ValueError):
        errors["memory_mb"] = f"Memory must be a whole number of MiB (got {memory_mb!r})."
        memory = 0
    try:
        cpu = Decimal(str(cpus))
        if not cpu.is_finite():
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        errors["cpus"] = f"CPU must be a number of cores, e.g. 0.5 (got {cpus!r})."
        cpu = Decimal(0)
    if "memory_mb" not in errors:
        if memory > MAX_MEMORY_MB:
            errors["memory_mb"] = f"Memory is at most {MAX_MEMORY_MB} MiB (got {memory_mb})."
        elif memory < settings.MIN_MEMORY_MB:
            errors["memory_mb"] = f"Memory must be at least {settings.MIN_MEMORY_MB} MiB (got {memory})."
        elif largest_memory and memory > largest_memory:
            errors["memory_mb"] = (
                f"Memory {memory} MiB is more than the largest host has ({largest_memory} MiB)."
            )
    if "cpus" not in errors:
        if cpu <= 0:
            errors["cpus"] = f"CPU must be more than 0 cores (got {cpu})."
        elif cpu > MAX_CPUS:
            errors["cpus"] = f"CPU is at most {MAX_CPUS} cores (got {cpus})."
        elif cpu != cpu.quantize(Decimal("0.01")):
            errors["cpus"] = f"CPU has at most two decimals, e.g. 0.25 (got {cpu})."
        elif largest_cpus and cpu > largest_cpus:
            errors["cpus"] = f"CPU {cpu} is more than the largest host's {largest_cpus} cores."
    if errors:
        raise ValidationError(errors)
    return memory, cpu


def _check_image(base_image: BaseImage, *, new: bool) -> None:
    if not base_image.published:
        raise ValidationError(
            {
                "base_image": f"{base_image.reference} is not published ({base_image.get_state_display().lower()}); "
                + _versions_hint(base_image)
            }
        )
    if base_image.withdrawn:
        raise ValidationError(
            {
                "base_image": f"{base_image.reference} is withdrawn and takes no new instances; "
                + _versions_hint(base_image)
            }
        )
    if new and base_image.deprecated:
        raise ValidationError(
            {
                "base_image": f"{base_image.reference} is deprecated and takes no new apps; pick another base image."
            }
        )


def _versions_hint(base_image: BaseImage) -> str:
    usable = BaseImage.objects.filter(
        name=base_image.name, withdrawn=False, deprecated=False, state=BuildState.PUBLISHED
    ).exclude(pk=base_image.pk)
    best = usable.filter(recommended=True).first() or usable.order_by("-created_at").first()
    return f"use {best.reference}." if best else "pick another base image."


def slug_check(slug: str) -> str:
    """The name a new app may take, or a ValidationError on "slug" saying why not (its form, an
    app that has it, a deleted app whose volume data is still kept)."""
    try:
        slug_validator(slug)
    except ValidationError as exc:
        raise ValidationError({"slug": exc.messages}) from None
    if App.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": f"An app named {slug} already exists; pick another name."})
    if RetainedVolume.objects.filter(app_slug=slug, purged_at=None).exists():
        # A new app under this name would find the deleted app's files in its volume.
        raise ValidationError(
            {
                "slug": f"{slug} belonged to a deleted app whose volume data is still kept; pick another name or ask ops to purge it."
            }
        )
    return slug


@transaction.atomic
def app_create(
    *,
    user: Any,
    team: Team,
    slug: str,
    base_image: BaseImage,
    command: list[str] | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    secrets: dict[str, Any] | None = None,
    memory_mb: Any = 64,
    cpus: Any = "0.25",
    instances: int = 0,
    ip_pool: Any = None,
    address: str = "",
    health_check: str = "tcp",
    health_path: str = "/",
    health_timeout: int = 30,
) -> App:
    """Create an app; `address` reserves a specific static IP for its first instance."""
    permissions.require_member(user, team)
    _check_image(base_image, new=True)
    memory, cpu = parse_limits(memory_mb, cpus)
    slug_check(slug)
    app = App(
        slug=slug,
        team=team,
        base_image=base_image,
        command=command or [],
        port=port,
        env=env or {},
        secrets=secret_env.secrets_apply(sealed={}, changes=secrets or {}, env=env or {}),
        memory_mb=memory,
        cpus=cpu,
        instances=0,
        created_by=user,
        ip_pool=ip_pool if ip_pool is not None else default_pool(),
        health_check=health_check,
        health_path=health_path,
        health_timeout=health_timeout,
    )
    app.full_clean(exclude=["release"])
    app.save()
    # Release 1: the configuration, and no files until the first upload.
    releases.release_create(user=user, app=app, note="created", check=False, audited=False)
    audit.record(
        "app.create",
        f"create app {slug} on {base_image.reference}",
        actor=user,
        obj=app,
        data={"env_names": sorted(app.env), "secret_names": sorted(app.secrets)},
    )
    app.refresh_from_db()
    if address:
        address_request(user=user, app=app, address=address, slot=0)
    if instances:
        app_scale(user=user, app=app, instances=instances)
    return app


@transaction.atomic
def app_update(*, user: Any, app: App, note: Any = "", batch: Any = None, **changes: Any) -> App:
    """Change how the app's containers are made: a new release, deployed rolling (one instance or
    batch at a time behind the health check, all put back if one fails)."""
    permissions.require_member(user, app.team)
    unknown = set(changes) - {*EDITABLE_FIELDS, "secrets", "make_secret"}
    if unknown:
        raise ValidationError(
            f"Cannot change {', '.join(sorted(unknown))} here; editable: {', '.join(EDITABLE_FIELDS)}, "
            "secrets, make_secret. Memory and CPU change through a resource request."
        )
    app = App.objects.select_for_update().select_related("base_image").get(pk=app.pk)
    secret_changes = changes.pop("secrets", None)
    make_secret = changes.pop("make_secret", None)
    if secret_changes is not None or make_secret or "env" in changes:
        changes["env"], changes["secrets"] = _env_and_secrets(
            app, changes.get("env", app.env), secret_changes or {}, make_secret or []
        )
    changed = {field: value for field, value in changes.items() if getattr(app, field) != value}
    if not changed:
        return app
    if "base_image" in changed:
        _check_image(changed["base_image"], new=False)
    newly_secret = sorted(set(changed.get("secrets") or {}) - set(app.secrets))
    releases.release_create(user=user, app=app, config=changed, note=note, batch=batch)
    # After the release is made: its changes compare with the release before as it was.
    _seal_in_earlier_releases(app, newly_secret)
    app.refresh_from_db()
    return app


def _env_and_secrets(
    app: App, env: Any, secret_changes: Any, make_secret: Any
) -> tuple[dict[str, str], dict[str, str]]:
    """The app's plain and sealed variables after an edit: `make_secret` names move from the
    plain ones to the secrets with their value; `secret_changes` set (a string) or delete (None)."""
    if not isinstance(make_secret, list) or not all(isinstance(name, str) for name in make_secret):
        raise ValidationError({"make_secret": "A list of names of plain variables to mark secret."})
    if not isinstance(env, dict):
        raise ValidationError({"env": 'Environment must be an object of NAME: "value" pairs.'})
    plain = dict(env)
    moved = {}
    for name in make_secret:
        if name not in plain:
            raise ValidationError(
                {
                    "make_secret": f"{name} is not a plain variable of {app.slug}, so it cannot be marked secret."
                }
            )
        moved[name] = plain.pop(name)
    if moved and isinstance(secret_changes, dict):
        secret_changes = {**moved, **secret_changes}
    return plain, secret_env.secrets_apply(sealed=app.secrets, changes=secret_changes, env=plain)


def _seal_in_earlier_releases(app: App, names: list[str]) -> None:
    """Names that just became secret, sealed in every earlier release that had them plain (each
    with its own value): no row keeps the value in clear, and a rollback brings it back secret."""
    if not names:
        return
    for release in Release.objects.select_for_update().filter(app=app).only("pk", "env", "secrets"):
        plain = {name: release.env[name] for name in names if name in release.env}
        if plain:
            Release.objects.filter(pk=release.pk).update(
                env={name: value for name, value in release.env.items() if name not in plain},
                secrets={
                    **release.secrets,
                    **{name: secret_env.seal(value) for name, value in plain.items()},
                },
            )


@transaction.atomic
def app_upgrade(*, user: Any, app: App, base_image: BaseImage, batch: Any = None) -> Operation | None:
    """Roll the app onto another version of its base image: a release that changes only that,
    deployed rolling behind the health check. None when there is nothing to roll (the app is on
    the version and so are its instances, or it has no instances)."""
    permissions.require_member(user, app.team)
    app = App.objects.select_for_update(of=("self",)).select_related("base_image", "release").get(pk=app.pk)
    _check_image(base_image, new=False)
    live = app.instance_set.exclude(desired_state=Instance.Desired.REMOVED)
    behind = live.exclude(image=base_image).exists() or live.exclude(release=app.release).exists()
    if base_image.pk == app.base_image_id and not behind:
        return None
    if base_image.pk == app.base_image_id:
        # Instances left behind by a stopped roll: the app's release is deployed again.
        return releases.release_create(user=user, app=app, note="deploy again", batch=batch)[1]
    return releases.release_create(user=user, app=app, config={"base_image": base_image}, batch=batch)[1]


def apps_upgrade(
    *, user: Any, target: BaseImage, apps: list[App] | None = None
) -> tuple[list[Operation], list[str]]:
    """Ops: roll many apps onto `target` at once (each app one instance at a time, the apps side
    by side). By default every app on another version of the same image. Returns the upgrades
    started and, per app that was not, why (the others go ahead regardless)."""
    permissions.require_ops(user, "upgrade many apps at once; owners upgrade their own app")
    _check_image(target, new=False)
    if apps is None:
        apps = list(
            App.objects.filter(base_image__name=target.name).exclude(base_image=target).order_by("slug")
        )
    started, refused = [], []
    for app in apps:
        try:
            op = app_upgrade(user=user, app=app, base_image=target)
        except ValidationError as exc:
            refused.append(f"{app.slug}: {' '.join(exc.messages)}")
        else:
            if op is not None:
                started.append(op)
    return started, refused


@transaction.atomic
def app_scale(*, user: Any, app: App, instances: Any, hosts: list[Host] | None = None) -> Operation:
    """Set the desired number of instances; new ones are placed now, so a refusal is immediate.
    `hosts` places the new ones on these hosts instead (a moved VM app goes where its files are)."""
    permissions.require_member(user, app.team)
    try:
        wanted = int(instances)
    except (TypeError, ValueError):
        raise ValidationError(
            {"instances": f"Instances must be a whole number (got {instances!r})."}
        ) from None
    if wanted < 0:
        raise ValidationError({"instances": f"Instances cannot be negative (got {wanted})."})
    if wanted > settings.MAX_INSTANCES_PER_APP:
        raise ValidationError(
            {"instances": f"At most {settings.MAX_INSTANCES_PER_APP} instances per app (got {wanted})."}
        )
    # One scale at a time per app: the row lock orders concurrent requests.
    app = App.objects.select_for_update().get(pk=app.pk)
    live = list(app.instance_set.exclude(desired_state=Instance.Desired.REMOVED).order_by("slot"))
    current = len(live)
    placed: list[dict[str, Any]] = []  # where each new instance went, and why (shown on the operation)
    if wanted > current:
        if app.base_image.withdrawn:
            raise ValidationError(
                {
                    "instances": f"{app.base_image.reference} is withdrawn: it takes no new instances. "
                    f"Move {app.slug} to another version first ({_versions_hint(app.base_image)[:-1]})."
                }
            )
        check_quota(
            app.team,
            add_memory_mb=app.memory_mb * (wanted - current),
            add_cpus=app.cpus * (wanted - current),
            what=f"scaling {app.slug} to {wanted}",
        )
        if hosts is None:
            choices = placement.choose(app, wanted - current)
            hosts = [choice.host for choice in choices]
            reasons = [choice.reason for choice in choices]
        elif len(hosts) != wanted - current:
            raise ValidationError(f"{len(hosts)} hosts given for {wanted - current} new instances.")
        else:
            # The caller chose the hosts (where the app's files are); they must still have room.
            rooms = {room.host.pk: room for room in placement.rooms(app)}
            reasons = []
            for host in hosts:
                room = rooms.get(host.pk)
                if room is None or not room.fits(app.memory_mb, app.cpus):
                    raise ValidationError(
                        f"{host.name} cannot take an instance of {app.slug} now: "
                        + (
                            f"it has {room.free_memory_mb} MiB and {room.free_cpus} CPU free."
                            if room
                            else "it is not active, fails its checks, lacks the image or does not serve the app's pool."
                        )
                    )
                room.add(app.memory_mb, app.cpus)
                reasons.append(f"{room.describe()}: chosen by the caller (where the app's files are)")
        used = set(app.instance_set.values_list("slot", flat=True))
        slot = 0
        for host in hosts:
            while slot in used:
                slot += 1
            used.add(slot)
            allocation = address_allocate(app=app, slot=slot, user=user)
            placed.append({"slot": slot, "host": host.name, "reason": reasons[len(placed)]})
            Instance.objects.create(
                app=app,
                slot=slot,
                host=host,
                memory_mb=app.memory_mb,
                cpus=app.cpus,
                address=allocation.address if allocation else None,
                image=app.base_image,
                release=app.release,
            )
    elif wanted < current:
        # Highest slots go first, so the remaining ones keep their numbers (and later their IPs).
        for instance in live[wanted:]:
            instance.desired_state = Instance.Desired.REMOVED
            instance.save(update_fields=["desired_state", "updated_at"])
    app.instances = wanted
    app.save(update_fields=["instances", "updated_at"])
    return operation_create(
        app=app,
        kind=Operation.Kind.SCALE,
        user=user,
        params={"from": current, "to": wanted, **({"placement": placed} if placed else {})},
        summary=f"scale {current} → {wanted}" + (f" (on {_hosts_counted(placed)})" if placed else ""),
    )


def _hosts_counted(placed: list[dict[str, Any]]) -> str:
    """The hosts placed on, each once: `lab-h1, lab-h2`, or `lab-h1 ×13, lab-h2 ×12` when a host
    takes several (a scale to 100 named every placement)."""
    counts: dict[str, int] = {}
    for p in placed:
        counts[p["host"]] = counts.get(p["host"], 0) + 1
    return ", ".join(f"{host} ×{n}" if n > 1 else host for host, n in counts.items())


ACTIONS = {
    "start": (Operation.Kind.START, Instance.Desired.RUNNING),
    "stop": (Operation.Kind.STOP, Instance.Desired.STOPPED),
    "restart": (Operation.Kind.RESTART, Instance.Desired.RUNNING),
    "remove": (Operation.Kind.REMOVE, Instance.Desired.REMOVED),
}


@transaction.atomic
def instance_action(*, user: Any, instance: Instance, action: str) -> Operation:
    if action not in ACTIONS:
        raise ValidationError(f"Unknown action {action!r}; use one of {', '.join(ACTIONS)}.")
    permissions.require_member(user, instance.app.team)
    app = App.objects.select_for_update().get(pk=instance.app_id)
    instance = Instance.objects.select_for_update().get(pk=instance.pk)
    if instance.desired_state == Instance.Desired.REMOVED:
        raise ValidationError(f"Instance {instance.container_name} is being removed.")
    kind, desired = ACTIONS[action]
    instance.desired_state = desired
    instance.save(update_fields=["desired_state", "updated_at"])
    if action == "remove":
        # Removing one instance lowers the desired count, so the reconcile does not re-create it.
        app.instances = app.instance_set.exclude(desired_state=Instance.Desired.REMOVED).count()
        app.save(update_fields=["instances", "updated_at"])
    return operation_create(
        app=app, kind=kind, user=user, instance=instance, summary=f"{action} {instance.container_name}"
    )


@transaction.atomic
def instance_move(*, user: Any, instance: Instance, host: Any, reason: str = "") -> Operation:
    """Recreate an instance on another host, with the same slot, address, volume path and limits
    (ops only; draining a host builds on this)."""
    permissions.require_ops(user, "move instances between hosts")
    instance = Instance.objects.select_for_update().select_related("app", "host").get(pk=instance.pk)
    if instance.desired_state == Instance.Desired.REMOVED:
        raise ValidationError(f"Instance {instance.container_name} is being removed.")
    if host.pk == instance.host_id:
        raise ValidationError(f"{instance.container_name} already runs on {host.name}.")
    app = instance.app
    if not host.takes_instances:
        raise ValidationError(f"{host.name} takes no instances: it is {host.state} or fails its checks.")
    if not app.base_image.hosts.filter(pk=host.pk).exists():
        raise ValidationError(f"{host.name} does not have the image {app.base_image.reference}.")
    if app.ip_pool_id and not app.ip_pool.hosts.filter(pk=host.pk).exists():  # type: ignore[union-attr]
        raise ValidationError(f"{host.name} does not serve IP pool {app.ip_pool.name}.")  # type: ignore[union-attr]
    source = instance.host
    operation = operation_create(
        app=app,
        kind=Operation.Kind.MOVE,
        user=user,
        instance=instance,
        params={
            "from_host": source.pk,
            "to_host": host.pk,
            **(
                {"placement": [{"slot": instance.slot, "host": host.name, "reason": reason}]}
                if reason
                else {}
            ),
        },
        summary=f"move {instance.container_name} from {source.name} to {host.name}",
    )
    Instance.objects.filter(pk=instance.pk).update(host=host, state=Instance.State.PENDING, container_id="")
    return operation


@transaction.atomic
def app_delete(*, user: Any, app: App) -> Operation:
    """Remove every instance and then the app. Its volume data stays on the hosts until ops purge it."""
    permissions.require_member(user, app.team)
    app = App.objects.select_for_update().get(pk=app.pk)
    app.instance_set.update(desired_state=Instance.Desired.REMOVED)
    app.instances = 0
    app.save(update_fields=["instances", "updated_at"])
    return operation_create(app=app, kind=Operation.Kind.DELETE, user=user, summary=f"delete app {app.slug}")


# --- base images -----------------------------------------------------------------------------------


def base_image_refresh_hosts(*, image: BaseImage) -> list[str]:
    """Ask every host with a confirmed key whether it has the image; record which do."""
    present, errors = [], []
    for host in Host.objects.exclude(host_key=""):
        try:
            if gateway.image_present(host, image.reference):
                present.append(host)
        except HostError as exc:
            errors.append(str(exc))
            if image.hosts.filter(pk=host.pk).exists():
                present.append(host)  # unknown now: keep what we knew
    image.hosts.set(present)
    return errors


def volume_purge(*, volume: RetainedVolume, user: Any = None) -> RetainedVolume:
    """Delete a retained volume directory on its host (ops only, from the admin or host page);
    `user` is who asked, for the audit trail."""
    if volume.purged_at:
        return volume
    root = volume.host.volume_root.rstrip("/")
    expected = f"{root}/{volume.app_slug}"
    # The path is recomputed, never trusted from the row: nothing outside the volume root goes.
    refusal = ""
    if volume.path != expected:
        refusal = f"Refused: {volume.path} is not {expected}."
    elif volume.reason == RetainedVolume.Reason.DELETED and App.objects.filter(slug=volume.app_slug).exists():
        refusal = f"Refused: an app named {volume.app_slug} exists again."
    elif Instance.objects.filter(app__slug=volume.app_slug, host=volume.host).exists():
        refusal = f"Refused: {volume.app_slug} runs on {volume.host.name} again and uses this volume."
    if refusal:
        volume.purge_error = refusal
        volume.save(update_fields=["purge_error"])
        audit.record(
            "volume.purge", f"purge {volume.path} on {volume.host.name}: {refusal}", actor=user, obj=volume
        )
        return volume
    try:
        result = gateway.run(volume.host, ["rm", "-rf", "--one-file-system", "--", expected], timeout=120)
    except HostError as exc:
        volume.purge_error = str(exc)
    else:
        if result.ok:
            volume.purged_at = timezone.now()
            volume.purge_error = ""
        else:
            volume.purge_error = result.stderr.decode(errors="replace")[-500:]
    volume.save(update_fields=["purged_at", "purge_error"])
    audit.record(
        "volume.purge",
        f"purge {volume.path} on {volume.host.name}"
        + (": done" if volume.purged_at else f": failed, {volume.purge_error[:200]}"),
        actor=user,
        obj=volume,
    )
    return volume


@transaction.atomic
def secrets_rotate() -> tuple[int, int, int, dict[str, int]]:
    """Every sealed value of every app and release, and of every other store sealed with the
    same keys (secret_env.sealed_store: the registry password, VM moves' plans, webhooks'
    signing secrets), sealed again
    with the first key. All or nothing: one value no key opens stops it with its name, and
    nothing is written. (apps, releases, their values, {other store: its values})."""
    rows: dict[type[App] | type[Release], int] = {App: 0, Release: 0}
    values = 0
    for model in rows:
        for row in model.objects.select_for_update().only("pk", "secrets").order_by("pk"):
            if row.secrets:
                model.objects.filter(pk=row.pk).update(secrets=secret_env.rotate(row.secrets))
                rows[model] += 1
                values += len(row.secrets)
    others = {name: rotate() for name, rotate in sorted(secret_env.sealed_stores().items())}
    audit.record(
        "secrets.rotate",
        f"sealed {values} secret value(s) of {rows[App]} app(s) and {rows[Release]} release(s) again"
        + "".join(f", {count} of {name}" for name, count in others.items()),
        data={"apps": rows[App], "releases": rows[Release], "values": values, "others": others},
    )
    return rows[App], rows[Release], values, others
