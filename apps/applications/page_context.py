"""What the app page's live parts show: the instances (Overview) and the releases (Releases
tab). Each tab's polled part brings the other's along while a deploy runs."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from apps.applications import releases, selectors
from apps.applications.forms import ReleaseForm
from apps.applications.models import App
from apps.instances.models import Instance, Operation

SHOWN = 30


def instances_context(app: App) -> dict[str, Any]:
    instances = list(
        app.instance_set.select_related("host", "app__base_image", "image", "release").order_by("slot")
    )
    active_ops = app.operations.filter(
        status__in=[Operation.Status.QUEUED, Operation.Status.RUNNING]
    ).exists()
    settled = not active_ops and all(i.settled for i in instances)
    by_slot = {i.slot: i for i in instances}
    operations = list(app.operations.select_related("requested_by")[:10])
    # The latest rolling upgrade stays in view while it runs and after it stopped on a failure.
    roll = next(
        (op for op in operations if op.kind in (Operation.Kind.UPGRADE, Operation.Kind.RELEASE)), None
    )
    if roll is not None and roll.status == Operation.Status.SUCCEEDED and operations[0] != roll:
        roll = None
    return {
        "app": app,
        "instances": instances,
        "addresses": [(a, by_slot.get(a.slot or 0)) for a in app.addresses.order_by("slot")],
        "settled": settled,
        "running": sum(1 for i in instances if i.state == Instance.State.RUNNING),
        "operations": operations,
        "roll": roll,
        # The base image line above the instances follows a roll too (swapped out of band).
        "newer_image": selectors.newer_recommended(app),
        "versions": selectors.versions_to_roll_onto(app),
    }


def releases_context(app: App) -> dict[str, Any]:
    listed = list(selectors.release_list(app)[:SHOWN])
    deploying = releases.deploy_running(app)
    # The latest deploy stays in view while it runs and after it stopped on a failure.
    last = app.operations.filter(kind=Operation.Kind.RELEASE).select_related("requested_by").first()
    if last is not None and last.status == Operation.Status.SUCCEEDED and deploying is None:
        newer = app.operations.filter(created_at__gt=last.created_at).exists()
        last = None if newer else last
    return {
        "app": app,
        "releases": listed,
        "total": app.releases.count(),
        "deploying": deploying,
        "deploy": last,
        "release_form": ReleaseForm(),
        "keep": settings.RELEASES_KEEP,
        "code_mount": app.volume_mount or settings.APP_VOLUME_MOUNT,
        "state_mount": settings.APP_STATE_MOUNT,
    }
