"""Rules, and alerts raised, repeated and resolved by them; who hears of it and how.

An alert is one row per condition while it lasts (its key: "crash_loop:instance:12"). `fire`
makes it or notes that it still holds; it is said when it starts and again at most every
repeat_minutes while it lasts; `resolve` ends it and says so. Saying it means: a notification
for each person concerned (the app's team; ops for hosts), an email to those with an address
when the rule asks for it, and a delivery to each webhook that wants alerts (the team's and
ops')."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.accounts import permissions
from apps.accounts.models import Team
from apps.alerts import delivery, urlcheck
from apps.alerts.models import (
    DEFAULTS,
    OPS_ONLY,
    WITH_THRESHOLD,
    Alert,
    Delivery,
    Kind,
    Notification,
    Rule,
    Webhook,
)
from apps.applications import secret_env
from apps.applications.models import App
from apps.audit import services as audit
from apps.hosts.models import Host
from apps.instances.models import Instance

log = logging.getLogger(__name__)


# --- rules --------------------------------------------------------------------------------


def default_rule(kind: str) -> Rule:
    threshold, for_seconds, repeat = DEFAULTS[kind]
    rule, _ = Rule.objects.get_or_create(
        team=None,
        kind=kind,
        defaults={"threshold_pct": threshold, "for_seconds": for_seconds, "repeat_minutes": repeat},
    )
    return rule


def rule_for(kind: str, team: Team | int | None) -> Rule:
    """The team's own rule for the kind, or ops' default."""
    team_id = team.pk if isinstance(team, Team) else team
    if team_id is not None and kind not in OPS_ONLY:
        own = Rule.objects.filter(team_id=team_id, kind=kind).first()
        if own is not None:
            return own
    return default_rule(kind)


def rules_for(team: Team | None) -> list[Rule]:
    """Every kind's rule in force for a team (or ops' defaults): unsaved team rows are not made."""
    return [rule_for(kind, team) for kind in Kind.values if team is None or kind not in OPS_ONLY]


EDITABLE = (
    "enabled",
    "threshold_pct",
    "for_seconds",
    "repeat_minutes",
    "notify_portal",
    "notify_email",
    "notify_webhooks",
)


def rule_save(*, user: Any, kind: str, team: Team | None, **values: Any) -> Rule:
    """Ops change a default; a team's lead (or ops) sets the team's own. Everything checked."""
    if kind not in Kind.values:
        raise ValidationError({"kind": f"{kind!r} is not a kind of alert; kinds: {', '.join(Kind.values)}."})
    if team is None:
        permissions.require_ops(user, "change the default alert rules")
    else:
        if kind in OPS_ONLY:
            raise ValidationError({"kind": f"{Kind(kind).label} alerts are about the fleet: ops set them."})
        if not permissions.leads_or_ops(user, team.pk):
            raise PermissionDenied(f"Only a lead of {team.slug} (or ops) sets its alert rules.")
    unknown = set(values) - set(EDITABLE)
    if unknown:
        raise ValidationError(
            {"detail": f"Cannot set {', '.join(sorted(unknown))}; settable: {', '.join(EDITABLE)}."}
        )
    errors: dict[str, str] = {}
    threshold = values.get("threshold_pct")
    if kind in WITH_THRESHOLD:
        if threshold is not None and not (1 <= int(threshold) <= 100):
            errors["threshold_pct"] = "A percentage from 1 to 100."
    elif threshold is not None:
        errors["threshold_pct"] = f"{Kind(kind).label} has no threshold; leave it empty."
    if "for_seconds" in values and not (0 <= int(values["for_seconds"]) <= 7 * 86400):
        errors["for_seconds"] = "From 0 seconds to 7 days (604800)."
    if "repeat_minutes" in values and not (0 <= int(values["repeat_minutes"]) <= 7 * 1440):
        errors["repeat_minutes"] = "From 0 (say it once) to 7 days (10080 minutes)."
    if errors:
        raise ValidationError(errors)
    base = rule_for(kind, team)
    with transaction.atomic():
        rule = Rule.objects.filter(team=team, kind=kind).first() if team else base
        if rule is None:  # the team's first own rule starts from the default
            rule = Rule(
                team=team,
                kind=kind,
                **{f: getattr(base, f) for f in EDITABLE},
            )
        for field, value in values.items():
            setattr(rule, field, value)
        if kind in WITH_THRESHOLD and rule.threshold_pct is None:
            rule.threshold_pct = DEFAULTS[kind][0]
        rule.updated_by = user
        rule.save()
        audit.record(
            "alert-rule.save",
            f"{kind} alerts{' of ' + team.slug if team else ' (default)'}: "
            + ", ".join(f"{field} {value}" for field, value in sorted(values.items())),
            actor=user,
            object_type="alert rule",
            object_id=rule.pk,
            object_repr=f"{kind} ({team.slug if team else 'default'})",
            team=team,
        )
    return rule


def rule_reset(*, user: Any, kind: str, team: Team) -> None:
    """The team goes back to ops' default for the kind."""
    if kind not in Kind.values:
        raise ValidationError(
            {"kind": f"{kind[:40]!r} is not a kind of alert; kinds: {', '.join(Kind.values)}."}
        )
    if not permissions.leads_or_ops(user, team.pk):
        raise PermissionDenied(f"Only a lead of {team.slug} (or ops) sets its alert rules.")
    if Rule.objects.filter(team=team, kind=kind).delete()[0]:
        audit.record(
            "alert-rule.reset",
            f"{kind} alerts of {team.slug} back to the default",
            actor=user,
            object_type="alert rule",
            object_repr=f"{kind} ({team.slug})",
            team=team,
        )


# --- alerts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """What an alert is about."""

    key: str
    name: str
    app: App | None = None
    instance: Instance | None = None
    host: Host | None = None

    @property
    def team_id(self) -> int | None:
        return self.app.team_id if self.app is not None else None

    @classmethod
    def of_instance(cls, kind: str, instance: Instance) -> Subject:
        return cls(
            f"{kind}:instance:{instance.pk}", instance.container_name, instance.app, instance, instance.host
        )

    @classmethod
    def of_host(cls, kind: str, host: Host) -> Subject:
        return cls(f"{kind}:host:{host.pk}", host.name, host=host)


def fire(
    kind: str, subject: Subject, summary: str, detail: str = "", now: datetime | None = None
) -> Alert | None:
    """The condition holds: a new alert is said at once; one already firing is said again when
    its rule's repeat interval has passed. None when the rule is switched off."""
    now = now or timezone.now()
    rule = rule_for(kind, subject.team_id)
    if not rule.enabled:
        return None
    alert = Alert.objects.filter(key=subject.key, state=Alert.State.FIRING).first()
    if alert is None:
        try:
            with transaction.atomic():
                alert = Alert.objects.create(
                    kind=kind,
                    key=subject.key,
                    team_id=subject.team_id,
                    app=subject.app,
                    app_slug=subject.app.slug if subject.app else "",
                    instance=subject.instance,
                    host=subject.host,
                    subject=subject.name,
                    summary=summary[:300],
                    detail=detail,
                    started_at=now,
                    last_seen_at=now,
                )
                # A row of the audit trail by the portal (a repeat is not: nothing changed).
                audit.record(
                    "alert.fire",
                    f"{alert.get_kind_display()}: {alert.summary}",
                    obj=alert,
                    object_type="alert",
                    data={"kind": kind, "condition": subject.key},
                )
        except IntegrityError:
            return None  # another process raised it this very moment: it says it
        _say(alert, rule, "firing", now)
        return alert
    Alert.objects.filter(pk=alert.pk).update(last_seen_at=now, summary=summary[:300], detail=detail)
    alert.summary, alert.detail = summary[:300], detail
    due = alert.last_notified_at is None or (
        rule.repeat_minutes and now - alert.last_notified_at >= timedelta(minutes=rule.repeat_minutes)
    )
    if due:
        _say(alert, rule, "repeat", now)
    return alert


def resolve(key: str, why: str, now: datetime | None = None) -> Alert | None:
    """The condition ended: the firing alert (if any) is resolved, and that is said."""
    now = now or timezone.now()
    alert = Alert.objects.filter(key=key, state=Alert.State.FIRING).first()
    if alert is None:
        return None
    with transaction.atomic():
        if not Alert.objects.filter(pk=alert.pk, state=Alert.State.FIRING).update(
            state=Alert.State.RESOLVED, resolved_at=now
        ):
            return None
        alert.state, alert.resolved_at = Alert.State.RESOLVED, now
        audit.record(
            "alert.resolve",
            f"resolved: {alert.summary}" + (f" ({why})" if why else ""),
            obj=alert,
            object_type="alert",
            data={"kind": alert.kind, "condition": key},
        )
    _say(alert, rule_for(alert.kind, alert.team_id), "resolved", now, why)
    return alert


def _say(alert: Alert, rule: Rule, event: str, now: datetime, why: str = "") -> None:
    Alert.objects.filter(pk=alert.pk).update(last_notified_at=now, notified=alert.notified + 1)
    text = {
        "firing": f"{alert.get_kind_display()}: {alert.summary}",
        "repeat": f"Still: {alert.summary}",
        "resolved": f"Resolved: {alert.summary}" + (f" ({why})" if why else ""),
    }[event][:300]
    people = list(recipients(alert))
    if rule.notify_portal:
        Notification.objects.bulk_create([Notification(user=u, alert=alert, text=text) for u in people])
    if rule.notify_email:
        emails = sorted({u.email for u in people if u.email})
        if emails:
            alert_id = alert.pk
            transaction.on_commit(lambda: _email_later(alert_id, text, emails))
    if rule.notify_webhooks:
        payload = {"event": f"alert.{event}", "time": now.isoformat(), "alert": alert_payload(alert, why)}
        for hook in webhooks_for(alert.team_id, Webhook.Topic.ALERTS):
            delivery.queue(hook, f"alert.{event}", payload, alert_id=alert.pk)


def recipients(alert: Alert) -> QuerySet[User]:
    """The app's team (developers and leads); ops for what is not an app's."""
    users = User.objects.filter(is_active=True)
    if alert.team_id is not None:
        return users.filter(memberships__team_id=alert.team_id).distinct()
    return users.filter(is_staff=True)


def webhooks_for(team_id: int | None, topic: str) -> list[Webhook]:
    """Active webhooks that want the topic: the team's own and ops' (which get everything)."""
    where = Q(team=None) | Q(team_id=team_id) if team_id is not None else Q(team=None)
    return [h for h in Webhook.objects.filter(where, active=True) if topic in h.topics]


def alert_payload(alert: Alert, why: str = "") -> dict[str, Any]:
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "state": alert.state,
        "summary": alert.summary,
        "detail": alert.detail,
        "why_resolved": why,
        "subject": alert.subject,
        "app": alert.app_slug or None,
        "instance": alert.instance.container_name if alert.instance else None,
        "host": alert.host.name if alert.host else None,
        "started_at": alert.started_at.isoformat(),
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "url": f"{settings.SITE_URL.rstrip('/')}/alerts/{alert.pk}/",
    }


def _email_later(alert_id: int, text: str, emails: list[str]) -> None:
    from apps.alerts.tasks import email

    try:
        email.delay(alert_id, text, emails)
    except Exception as exc:  # the portal's notifications and webhooks still say it
        log.warning("alert %s: the email could not be queued: %s", alert_id, exc)


def send_email(alert_id: int, text: str, emails: list[str]) -> None:
    alert = Alert.objects.get(pk=alert_id)
    body = "\n".join(
        line
        for line in (
            text,
            "",
            alert.detail,
            f"Since {alert.started_at:%Y-%m-%d %H:%M:%S %Z}",
            f"{settings.SITE_URL.rstrip('/')}/alerts/{alert.pk}/",
        )
        if line is not None
    )
    send_mail(f"[Slipway] {text}"[:200], body, settings.DEFAULT_FROM_EMAIL, emails)


# --- webhooks -----------------------------------------------------------------------------


def webhook_create(*, user: Any, team: Team | None, name: str, url: str, topics: list[str]) -> Webhook:
    """Checked before it is saved: the URL (urlcheck), the topics, who may."""
    if team is None:
        permissions.require_ops(user, "add a webhook for the whole fleet")
    elif not permissions.leads_or_ops(user, team.pk):
        raise PermissionDenied(f"Only a lead of {team.slug} (or ops) adds its webhooks.")
    errors: dict[str, str] = {}
    name = (name or "").strip()
    if not name or len(name) > 80:
        errors["name"] = "A name of 1 to 80 characters."
    bad = [t for t in topics if t not in Webhook.Topic.values]
    if not topics or bad:
        errors["topics"] = (
            f"Choose from {', '.join(Webhook.Topic.values)}"
            + (f" (not {', '.join(map(str, bad))})" if bad else "")
            + "."
        )
    try:
        urlcheck.check(url)
    except ValidationError as exc:
        errors["url"] = " ".join(exc.messages)
    if errors:
        raise ValidationError(errors)
    webhook = Webhook.objects.create(
        team=team, name=name, url=url.strip(), topics=sorted(set(topics)), created_by=user
    )
    audit.record(
        "webhook.create",
        f"webhook {name} for {', '.join(webhook.topics)}",
        actor=user,
        obj=webhook,
        team=team,
    )
    return webhook


def webhooks_visible_to(user: Any) -> QuerySet[Webhook]:
    if permissions.is_ops(user):
        return Webhook.objects.all()
    return Webhook.objects.filter(team__in=permissions.teams_of(user))


def webhook_delete(*, user: Any, webhook: Webhook) -> None:
    if webhook.team_id is None:
        permissions.require_ops(user, "remove a webhook of the whole fleet")
    elif not permissions.leads_or_ops(user, webhook.team_id):
        raise PermissionDenied("Only a lead of the team (or ops) removes its webhooks.")
    audit.record("webhook.delete", f"remove webhook {webhook.name}", actor=user, obj=webhook)
    webhook.delete()


def webhook_secrets_rotate() -> int:
    """Every webhook's signing secret sealed again with the first of SECRETS_KEYS (in the
    caller's transaction: `manage.py rotate_secrets`, all or nothing); how many values."""
    count = 0
    for row in Webhook.objects.select_for_update().only("pk", "name", "secret_sealed").order_by("pk"):
        name = f"{row.name} (id {row.pk})"
        sealed = secret_env.rotate({name: row.secret_sealed}, what="The signing secret of the webhook")[name]
        Webhook.objects.filter(pk=row.pk).update(secret_sealed=sealed)
        count += 1
    return count


secret_env.sealed_store("webhooks' signing secrets", webhook_secrets_rotate)


def alerts_visible_to(user: Any) -> QuerySet[Alert]:
    if permissions.is_ops(user):
        return Alert.objects.all()
    return Alert.objects.filter(team__in=permissions.teams_of(user))


def unread(user: Any) -> QuerySet[Notification]:
    return Notification.objects.filter(user=user, read_at=None)


def mark_read(user: Any, ids: list[int] | None = None) -> int:
    rows = unread(user)
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    return rows.update(read_at=timezone.now())


def prune(now: datetime | None = None) -> int:
    """Resolved alerts, read notifications and finished deliveries older than
    EVENTS_RETENTION_DAYS go; what still fires or waits stays."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.EVENTS_RETENTION_DAYS)
    gone = Notification.objects.filter(read_at__lt=cutoff).delete()[0]
    gone += Delivery.objects.filter(created_at__lt=cutoff).exclude(status=Delivery.Status.PENDING).delete()[0]
    gone += Alert.objects.filter(state=Alert.State.RESOLVED, resolved_at__lt=cutoff).delete()[0]
    return gone
