"""Which releases keep their files, and removing the files of the others.

Kept: the newest RELEASES_KEEP releases of the app, the one it runs, the one before that, and
any an instance still runs. The others are marked pruned (no deploy or rollback to them); their
files go from the portal's storage and from the hosts unless a kept release uses them (a
rollback or a configuration change reuses the files of an earlier release).
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.applications.models import App, Release
from apps.audit import services as audit
from apps.hosts.models import Host
from apps.hosts.transport import HostError
from apps.instances import codefiles
from apps.instances.models import Instance

log = logging.getLogger(__name__)


def kept_numbers(app: App) -> set[int]:
    numbers = list(app.releases.filter(pruned_at=None).order_by("-number").values_list("number", flat=True))
    keep = set(numbers[: settings.RELEASES_KEEP])
    # Read now: the caller's row may be from before the deploy that changed it.
    current = App.objects.filter(pk=app.pk).values_list("release__number", flat=True).first()
    if current is not None:
        keep.add(current)
        before = [n for n in numbers if n < current]
        if before:
            keep.add(before[0])
    keep |= set(
        Instance.objects.filter(app=app, release__isnull=False).values_list("release__number", flat=True)
    )
    return keep


def prune(app: App) -> list[int]:
    """Prune what retention no longer keeps; the release numbers pruned."""
    app = App.objects.get(pk=app.pk)
    keep = kept_numbers(app)
    doomed = list(app.releases.filter(pruned_at=None).exclude(number__in=keep))
    if not doomed:
        return []
    needed = set(app.releases.filter(number__in=keep).values_list("code_number", flat=True))
    files_go = [r for r in doomed if r.code_number == r.number and r.number not in needed]
    pruned = sorted(r.number for r in doomed)
    with transaction.atomic():
        Release.objects.filter(pk__in=[r.pk for r in doomed]).update(pruned_at=timezone.now())
        # One row for the prune (by the portal): which releases can no longer be deployed.
        audit.record(
            "release.prune",
            f"prune release(s) {', '.join(map(str, pruned))} of {app.slug} (retention keeps "
            f"{', '.join(map(str, sorted(keep))) or 'none'})",
            obj=app,
            data={
                "pruned": pruned,
                "kept": sorted(keep),
                "files_removed": sorted(r.number for r in files_go),
            },
        )
    for release in files_go:
        if release.archive:
            release.archive.delete(save=False)
            Release.objects.filter(pk=release.pk).update(archive="")
    numbers = sorted(r.number for r in files_go)
    if numbers:
        hosts = Host.objects.filter(
            Q(instances__app=app) | Q(pk__in=[r.home_id for r in app.releases.all() if r.home_id])
        ).distinct()
        for host in hosts:
            if Instance.objects.filter(app=app, host=host, release__source=Release.Source.VOLUME).exists():
                # Its volume is bound read-write into a container from before releases, which
                # may have put links there: nothing is removed while one runs.
                continue
            try:
                codefiles.prune(app, host, numbers)
            except HostError as exc:
                log.warning("releases %s of %s stay on %s: %s", numbers, app.slug, host.name, exc)
    log.info("pruned releases %s of %s", [r.number for r in doomed], app.slug)
    return [r.number for r in doomed]
