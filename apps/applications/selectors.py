"""Permission-filtered reads. A developer or lead sees their teams' apps; ops see all."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from apps.accounts import permissions
from apps.applications.models import App, BaseImage, BuildState, Release
from apps.instances.models import Instance, Operation

# request.user: a User or AnonymousUser (typed loosely: django-stubs narrows lookups to User).
User = Any


def apps_visible_to(user: User) -> QuerySet[App]:
    if not user.is_authenticated:
        return App.objects.none()
    qs = App.objects.all()
    if not permissions.is_ops(user):
        qs = qs.filter(team__memberships__user=user)
    return qs


def app_list(user: User) -> QuerySet[App]:
    """The app list page and API: counts per state in the same query, whatever the number of apps."""
    return (
        apps_visible_to(user)
        .select_related("team", "base_image", "ip_pool", "release")
        .annotate(
            running_count=Count("instance_set", filter=Q(instance_set__state=Instance.State.RUNNING)),
            instance_count=Count(
                "instance_set", filter=~Q(instance_set__desired_state=Instance.Desired.REMOVED)
            ),
            failed_count=Count("instance_set", filter=Q(instance_set__state=Instance.State.FAILED)),
            # Being deleted: the list says so, and follows it until the app is gone.
            deleting=Exists(
                Operation.objects.filter(
                    app=OuterRef("pk"),
                    kind=Operation.Kind.DELETE,
                    status__in=[Operation.Status.QUEUED, Operation.Status.RUNNING],
                )
            ),
        )
        .order_by("slug")
    )


def base_images_for_new_apps() -> QuerySet[BaseImage]:
    return BaseImage.objects.filter(deprecated=False, withdrawn=False, state=BuildState.PUBLISHED)


def versions_to_roll_onto(app: App) -> QuerySet[BaseImage]:
    """Other published, not withdrawn versions of the app's image (deprecated ones included: an
    app may go back to the version it ran)."""
    return BaseImage.objects.filter(
        name=app.base_image.name, withdrawn=False, state=BuildState.PUBLISHED
    ).exclude(pk=app.base_image_id)


def newer_recommended(app: App) -> BaseImage | None:
    """The recommended version of the app's image, if the app is not on it (its page says so)."""
    current = app.base_image
    if current.recommended:
        return None
    return (
        BaseImage.objects.filter(name=current.name, recommended=True, withdrawn=False, deprecated=False)
        .exclude(pk=current.pk)
        .order_by("-created_at")
        .first()
    )


def image_usage() -> QuerySet[BaseImage]:
    """Every base image version with how many apps and live instances still run it."""
    return BaseImage.objects.annotate(
        app_count=Count("apps", distinct=True),
        # Instances by the version they run, which differs from their app's during a roll.
        instance_count=Count(
            "instances",
            filter=~Q(instances__desired_state=Instance.Desired.REMOVED),
            distinct=True,
        ),
    )


def release_list(app: App) -> QuerySet[Release]:
    """The app's releases, newest first, each with `serving`: its instances running now."""
    running = Q(instances__desired_state=Instance.Desired.RUNNING, instances__state=Instance.State.RUNNING)
    return (
        app.releases.select_related("created_by", "base_image", "app")
        .annotate(serving=Count("instances", filter=running))
        .order_by("-number")
    )
