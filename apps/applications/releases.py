"""Releases: every change that makes instances anew is a numbered release, deployed rolling.

A release is the app's files (an uploaded archive, kept with its sha256, or files moved from a
VM) and its configuration (base image version, command, port, environment, health check).
Uploading files, editing the configuration, rolling onto another base image version and
rolling back each make a release and deploy it; the deploy (apps.instances.rolling) recreates
the instances a batch at a time behind the health check and puts them all back when one fails.
"""

from __future__ import annotations

import hashlib
import shlex
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.accounts import permissions
from apps.applications import secret_env
from apps.applications.archives import check_archive
from apps.applications.models import App, Release
from apps.audit import services as audit
from apps.hosts.models import Host
from apps.instances.models import Instance, Operation
from apps.instances.services import operation_create

# Operations that recreate an app's instances one after another: one at a time per app.
DEPLOY_KINDS = (
    Operation.Kind.RELEASE,
    Operation.Kind.UPGRADE,
    Operation.Kind.REDEPLOY,
    Operation.Kind.UPLOAD,
)
MAX_NOTE = 500


class DeployRunning(ValidationError):
    """Another deploy of the app has not ended; `operation` is it (callers may wait for it)."""

    def __init__(self, message: str, operation: Operation) -> None:
        super().__init__(message, code="deploy_running")
        self.operation = operation


def deploy_running(app: App) -> Operation | None:
    return (
        Operation.objects.filter(
            app=app, kind__in=DEPLOY_KINDS, status__in=[Operation.Status.QUEUED, Operation.Status.RUNNING]
        )
        .order_by("created_at")
        .first()
    )


def _refuse_if_deploying(app: App) -> None:
    running = deploy_running(app)
    if running is None:
        return
    number = running.params.get("number")
    what = f"Release {number}" if number else running.summary or running.get_kind_display()
    who = f" by {running.requested_by}" if running.requested_by else ""
    since = int((timezone.now() - running.created_at).total_seconds())
    raise DeployRunning(
        f"{what} of {app.slug} is being deployed (operation {running.pk}, {running.get_status_display().lower()}, "
        f"started{who} {since} s ago). Wait for it to finish, then try again: nothing was changed.",
        running,
    )


def config_of(app: App | Release) -> dict[str, Any]:
    return {name: getattr(app, name) for name in Release.CONFIG_FIELDS}


def _batch(value: Any) -> int:
    if value in (None, ""):
        return settings.DEPLOY_BATCH
    try:
        batch = int(value)
    except (TypeError, ValueError):
        raise ValidationError(
            {"batch": f"The batch size is a whole number of instances (got {value!r})."}
        ) from None
    if not 1 <= batch <= settings.MAX_INSTANCES_PER_APP:
        raise ValidationError(
            {
                "batch": f"The batch size is 1 to {settings.MAX_INSTANCES_PER_APP} instances at a time (got {batch})."
            }
        )
    return batch


def _note(note: Any) -> str:
    text = str(note or "").strip()
    if len(text) > MAX_NOTE:
        raise ValidationError({"note": f"A note has at most {MAX_NOTE} characters (got {len(text)})."})
    if "\x00" in text:
        raise ValidationError({"note": "A note cannot hold a NUL character."})
    return text


def _argv_text(argv: list[str]) -> str:
    return shlex.join(argv) if argv else "(the image's default)"


def describe(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed between two configurations, in words. Environment values never appear:
    they may be secrets."""
    out = []
    if old["base_image"] != new["base_image"]:
        out.append(f"base image {old['base_image'].reference} → {new['base_image'].reference}")
    if old["command"] != new["command"]:
        out.append(f"command {_argv_text(old['command'])} → {_argv_text(new['command'])}")
    if old["port"] != new["port"]:
        out.append(f"port {old['port'] or 'default'} → {new['port'] or 'default'}")
    before, after = old["env"] or {}, new["env"] or {}
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    for label, names in (("env added", added), ("env removed", removed), ("env changed", changed)):
        if names:
            out.append(f"{label}: {', '.join(names)}")
    added, removed, changed = secret_env.changed_names(old.get("secrets") or {}, new.get("secrets") or {})
    for label, names in (("secret added", added), ("secret removed", removed), ("secret changed", changed)):
        if names:
            out.append(f"{label}: {', '.join(names)}")
    for field, label in (
        ("workdir", "working directory"),
        ("volume_mount", "files mounted at"),
    ):
        if old[field] != new[field]:
            out.append(f"{label} {old[field] or 'default'} → {new[field] or 'default'}")
    if old["state_paths"] != new["state_paths"]:
        out.append(
            f"persistent paths {', '.join(old['state_paths']) or 'none'} → {', '.join(new['state_paths']) or 'none'}"
        )
    if _health(old) != _health(new):  # a path changed under a TCP check changes nothing said
        out.append(f"health check {_health(old)} → {_health(new)}")
    return out


def _health(config: dict[str, Any]) -> str:
    if config["health_check"] == "http":
        return f"HTTP GET {config['health_path']} within {config['health_timeout']} s"
    if config["health_check"] == "tcp":
        return f"TCP within {config['health_timeout']} s"
    return "none"


def _size(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size} bytes"


@transaction.atomic
def release_create(
    *,
    user: Any,
    app: App,
    fileobj: IO[bytes] | None = None,
    size: int = 0,
    config: dict[str, Any] | None = None,
    restore: Release | None = None,
    moved_to: Host | None = None,
    note: Any = "",
    batch: Any = None,
    check: bool = True,
    audited: bool = True,
) -> tuple[Release, Operation | None]:
    """Make the app's next release and deploy it (None when the app has no instances to deploy
    it to: new ones start on it). Its files are `fileobj` (an archive), or the files of the
    release `restore`d, or files moved from a VM onto `moved_to`, or else the files of the release
    the app runs. `config`: fields that change. `check`: refuse while another deploy runs."""
    permissions.require_member(user, app.team)
    # The app's row only: PostgreSQL locks no row of a join's nullable side (the release).
    app = (
        App.objects.select_for_update(of=("self",))
        .select_related("base_image", "release__base_image")
        .get(pk=app.pk)
    )
    if check:
        _refuse_if_deploying(app)
    text = _note(note)
    size_of_batch = _batch(batch)
    if restore is not None and restore.app_id != app.pk:
        raise ValidationError(
            {"release": f"Release {restore.number} belongs to {restore.app.slug}, not {app.slug}."}
        )
    current = app.release
    old = config_of(current) if current is not None else config_of(app)
    new = dict(config_of(restore) if restore is not None else old)
    unknown = set(config or {}) - set(Release.CONFIG_FIELDS)
    if unknown:
        raise ValidationError(f"A release does not hold {', '.join(sorted(unknown))}.")
    new.update(config or {})
    # The app's own validation of the fields (and the row keeps what the release holds).
    for name, value in new.items():
        setattr(app, name, value)
    app.full_clean(exclude=["release"])
    number = (app.releases.aggregate(top=Max("number"))["top"] or 0) + 1
    release = Release(app=app, number=number, note=text, created_by=user if _authed(user) else None, **new)
    changes = describe(old, new)
    if fileobj is not None:
        files = check_archive(fileobj, size, state_paths=new["state_paths"])
        digest = hashlib.sha256()
        for chunk in iter(lambda: fileobj.read(1 << 20), b""):
            digest.update(chunk)
        fileobj.seek(0)
        release.source = Release.Source.ARCHIVE
        release.code_number = number
        release.sha256, release.size, release.files = digest.hexdigest(), size, files
        release.archive.save(f"{number}.tar", File(fileobj), save=False)
        counted = f"{files} file" + ("" if files == 1 else "s")
        changes.insert(0, f"files: {counted}, {_size(size)} (sha256 {release.sha256[:12]})")
    elif moved_to is not None:
        release.source = Release.Source.HOST
        release.code_number = number
        release.home = moved_to
        changes.insert(0, f"files moved from a VM onto {moved_to.name}")
    else:
        code = restore or current
        if code is not None:
            release.source = code.source
            release.code_number = code.code_number
            release.sha256, release.size, release.files = code.sha256, code.size, code.files
            release.home = code.home
            if restore is not None:
                release.restored_from = restore.number
                changes.insert(0, f"rollback to release {restore.number}")
        else:
            release.source = Release.Source.EMPTY
            release.code_number = number
            changes.insert(0, "no files yet")
    release.changes = changes or ["nothing changed (deployed again)"]
    release.save()
    app.release = release
    app.save()
    operation = _deploy(user=user, app=app, release=release, previous=current, batch=size_of_batch)
    if operation is None and audited:
        # No instance to deploy to: no operation says so, the audit row does.
        audit.record(
            "app.release",
            f"release {release.number} of {app.slug}: {'; '.join(release.changes)}",
            actor=user,
            obj=app,
            data={"release": release.number},
        )
    return release, operation


def _authed(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False))


def _deploy(
    *, user: Any, app: App, release: Release, previous: Release | None, batch: int
) -> Operation | None:
    live = list(
        app.instance_set.exclude(desired_state=Instance.Desired.REMOVED)
        .select_related("host", "release")
        .order_by("slot")
    )
    if not live:
        return None
    rows = []
    for instance in live:
        was = instance.release or previous
        rows.append(
            {
                "id": instance.pk,
                "name": instance.container_name,
                "host": instance.host.name,
                "from": was.number if was is not None else None,
                "from_id": was.pk if was is not None else None,
                "state": "waiting",
                "detail": "",
            }
        )
    return operation_create(
        app=app,
        kind=Operation.Kind.RELEASE,
        user=user,
        params={
            "release": release.pk,
            "number": release.number,
            "from": previous.pk if previous is not None else None,
            "from_number": previous.number if previous is not None else None,
            "batch": batch,
            "instances": rows,
        },
        summary=f"deploy release {release.number}: {'; '.join(release.changes)}",
    )


def release_rollback(
    *, user: Any, app: App, number: Any = None, note: Any = "", batch: Any = None
) -> tuple[Release, Operation | None]:
    """Deploy an earlier kept release again, as a new release that says which it restored; by
    default the kept release before the one the app runs. Its files are on the hosts already."""
    permissions.require_member(user, app.team)
    app = App.objects.select_related("release").get(pk=app.pk)  # what it runs now, not when it was read
    current = app.release
    kept = app.releases.filter(pruned_at=None)
    if number in (None, ""):
        below = kept.filter(number__lt=current.number) if current is not None else kept.none()
        target = below.order_by("-number").first()
        if target is None:
            raise ValidationError({"release": f"{app.slug} has no earlier kept release to roll back to."})
    else:
        try:
            wanted = int(number)
        except (TypeError, ValueError):
            raise ValidationError(
                {"release": f"A release is given by its number (got {number!r})."}
            ) from None
        target = app.releases.filter(number=wanted).first()
        if target is None:
            top = app.releases.aggregate(top=Max("number"))["top"]
            raise ValidationError(
                {"release": f"{app.slug} has no release {wanted} (its releases are numbered 1 to {top})."}
            )
        if target.pruned_at is not None:
            numbers = ", ".join(str(n) for n in kept.order_by("number").values_list("number", flat=True))
            raise ValidationError(
                {
                    "release": f"Release {wanted} was pruned (its files are gone; retention keeps the newest "
                    f"{settings.RELEASES_KEEP}). Kept releases: {numbers}."
                }
            )
        if current is not None and target.pk == current.pk:
            raise ValidationError({"release": f"Release {wanted} is the one {app.slug} runs."})
    return release_create(
        user=user, app=app, restore=target, note=note or f"rollback to release {target.number}", batch=batch
    )


@transaction.atomic
def release_moved_in(*, app: App, host: Host) -> Release:
    """The app's first release takes the files a VM move put on `host`, and the app's
    configuration as the move's plan made it. Only while no instance ever ran it."""
    release = Release.objects.select_for_update().get(app=app, number=1)
    if Instance.objects.filter(app=app).exists() and release.source == Release.Source.HOST:
        return release  # a later run of the same move: already so
    if Instance.objects.filter(app=app).exists():
        raise ValidationError(f"{app.slug} runs instances already; its first release cannot change.")
    app = App.objects.get(pk=app.pk)
    for name, value in config_of(app).items():
        setattr(release, name, value)
    release.source = Release.Source.HOST
    release.code_number = 1
    release.home = host
    release.changes = [f"files moved from a VM onto {host.name}"]
    release.save()
    return release
