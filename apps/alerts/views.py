"""Pages: alerts (with the user's notifications), one alert, rules, webhooks."""

from __future__ import annotations

import re
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_POST

from apps.accounts import permissions
from apps.alerts import services
from apps.alerts.models import OPS_ONLY, WITH_THRESHOLD, Alert, Kind, Webhook


def _text(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return " ".join(
            f"{k}: {' '.join(v)}" if k != "__all__" else " ".join(v) for k, v in exc.message_dict.items()
        )
    return " ".join(exc.messages)


@login_required
def alert_list(request: HttpRequest) -> HttpResponse:
    """Firing alerts first, then the last resolved ones, and the user's notifications; htmx
    asks for the lists alone every few seconds."""
    visible = services.alerts_visible_to(request.user).select_related("instance", "host")
    context = {
        "firing": list(visible.filter(state=Alert.State.FIRING)[:200]),
        "resolved": list(visible.filter(state=Alert.State.RESOLVED).order_by("-resolved_at")[:50]),
        "notifications": list(request.user.notifications.select_related("alert")[:50]),  # type: ignore[union-attr]
        "unread": services.unread(request.user).count(),
    }
    template = "alerts/alerts.html#lists" if getattr(request, "htmx", False) else "alerts/alerts.html"
    return render(request, template, context)


@login_required
def alert_detail(request: HttpRequest, pk: int) -> HttpResponse:
    alert = get_object_or_404(
        services.alerts_visible_to(request.user).select_related("instance", "host"), pk=pk
    )
    services.mark_read(request.user, list(alert.notifications.values_list("pk", flat=True)))
    return render(
        request,
        "alerts/alert.html",
        {"alert": alert, "deliveries": alert.deliveries.select_related("webhook")[:50]},
    )


@login_required
@require_POST
def read_all(request: HttpRequest) -> HttpResponse:
    services.mark_read(request.user)
    return redirect("alerts:list")


@login_required
def badge(request: HttpRequest) -> HttpResponse:
    """The nav's badge alone (htmx polls it)."""
    return render(request, "alerts/_badge.html", {"count": services.unread(request.user).count()})


def _rule_rows(team: Any) -> list[dict[str, Any]]:
    rows = []
    for rule in services.rules_for(team):
        rows.append(
            {
                "rule": rule,
                "own": team is not None and rule.team_id == team.pk,
                "threshold": rule.kind in WITH_THRESHOLD,
                "label": Kind(rule.kind).label,
            }
        )
    return rows


@login_required
def rules(request: HttpRequest) -> HttpResponse:
    """Ops' defaults, or (`?team=`) a team's rules: what its lead may change."""
    teams = list(permissions.teams_of(request.user).order_by("slug"))
    slug = request.GET.get("team") or request.POST.get("team") or ""
    team = next((t for t in teams if t.slug == slug), None)
    if slug and team is None:
        messages.error(request, f"No team {slug!r} of yours.")
        return redirect("alerts:rules")
    editable = (
        permissions.is_ops(request.user) if team is None else permissions.leads_or_ops(request.user, team.pk)
    )
    error, status = "", 200
    if request.method == "POST":
        kind = request.POST.get("kind", "")
        try:
            if request.POST.get("reset") and team is not None:
                services.rule_reset(user=request.user, kind=kind, team=team)
            else:
                values: dict[str, Any] = {
                    "enabled": bool(request.POST.get("enabled")),
                    "notify_portal": bool(request.POST.get("notify_portal")),
                    "notify_email": bool(request.POST.get("notify_email")),
                    "notify_webhooks": bool(request.POST.get("notify_webhooks")),
                }
                for name in ("for_seconds", "repeat_minutes", "threshold_pct"):
                    text = request.POST.get(name, "").strip()
                    if text:
                        if not re.fullmatch(r"[0-9]{1,9}", text):
                            raise ValidationError({name: f"{text[:20]!r} is not a whole number."})
                        values[name] = int(text)
                services.rule_save(user=request.user, kind=kind, team=team, **values)
        except PermissionDenied as exc:
            error, status = str(exc), 403
        except ValidationError as exc:
            error, status = _text(exc), 422
        else:
            label = Kind(kind).label if kind in Kind.values else kind
            messages.success(request, f"Saved: {label} for {team.slug if team else 'every team (default)'}.")
            return redirect(f"{request.path}?team={team.slug}" if team else request.path)
    context = {
        "teams": teams,
        "team": team,
        "rows": _rule_rows(team),
        "editable": editable,
        "error": error,
        "ops_only": [Kind(k).label for k in OPS_ONLY],
    }
    return render(request, "alerts/rules.html", context, status=status)


# The page after adding one shows its secret, opened: an error report shows no variable here.
@sensitive_variables()
@login_required
def webhooks(request: HttpRequest) -> HttpResponse:
    teams = [
        t
        for t in permissions.teams_of(request.user).order_by("slug")
        if permissions.leads_or_ops(request.user, t.pk)
    ]
    error, status, created, secret = "", 200, None, ""
    if request.method == "POST":
        slug = request.POST.get("team", "")
        team = next((t for t in teams if t.slug == slug), None)
        try:
            if slug and team is None:
                raise PermissionDenied(f"Only a lead of {slug} (or ops) adds its webhooks.")
            created = services.webhook_create(
                user=request.user,
                team=team,
                name=request.POST.get("name", ""),
                url=request.POST.get("url", ""),
                topics=request.POST.getlist("topics"),
            )
        except PermissionDenied as exc:
            error, status = str(exc), 403
        except ValidationError as exc:
            error, status = _text(exc), 422
        else:
            # Shown on the page the redirect leads to, once: a reload shows it no more. The
            # session keeps only the webhook's id; the secret is opened for that one page.
            request.session["new_webhook"] = created.pk
            return redirect("alerts:webhooks")
    new = request.session.pop("new_webhook", None)
    if new is not None:
        created = services.webhooks_visible_to(request.user).filter(pk=new).first()
        secret = created.secret_opened() if created is not None else ""
    context = {
        "hooks": services.webhooks_visible_to(request.user).select_related("team"),
        "teams": teams,
        "is_ops": permissions.is_ops(request.user),
        "topics": Webhook.Topic.choices,
        "error": error,
        "created": created,
        "secret": secret,
        "form": request.POST if error else {},
    }
    return render(request, "alerts/webhooks.html", context, status=status)


@login_required
def webhook_detail(request: HttpRequest, pk: int) -> HttpResponse:
    hook = get_object_or_404(services.webhooks_visible_to(request.user), pk=pk)
    template = "alerts/webhook.html#deliveries" if getattr(request, "htmx", False) else "alerts/webhook.html"
    return render(request, template, {"hook": hook, "deliveries": hook.deliveries.all()[:100]})


@login_required
@require_POST
def webhook_remove(request: HttpRequest, pk: int) -> HttpResponse:
    hook = get_object_or_404(services.webhooks_visible_to(request.user), pk=pk)
    try:
        services.webhook_delete(user=request.user, webhook=hook)
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Removed the webhook {hook.name}.")
    return redirect("alerts:webhooks")
