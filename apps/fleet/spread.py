"""Apps whose instances all sit on one host: placement spreads them, but a drain with one host
left, or a host that was unreachable for a while, stacks them, and taking the host back does
not move anything by itself. Ops see them listed, with where one instance would go, and spread
them with one move each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count

from apps.accounts import permissions
from apps.applications.models import App
from apps.applications.services import instance_move
from apps.hosts.models import Host
from apps.instances import placement
from apps.instances.models import Instance, Operation

SHOWN = 50


@dataclass
class Stacked:
    app: App
    host: Host
    instances: int
    target: Host | None  # where one instance would go; None when no other host can take it
    why: str  # the placement's reason, or why nothing can


def _live() -> Any:
    return Instance.objects.exclude(desired_state=Instance.Desired.REMOVED)


def stacked() -> list[Stacked]:
    """Apps with two or more instances, all of them on one host."""
    rows = (
        _live()
        .values("app")
        .annotate(n=Count("id"), hosts=Count("host", distinct=True))
        .filter(n__gt=1, hosts=1)
        .order_by("app")[:SHOWN]
    )
    counts = {row["app"]: row["n"] for row in rows}
    host_of = dict(_live().filter(app__in=counts).values_list("app", "host").distinct())
    hosts = Host.objects.in_bulk(set(host_of.values()))
    out = []
    for app in App.objects.filter(pk__in=counts).select_related("team").order_by("slug"):
        host = hosts[host_of[app.pk]]
        try:
            [choice] = placement.choose(app, 1, exclude=[host.pk])
        except ValidationError as exc:
            out.append(Stacked(app, host, counts[app.pk], None, " ".join(exc.messages)))
        else:
            out.append(Stacked(app, host, counts[app.pk], choice.host, choice.reason))
    return out


def moving() -> list[Operation]:
    """Moves started here that have not ended: the list follows them."""
    return list(
        Operation.objects.filter(kind=Operation.Kind.MOVE, params__spread=True)
        .exclude(status__in=Operation.TERMINAL)
        .select_related("instance")
        .order_by("created_at")
    )


@transaction.atomic
def respread(*, user: Any, app: App) -> Operation:
    """Move one of the app's instances off the host that has them all (ops only)."""
    permissions.require_ops(user, "spread an app's instances")
    # Locks the app's instances, so two clicks do not move two of them.
    live = list(_live().select_for_update().filter(app=app).select_related("host").order_by("-slot"))
    if len(live) < 2 or len({i.host_id for i in live}) > 1:
        raise ValidationError(f"{app.slug}'s instances are not all on one host (any more): nothing to move.")
    host = live[0].host
    try:
        [choice] = placement.choose(app, 1, exclude=[host.pk])
    except ValidationError as exc:
        raise ValidationError(
            f"No other host can take an instance of {app.slug}: {' '.join(exc.messages)}"
        ) from None
    op = instance_move(user=user, instance=live[0], host=choice.host, reason=choice.reason)
    op.params["spread"] = True
    op.save(update_fields=["params"])
    return op
