"""Signs that the fleet moved on past the database: it was restored from a backup (docs/backup.md).

Every container carries the id of its instance row and of the release it was made from
(apps.instances.spec). Ids only grow, so a container carrying an id the database has not given
out yet was made after the database's last write. A container under a row's name on another
host than the row's (moved since), or made for another row than the one the database has under
its name (scaled down and up again since), is one the database no longer describes either.

The reconcile reports each sign as a Finding and leaves the app's instances as they are: acting
on an older record would stop, remove or recreate instances that serve. Containers of apps the
database does not know are only read for their stamps (the lab's hosts also run other portals'
containers, and an unknown app cannot be harmed by an older record of it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db.models import Max

from apps.applications.models import App, Release
from apps.hosts.models import Host
from apps.hosts.transport import ContainerState
from apps.instances.models import Finding, Instance
from apps.instances.spec import APP_LABEL, INSTANCE_LABEL, RELEASE_STAMP

_ID = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class Sign:
    """One container the database does not describe, and why: a Finding of `kind`."""

    host: Host
    name: str
    kind: str
    detail: str
    # The app it belongs to, if the database knows the app.
    app_id: int | None


def _stamp(container: ContainerState, label: str) -> int | None:
    value = container.labels.get(label, "")
    return int(value) if _ID.fullmatch(value) else None


def signs(
    listings: list[tuple[Host, list[ContainerState]]], *, left_alone: frozenset[int] | set[int] = frozenset()
) -> list[Sign]:
    """The signs in what the hosts listed (read after the listings, so every row a container
    was made for is already there). Apps in `left_alone` (an operation is working on them: a
    move has its container on the old host for a while) are only checked for ids from after
    the database's last write, which no operation can make."""
    newest_instance = Instance.objects.aggregate(m=Max("pk"))["m"] or 0
    newest_release = Release.objects.aggregate(m=Max("pk"))["m"] or 0
    rows = {i.container_name: i for i in Instance.objects.select_related("app", "host")}
    apps = dict(App.objects.values_list("slug", "pk"))
    found: list[Sign] = []
    for host, containers in listings:
        for container in containers:
            row = rows.get(container.name)
            app_id = row.app_id if row is not None else apps.get(container.labels.get(APP_LABEL, ""))
            if app_id is None:
                continue
            instance_id = _stamp(container, INSTANCE_LABEL)
            release_id = _stamp(container, RELEASE_STAMP)
            why = []
            if instance_id is not None and instance_id > newest_instance:
                why.append(
                    f"made for instance id {instance_id}; the newest the database has is {newest_instance}"
                )
            if release_id is not None and release_id > newest_release:
                why.append(
                    f"made from release id {release_id}; the newest the database has is {newest_release}"
                )
            if row is not None and app_id not in left_alone:
                if row.host_id != host.pk:
                    why.insert(0, f"the database places it on {row.host.name}")
                    found.append(
                        Sign(host, container.name, Finding.Kind.ELSEWHERE, _detail(why, container), app_id)
                    )
                    continue
                if instance_id is not None and instance_id != row.pk and not why:
                    why.append(
                        f"made for instance id {instance_id}; the database has id {row.pk} under this name"
                    )
            if why:
                found.append(
                    Sign(host, container.name, Finding.Kind.NEWER_CONTAINER, _detail(why, container), app_id)
                )
    return found


def _detail(why: list[str], container: ContainerState) -> str:
    return (
        f"Container {container.id[:12]} ({container.status}): {'; '.join(why)}. The database is older than "
        "the fleet (restored from a backup?): the app's instances are left as they are, nothing here is "
        "removed, stopped or re-created."
    )
