"""The periodic half of the alerts (beat, every ALERT_INTERVAL seconds): conditions that are a
state lasting a while rather than a moment: an instance down, memory near its limit, CPU
throttled, a host unreachable, a resource request waiting; failed operations; and the end of
the one-shot alerts the events raised (an OOM kill, a crash loop). What the hosts report as it
happens (apps.alerts.receivers) does not wait for this."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from apps.alerts import delivery
from apps.alerts.models import Alert, Kind, Rule
from apps.alerts.services import Subject, fire, resolve, rule_for
from apps.events.models import ContainerEvent
from apps.hosts.models import Host
from apps.instances.models import Instance, Operation
from apps.metrics.models import Sample
from apps.metrics.services import SAMPLE_FIELDS, points
from apps.resources.models import ResourceRequest

# The container events that say whether an instance is up: the last one decides.
LIFECYCLE = [
    ContainerEvent.Kind.STARTED,
    ContainerEvent.Kind.RESTARTED,
    ContainerEvent.Kind.DIED,
    ContainerEvent.Kind.STOPPED,
]


@dataclass
class Report:
    fired: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    resolved: int = 0
    resent: int = 0


class _Rules:
    """Rules looked up once per evaluation, per kind and team."""

    def __init__(self) -> None:
        self.cache: dict[tuple[str, int | None], Rule] = {}

    def __call__(self, kind: str, team_id: int | None) -> Rule:
        key = (kind, team_id)
        if key not in self.cache:
            self.cache[key] = rule_for(kind, team_id)
        return self.cache[key]


def evaluate(now: datetime | None = None) -> Report:
    now = now or timezone.now()
    report = Report()
    rules = _Rules()
    for check in (_instances_down, _memory_and_throttling, _hosts, _operations, _requests, _one_shots):
        check(now, rules, report)
    report.resent = delivery.resend_due()
    return report


def _keep_firing(
    kind: str, holding: dict[str, tuple[Subject, str, str]], now: datetime, report: Report, why: str
) -> None:
    """Fire (or keep) every alert of the kind whose condition holds; resolve the others."""
    for subject, summary, detail in holding.values():
        if fire(kind, subject, summary, detail, now) is not None:
            report.fired[kind] += 1
    for alert in Alert.objects.filter(kind=kind, state=Alert.State.FIRING).exclude(key__in=list(holding)):
        if resolve(alert.key, why, now) is not None:
            report.resolved += 1


def _instances_down(now: datetime, rules: _Rules, report: Report) -> None:
    """Wanted running, but failed, stopped, or dead by its last container event, for longer
    than the rule's time. Apps with an operation under way are left to it."""
    busy = Operation.objects.filter(status__in=[Operation.Status.QUEUED, Operation.Status.RUNNING]).values(
        "app_id"
    )
    last = ContainerEvent.objects.filter(
        app=OuterRef("app"), slot=OuterRef("slot"), kind__in=LIFECYCLE
    ).order_by("-time", "-id")
    rows = (
        Instance.objects.filter(desired_state=Instance.Desired.RUNNING)
        .exclude(app_id__in=busy)
        .select_related("app", "host")
        .annotate(last_kind=Subquery(last.values("kind")[:1]), last_time=Subquery(last.values("time")[:1]))
    )
    holding: dict[str, tuple[Subject, str, str]] = {}
    for instance in rows:
        rule = rules(Kind.INSTANCE_DOWN, instance.app.team_id)
        since: datetime | None = None
        how = ""
        if instance.state in (Instance.State.FAILED, Instance.State.STOPPED):
            since, how = instance.updated_at, instance.get_state_display().lower()
        if instance.last_kind in (ContainerEvent.Kind.DIED, ContainerEvent.Kind.STOPPED):  # type: ignore[attr-defined]
            event_time: datetime = instance.last_time  # type: ignore[attr-defined]
            if since is None or event_time < since:
                since, how = event_time, instance.last_kind  # type: ignore[attr-defined]
        if since is None or now - since < timedelta(seconds=rule.for_seconds):
            continue
        subject = Subject.of_instance(Kind.INSTANCE_DOWN, instance)
        seconds = int((now - since).total_seconds())
        detail = instance.last_error or ""
        holding[subject.key] = (subject, f"{instance.container_name} is down ({how}) for {seconds} s", detail)
    _keep_firing(Kind.INSTANCE_DOWN, holding, now, report, "running again")


def _memory_and_throttling(now: datetime, rules: _Rules, report: Report) -> None:
    """From the metrics samples of the longest window any rule asks for; each instance judged by
    its own team's rule: memory working set at or above X % of the limit through the whole
    window, CPU throttled X % of the time or more over it."""
    kinds = (Kind.MEMORY_HIGH, Kind.CPU_THROTTLED)
    longest = max(
        [r.for_seconds for r in Rule.objects.filter(kind__in=kinds, enabled=True)]
        + [rules(k, None).for_seconds for k in kinds]
    )
    start = now - timedelta(seconds=longest + 2 * settings.METRICS_INTERVAL)
    instances = {
        (i.app_id, i.slot): i
        for i in Instance.objects.filter(state=Instance.State.RUNNING).select_related("app", "host")
    }
    rows = (
        Sample.objects.filter(t__gte=start, t__lte=now).order_by("app_id", "slot", "t").values(*SAMPLE_FIELDS)
    )
    memory: dict[str, tuple[Subject, str, str]] = {}
    throttled: dict[str, tuple[Subject, str, str]] = {}
    for key, series in points(rows).items():
        instance = instances.get(key)
        if instance is None or not series:
            continue
        for kind, holding, judge in (
            (Kind.MEMORY_HIGH, memory, _memory_high),
            (Kind.CPU_THROTTLED, throttled, _throttled),
        ):
            rule = rules(kind, instance.app.team_id)
            window = [p for p in series if p.t >= now - timedelta(seconds=rule.for_seconds)]
            covered = sum(p.seconds for p in window)
            # The condition must have been watched for (nearly) the whole time asked for.
            if not rule.enabled or not window or covered < 0.8 * rule.for_seconds:
                continue
            said = judge(window, rule.threshold_pct or 0, instance, rule.for_seconds)
            if said:
                subject = Subject.of_instance(kind, instance)
                holding[subject.key] = (subject, said, "")
    _keep_firing(Kind.MEMORY_HIGH, memory, now, report, "memory back under the threshold")
    _keep_firing(Kind.CPU_THROTTLED, throttled, now, report, "throttling back under the threshold")


def _memory_high(window: list, threshold: int, instance: Instance, seconds: int) -> str:  # type: ignore[type-arg]
    if any(not p.memory_limit for p in window):
        return ""
    lowest = min(100 * p.working_set / p.memory_limit for p in window)
    if lowest < threshold:
        return ""
    return (
        f"{instance.container_name} used at least {lowest:.0f} % of its memory limit "
        f"({instance.memory_mb} MiB) for {seconds // 60} min"
    )


def _throttled(window: list, threshold: int, instance: Instance, seconds: int) -> str:  # type: ignore[type-arg]
    total = sum(p.seconds for p in window)
    share = 100 * sum(p.throttled * p.seconds for p in window) / total if total else 0.0
    if share < threshold:
        return ""
    return (
        f"{instance.container_name} was throttled {share:.0f} % of the time over {seconds // 60} min "
        f"(CPU limit {instance.cpus} CPU)"
    )


def _hosts(now: datetime, rules: _Rules, report: Report) -> None:
    rule = rules(Kind.HOST_UNREACHABLE, None)
    holding: dict[str, tuple[Subject, str, str]] = {}
    for host in Host.objects.filter(state=Host.State.UNREACHABLE):
        since = host.last_seen or host.last_checked or host.created_at
        if now - since < timedelta(seconds=rule.for_seconds):
            continue
        subject = Subject.of_host(Kind.HOST_UNREACHABLE, host)
        holding[subject.key] = (
            subject,
            f"host {host.name} has not answered since {since:%Y-%m-%d %H:%M:%S %Z}",
            host.last_error,
        )
    _keep_firing(Kind.HOST_UNREACHABLE, holding, now, report, "it answers again")


def _operations(now: datetime, rules: _Rules, report: Report) -> None:
    """A failed operation fires once; it resolves when a later one of the same app and kind
    succeeds, or after the rule's time."""
    recent = Operation.objects.filter(
        status=Operation.Status.FAILED,
        finished_at__gte=now - timedelta(seconds=2 * settings.ALERT_INTERVAL + 60),
    ).select_related("app", "instance", "instance__host")
    for op in recent:
        if op.app is None:
            continue
        key = f"{Kind.OPERATION_FAILED}:operation:{op.pk}"
        if Alert.objects.filter(key=key).exists():
            continue
        subject = Subject(
            key, op.instance.container_name if op.instance else op.app.slug, op.app, op.instance
        )
        summary = f"{op.get_kind_display()} of {op.app_slug} failed"
        if fire(Kind.OPERATION_FAILED, subject, summary, op.error[:2000], now) is not None:
            report.fired[Kind.OPERATION_FAILED] += 1
    for alert in Alert.objects.filter(kind=Kind.OPERATION_FAILED, state=Alert.State.FIRING).select_related(
        "app"
    ):
        rule = rules(Kind.OPERATION_FAILED, alert.team_id)
        op_id = int(alert.key.rsplit(":", 1)[1])
        failed = Operation.objects.filter(pk=op_id).first()
        later = (
            failed is not None
            and failed.app_id is not None
            and Operation.objects.filter(
                app_id=failed.app_id,
                kind=failed.kind,
                status=Operation.Status.SUCCEEDED,
                created_at__gt=failed.created_at,
            ).exists()
        )
        if later:
            report.resolved += resolve(alert.key, "a later one succeeded", now) is not None
        elif now - alert.started_at >= timedelta(seconds=rule.for_seconds):
            report.resolved += resolve(alert.key, "no longer recent", now) is not None


def _requests(now: datetime, rules: _Rules, report: Report) -> None:
    holding: dict[str, tuple[Subject, str, str]] = {}
    for request in ResourceRequest.objects.filter(state=ResourceRequest.State.PENDING).select_related("app"):
        rule = rules(Kind.REQUEST_WAITING, request.app.team_id)
        waited = now - request.created_at
        if waited < timedelta(seconds=rule.for_seconds):
            continue
        key = f"{Kind.REQUEST_WAITING}:request:{request.pk}"
        subject = Subject(key, f"request {request.pk} of {request.app.slug}", request.app)
        hours = waited.total_seconds() / 3600
        holding[key] = (
            subject,
            f"{request.app.slug}'s resource request {request.pk} has waited {hours:.1f} h for a lead",
            request.reason[:500],
        )
    _keep_firing(Kind.REQUEST_WAITING, holding, now, report, "decided")


def _one_shots(now: datetime, rules: _Rules, report: Report) -> None:
    """An OOM kill's alert ends after the rule's time without another; a crash loop's once the
    instance has not died for CRASH_LOOP_WINDOW."""
    ends: dict[str, Callable[[Alert, Rule], bool]] = {
        Kind.OOM_KILL: lambda alert, rule: alert.last_seen_at <= now - timedelta(seconds=rule.for_seconds),
        Kind.CRASH_LOOP: lambda alert, rule: (
            not ContainerEvent.objects.filter(
                Q(instance_id=alert.instance_id),
                kind=ContainerEvent.Kind.DIED,
                time__gte=now - timedelta(seconds=settings.CRASH_LOOP_WINDOW),
            ).exists()
        ),
    }
    for kind, ended in ends.items():
        for alert in Alert.objects.filter(kind=kind, state=Alert.State.FIRING):
            if ended(alert, rules(kind, alert.team_id)):
                report.resolved += resolve(alert.key, "quiet since", now) is not None
