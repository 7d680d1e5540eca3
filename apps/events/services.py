"""Container events into rows: what a host's Docker reports (apps.events.watcher reads it) and
what the executor replaces (apps.instances.signals).

Docker says "die" for every end of a container; what ended it is read from the events around
it: a "kill" or "stop" sent through the API just before makes it a stop (the portal's, or
someone's on the host), an "oom" just before makes it an OOM kill, and neither makes it a death
of the app's own. A start soon after a death is Docker's restart policy at work."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from apps.applications.models import App
from apps.console.logs import kept_lines, last_lines
from apps.events.models import ContainerEvent
from apps.hosts.gateway import DockerEvent
from apps.hosts.models import Host
from apps.instances.models import Instance
from apps.instances.spec import APP_LABEL, INSTANCE_LABEL, SLOT_LABEL

log = logging.getLogger(__name__)

# A death this soon after a kill or stop through the API is that stop (Docker's stop waits 10 s
# before it kills); after an "oom" event, it is the OOM kill.
STOP_GRACE_NS = 30 * 1_000_000_000
OOM_GRACE_NS = 10 * 1_000_000_000
# A start this soon after a death of the app's own is Docker's restart policy (its back-off
# grows from 100 ms and is capped at a minute).
RESTART_GRACE_NS = 90 * 1_000_000_000
FORGET_NS = 10 * 60 * 1_000_000_000


def _when(time_ns: int) -> datetime:
    return datetime.fromtimestamp(time_ns / 1e9, tz=UTC)


@dataclass
class _Seen:
    """What the last events said about one container."""

    stopped_ns: int = 0  # a kill or stop through the API
    oom_ns: int = 0
    died_ns: int = 0  # a death of the app's own
    exit_code: int | None = None
    last_ns: int = 0


class Recorder:
    """One host's events into rows, in the order Docker sends them. Holds what it saw of each
    container for a few minutes (a replayed stream builds it again the same way)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.seen: dict[str, _Seen] = {}

    def handle(self, event: DockerEvent) -> ContainerEvent | None:
        seen = self.seen.setdefault(event.container_id, _Seen())
        seen.last_ns = max(seen.last_ns, event.time_ns)
        self._forget(event.time_ns)
        if event.action in ("kill", "stop"):
            seen.stopped_ns = event.time_ns
            return None
        instance = _instance_of(event)
        if event.action == "oom":
            seen.oom_ns = event.time_ns
            return self._record(event, instance, ContainerEvent.Kind.OOM, lines=True, oom=True)
        if event.action == "die":
            if event.time_ns - seen.stopped_ns <= STOP_GRACE_NS:
                code = f" (exit code {event.exit_code})" if event.exit_code is not None else ""
                return self._record(event, instance, ContainerEvent.Kind.STOPPED, detail=f"stopped{code}")
            seen.died_ns, seen.exit_code = event.time_ns, event.exit_code
            oom = 0 <= event.time_ns - seen.oom_ns <= OOM_GRACE_NS
            died = self._record(event, instance, ContainerEvent.Kind.DIED, lines=True, oom=oom)
            if died is not None and instance is not None:
                _crash_loop(died, instance)
            return died
        if event.action == "start":
            restarted = seen.died_ns and event.time_ns - seen.died_ns <= RESTART_GRACE_NS
            # A stop or an OOM kill before this start says nothing of how this run ends.
            seen.died_ns = seen.stopped_ns = seen.oom_ns = 0
            if restarted:
                after = f"after exit code {seen.exit_code}" if seen.exit_code is not None else "after a death"
                return self._record(event, instance, ContainerEvent.Kind.RESTARTED, detail=after)
            return self._record(event, instance, ContainerEvent.Kind.STARTED)
        return None

    def _forget(self, now_ns: int) -> None:
        if len(self.seen) > 1000:
            self.seen = {k: v for k, v in self.seen.items() if now_ns - v.last_ns < FORGET_NS}

    def _record(
        self,
        event: DockerEvent,
        instance: Instance | None,
        kind: str,
        *,
        lines: bool = False,
        oom: bool = False,
        detail: str = "",
    ) -> ContainerEvent | None:
        if instance is None:
            # A container whose row is gone already: the stop of a scale-down or a delete. Kept
            # (lifecycle webhooks tell a load balancer it is gone); anything else is not one of
            # the portal's instances, and the reconcile reports it.
            app = _app_of(event)
            if kind != ContainerEvent.Kind.STOPPED or app is None:
                return None
            return record(
                None,
                self.host,
                app=app,
                slot=int(event.labels[SLOT_LABEL]),
                kind=kind,
                time=_when(event.time_ns),
                container_id=event.container_id,
                container_name=event.name,
                exit_code=event.exit_code,
                detail=detail + ", removed",
            )
        kept: list[list[str]] = []
        if lines:
            # The lines written up to that moment, even when read later (the container has
            # since restarted and written more).
            kept = last_lines(self.host, event.container_id, until=event.time + 1e-6)
        return record(
            instance,
            self.host,
            kind=kind,
            time=_when(event.time_ns),
            container_id=event.container_id,
            container_name=event.name or instance.container_name,
            exit_code=event.exit_code if event.action == "die" else None,
            oom=oom,
            address=instance.address
            if kind in (ContainerEvent.Kind.STARTED, ContainerEvent.Kind.RESTARTED)
            else None,
            detail=detail,
            lines=kept,
        )


def _instance_of(event: DockerEvent) -> Instance | None:
    labels = event.labels
    rows = Instance.objects.select_related("app", "host")
    if re.fullmatch(r"[0-9]{1,18}", labels.get(INSTANCE_LABEL, "")):
        found = rows.filter(pk=int(labels[INSTANCE_LABEL])).first()
        if found is not None:
            return found
    if labels.get(APP_LABEL) and re.fullmatch(r"[0-9]{1,9}", labels.get(SLOT_LABEL, "")):
        return rows.filter(app__slug=labels[APP_LABEL], slot=int(labels[SLOT_LABEL])).first()
    return None


def _app_of(event: DockerEvent) -> App | None:
    slug, slot = event.labels.get(APP_LABEL, ""), event.labels.get(SLOT_LABEL, "")
    if not slug or not re.fullmatch(r"[0-9]{1,9}", slot):
        return None
    return App.objects.filter(slug=slug).first()


def record(
    instance: Instance | None, host: Host, *, app: App | None = None, slot: int | None = None, **fields: Any
) -> ContainerEvent | None:
    """One row (about the instance, or about an app's slot whose row is gone); None if it was
    recorded already (a replayed event)."""
    app = instance.app if instance is not None else app
    slot = instance.slot if instance is not None else slot
    assert app is not None and slot is not None
    try:
        with transaction.atomic():
            return ContainerEvent.objects.create(
                app=app,
                app_slug=app.slug,
                instance=instance,
                slot=slot,
                host=host,
                host_name=host.name,
                **fields,
            )
    except IntegrityError:
        return None


def _crash_loop(died: ContainerEvent, instance: Instance) -> None:
    """CRASH_LOOP_DEATHS deaths of the instance within CRASH_LOOP_WINDOW seconds are a crash
    loop, said once per window."""
    start = died.time - timedelta(seconds=settings.CRASH_LOOP_WINDOW)
    recent = ContainerEvent.objects.filter(instance=instance, time__gt=start, time__lte=died.time)
    deaths = recent.filter(kind=ContainerEvent.Kind.DIED).count()
    if deaths < settings.CRASH_LOOP_DEATHS or recent.filter(kind=ContainerEvent.Kind.CRASH_LOOP).exists():
        return
    code = f"; last exit code {died.exit_code}" if died.exit_code is not None else ""
    record(
        instance,
        died.host or instance.host,
        kind=ContainerEvent.Kind.CRASH_LOOP,
        time=died.time,
        container_id=died.container_id,
        container_name=died.container_name,
        exit_code=died.exit_code,
        oom=died.oom,
        detail=f"died {deaths} times within {settings.CRASH_LOOP_WINDOW} s{code}",
    )


def replaced(
    instance: Instance,
    host: Host,
    container_id: str,
    frames: list[tuple[str, bytes]],
    error: str,
    reason: str,
) -> ContainerEvent | None:
    """A container the portal replaced, with its last lines: what `--previous` shows."""
    lines = kept_lines(frames)
    if error:
        lines.append(["stderr", "", f"[slipway: the last lines could not be read: {error}]"])
    return record(
        instance,
        host,
        kind=ContainerEvent.Kind.REPLACED,
        time=datetime.now(tz=UTC),
        container_id=container_id,
        container_name=instance.container_name,
        detail=reason,
        lines=lines,
    )


def prune(now: datetime | None = None) -> int:
    """Events older than EVENTS_RETENTION_DAYS go (their kept lines with them)."""
    cutoff = (now or datetime.now(tz=UTC)) - timedelta(days=settings.EVENTS_RETENTION_DAYS)
    deleted, _ = ContainerEvent.objects.filter(time__lt=cutoff).delete()
    return deleted
