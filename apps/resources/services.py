"""Resize an app's instances live: request, decide, apply (the apply runs in the worker).

Policy: a change that keeps the team within its quota and raises each instance by no more than
the team's auto-approve step applies at once; anything else waits for a lead of the app's team.
A lead never decides their own request (another lead or ops must); ops decide any. The decision
is a conditional update of the row, so two approvals at the same moment make one apply.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.accounts import permissions
from apps.applications.models import App
from apps.applications.quota import check_quota
from apps.applications.services import parse_limits
from apps.audit import services as audit
from apps.hosts import gateway
from apps.hosts.models import Host
from apps.hosts.transport import HostError
from apps.instances import placement
from apps.instances.models import Instance, Operation
from apps.instances.services import operation_create
from apps.metrics.models import Sample
from apps.resources.models import ResourceEvent, ResourceRequest

log = logging.getLogger(__name__)
MiB = 1024 * 1024


@dataclass
class InstanceUsage:
    instance: Instance
    working_set_mb: float | None  # None: not known (host silent, no recent sample)
    source: str  # "live" or "sample from <time>"


def _live(app: App) -> list[Instance]:
    return list(
        app.instance_set.exclude(desired_state=Instance.Desired.REMOVED)
        .select_related("host")
        .order_by("slot")
    )


def usage_of(app: App, *, live: bool = True) -> list[InstanceUsage]:
    """Each instance's working set: read now from its host (one agent request per host) or else
    the last sample the metrics sweep stored."""
    instances = _live(app)
    out: dict[int, InstanceUsage] = {}
    if live:
        for host in {i.host for i in instances}:
            try:
                document = gateway.agent(host, "stats", timeout=5, label=f"io.slipway.app={app.slug}")
            except HostError:
                continue
            by_name = {c.get("name"): c for c in document.get("containers", []) if not c.get("error")}
            for instance in instances:
                entry = by_name.get(instance.container_name)
                if instance.host_id == host.pk and entry is not None:
                    out[instance.pk] = InstanceUsage(instance, entry["memory_working_set"] / MiB, "live")
    for instance in instances:
        if instance.pk in out:
            continue
        sample = (
            Sample.objects.filter(app=app, slot=instance.slot)
            .order_by("-t")
            .values("working_set", "t")
            .first()
        )
        if sample is None:
            out[instance.pk] = InstanceUsage(instance, None, "unknown")
        else:
            out[instance.pk] = InstanceUsage(
                instance,
                sample["working_set"] / MiB,
                f"sample from {timezone.localtime(sample['t']):%H:%M:%S %Z}",
            )
    return [out[i.pk] for i in instances]


def host_room(hosts: list[Host]) -> dict[int, tuple[int, Decimal]]:
    """Free memory (MiB) and CPU of each host, after what its instances reserve."""
    rooms = placement.host_rooms(Host.objects.filter(pk__in=[h.pk for h in hosts]))
    return {room.host.pk: (room.free_memory_mb, room.free_cpus) for room in rooms}


def check_change(app: App, memory: int, cpus: Decimal, *, live_usage: bool = True) -> None:
    """Refuse, with the figures, a change the fleet or the team cannot take."""
    instances = _live(app)
    errors: list[str] = []
    if memory < app.memory_mb:
        margin = settings.RESIZE_MEMORY_MARGIN_MB
        for use in usage_of(app, live=live_usage):
            if use.working_set_mb is not None and memory < use.working_set_mb + margin:
                errors.append(
                    f"{memory} MiB is below what {use.instance.container_name} uses now "
                    f"({use.working_set_mb:.0f} MiB working set, {use.source}) plus a margin of {margin} MiB"
                )
    room = host_room(list({i.host for i in instances}))
    per_host: dict[int, int] = {}
    for instance in instances:
        per_host[instance.host_id] = per_host.get(instance.host_id, 0) + 1
    for instance in {i.host_id: i for i in instances}.values():
        host = instance.host
        count = per_host[host.pk]
        free_memory, free_cpus = room.get(host.pk, (0, Decimal(0)))
        grow_memory = (memory - app.memory_mb) * count
        if grow_memory > free_memory:
            errors.append(
                f"{host.name} has {free_memory} MiB free; {count} instance(s) at {memory} MiB need "
                f"{grow_memory} MiB more"
            )
        if host.cpus and cpus > Decimal(str(host.cpus)):
            errors.append(f"{cpus} CPU is more than {host.name}'s {host.cpus} cores")
        elif (cpus - app.cpus) * count > free_cpus:
            errors.append(
                f"{host.name} has {free_cpus} CPU free; {count} instance(s) at {cpus} CPU need "
                f"{(cpus - app.cpus) * count} more"
            )
    if errors:
        raise ValidationError("Cannot resize: " + "; ".join(errors) + ".")
    check_quota(
        app.team,
        add_memory_mb=(memory - app.memory_mb) * app.instances,
        add_cpus=(cpus - app.cpus) * app.instances,
        what=f"resizing {app.slug} to {memory} MiB and {cpus} CPU",
    )


def _within_step(app: App, memory: int, cpus: Decimal) -> bool:
    team = app.team
    return memory - app.memory_mb <= team.auto_approve_memory_mb and cpus - app.cpus <= team.auto_approve_cpus


def _event(request: ResourceRequest, action: str, user: Any = None, detail: str = "") -> None:
    ResourceEvent.objects.create(request=request, user=user, action=action, detail=detail[:2000])
    audit.record(
        f"resize.{action.replace(' ', '-')}",
        f"{action} resize of {request.app.slug} to {request.change_text}"
        + (f": {detail[:200]}" if detail else ""),
        actor=user,
        obj=request,
        team=request.app.team,
    )


@transaction.atomic
def request_create(*, user: Any, app: App, memory_mb: Any, cpus: Any, reason: str) -> ResourceRequest:
    """File a resize for the app. Applied at once when policy allows, else waits for a lead."""
    if not permissions.is_member(user, app.team_id):
        raise PermissionDenied(f"You are not a member of team {app.team.slug}.")
    reason = (reason or "").strip()
    errors: dict[str, list[str]] = {}
    memory, cpu = 0, Decimal(0)
    try:
        # The hosts the app is on are checked below, with the figures of each.
        memory, cpu = parse_limits(memory_mb, cpus, largest=False)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if not reason:
        errors["reason"] = ["Say why the app needs the change (it goes to the lead)."]
    if errors:
        raise ValidationError(errors)
    # Usage is read from the hosts (SSH) before the app's row is locked, so a slow host does
    # not hold up scale and edit of the app meanwhile.
    app = App.objects.select_related("team").get(pk=app.pk)
    if (memory, cpu) != (app.memory_mb, app.cpus):
        check_change(app, memory, cpu)
    app = App.objects.select_for_update().select_related("team").get(pk=app.pk)
    if memory == app.memory_mb and cpu == app.cpus:
        raise ValidationError(
            f"{app.slug} already has {memory} MiB and {cpu} CPU per instance; nothing to change."
        )
    open_request = app.resource_requests.filter(state__in=ResourceRequest.OPEN).first()
    if open_request is not None:
        raise ValidationError(
            f"{app.slug} already has an open request ({open_request.change_text}, {open_request.get_state_display()}); "
            "wait for it, or cancel it first."
        )
    try:
        with transaction.atomic():
            request = ResourceRequest.objects.create(
                app=app,
                requested_by=user,
                reason=reason[:2000],
                old_memory_mb=app.memory_mb,
                old_cpus=app.cpus,
                memory_mb=memory,
                cpus=cpu,
            )
    except IntegrityError:
        raise ValidationError(
            f"{app.slug} already has an open request; wait for it, or cancel it first."
        ) from None
    _event(request, "requested", user, reason)
    if _within_step(app, memory, cpu):
        ResourceRequest.objects.filter(pk=request.pk).update(
            state=ResourceRequest.State.APPROVED, auto_approved=True, decided_at=timezone.now()
        )
        request.refresh_from_db()
        _event(request, "auto-approved", None, "within quota and the team's auto-approve step")
        _start_apply(request, user)
    return request


def can_decide(user: Any, request: ResourceRequest) -> str:
    """'' if the user may decide this request, else why not."""
    if not getattr(user, "is_authenticated", False):
        return "Sign in first."
    if permissions.is_ops(user):
        return ""
    if not permissions.is_lead_of(user, request.app.team_id):
        return f"Only a lead of team {request.app.team.slug} or ops decide resource requests."
    if request.requested_by_id == user.pk:
        return "You filed this request; another lead of the team or ops must decide it."
    return ""


def request_decide(
    *, user: Any, request: ResourceRequest, approve: bool, comment: str = ""
) -> ResourceRequest:
    why = can_decide(user, request)
    if why:
        raise PermissionDenied(why)
    comment = (comment or "").strip()[:2000]
    with transaction.atomic():
        app = App.objects.select_for_update().select_related("team").get(pk=request.app_id)
        request.refresh_from_db()
        if request.state != ResourceRequest.State.PENDING:
            raise ValidationError(_already(request))
        if approve:
            # The fleet and the quota may have changed since the request was filed.
            check_change(app, request.memory_mb, Decimal(request.cpus), live_usage=False)
        state = ResourceRequest.State.APPROVED if approve else ResourceRequest.State.REJECTED
        won = ResourceRequest.objects.filter(pk=request.pk, state=ResourceRequest.State.PENDING).update(
            state=state, decided_by=user, decided_at=timezone.now(), comment=comment
        )
        request.refresh_from_db()
        if not won:
            raise ValidationError(_already(request))
        _event(request, "approved" if approve else "rejected", user, comment)
        if approve:
            _start_apply(request, user)
        transaction.on_commit(lambda: _tell_requester(request))
    return request


def _already(request: ResourceRequest) -> str:
    return (
        f"This request is already {request.get_state_display().lower()}"
        + (f" (by {request.decided_by.username})" if request.decided_by else "")
        + "."
    )


def request_cancel(*, user: Any, request: ResourceRequest) -> ResourceRequest:
    if request.requested_by_id != user.pk and not permissions.is_ops(user):
        raise PermissionDenied("Only who filed the request, or ops, can cancel it.")
    won = ResourceRequest.objects.filter(pk=request.pk, state=ResourceRequest.State.PENDING).update(
        state=ResourceRequest.State.CANCELLED, decided_at=timezone.now()
    )
    request.refresh_from_db()
    if not won:
        raise ValidationError(
            f"Only a waiting request can be cancelled; this one is {request.get_state_display().lower()}."
        )
    _event(request, "cancelled", user)
    return request


def request_retry(*, user: Any, request: ResourceRequest) -> ResourceRequest:
    """Apply again what a request left undone (only the instances not done yet)."""
    if not permissions.is_member(user, request.app.team_id):
        raise PermissionDenied(f"You are not a member of team {request.app.team.slug}.")
    with transaction.atomic():
        # Partial, or approved with its last apply failed outright (say the app's hosts were
        # away): both go round again. The conditional update makes one retry of two.
        stuck = Q(state=ResourceRequest.State.PARTIAL)
        last = (
            Operation.objects.filter(
                app_id=request.app_id, kind=Operation.Kind.RESIZE, params__request=request.pk
            )
            .order_by("-id")
            .first()
        )
        if last is not None and last.status == Operation.Status.FAILED:
            stuck |= Q(state=ResourceRequest.State.APPROVED)
        won = ResourceRequest.objects.filter(stuck, pk=request.pk).update(
            state=ResourceRequest.State.APPROVED
        )
        request.refresh_from_db()
        if not won:
            raise ValidationError(
                "Only a partially applied request, or one whose apply failed, can be retried; "
                f"this one is {request.get_state_display().lower()}."
            )
        _event(request, "retry", user)
        _start_apply(request, user)
    return request


def _start_apply(request: ResourceRequest, user: Any) -> Operation:
    """New instances get the new limits from now on; running ones are updated by the worker."""
    App.objects.filter(pk=request.app_id).update(memory_mb=request.memory_mb, cpus=request.cpus)
    return operation_create(
        app=request.app,
        kind=Operation.Kind.RESIZE,
        user=user,
        params={"request": request.pk},
        summary=f"resize: {request.change_text}",
    )


def _tell_requester(request: ResourceRequest) -> None:
    requester = request.requested_by
    if requester is None or not requester.email:
        return
    verdict = "approved" if request.state != ResourceRequest.State.REJECTED else "rejected"
    who = request.decided_by.username if request.decided_by else "policy"
    body = (
        f"Your resource request for {request.app.slug} ({request.change_text}) was {verdict} by {who}."
        + (f"\n\nComment: {request.comment}" if request.comment else "")
        + (
            "\n\nThe new limits are being applied to every instance, without a restart."
            if verdict == "approved"
            else ""
        )
    )
    try:
        send_mail(
            f"[Slipway] {request.app.slug}: resource request {verdict}",
            body,
            settings.DEFAULT_FROM_EMAIL,
            [requester.email],
        )
    except OSError as exc:  # a mail server being down must not undo the decision
        log.warning("could not mail %s about request %s: %s", requester.email, request.pk, exc)


def pending_for(user: Any) -> Any:
    """Requests waiting for this user's decision (leads: their teams'; ops: all)."""
    qs = ResourceRequest.objects.filter(state=ResourceRequest.State.PENDING).select_related(
        "app__team", "requested_by"
    )
    if permissions.is_ops(user):
        return qs
    return qs.filter(app__team_id__in=permissions.teams_led_by(user)).exclude(requested_by=user)


def visible_to(user: Any) -> Any:
    qs = ResourceRequest.objects.select_related("app__team", "requested_by", "decided_by")
    if permissions.is_ops(user):
        return qs
    return qs.filter(Q(app__team__in=permissions.teams_of(user)))
