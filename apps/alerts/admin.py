from __future__ import annotations

from django.contrib import admin

from apps.alerts.models import Alert, Delivery, Notification, Rule, Webhook
from portal.admin import ReadOnlyAdmin


@admin.register(Rule)
class RuleAdmin(ReadOnlyAdmin):
    list_display = ["kind", "team", "enabled", "threshold_pct", "for_seconds", "repeat_minutes", "updated_at"]
    list_filter = ["kind", "enabled", "team"]


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "kind", "subject", "state", "notified", "resolved_at"]
    list_filter = ["state", "kind"]
    search_fields = ["subject", "app_slug", "summary"]


@admin.register(Webhook)
class WebhookAdmin(ReadOnlyAdmin):
    list_display = ["name", "team", "url", "active", "created_at"]
    list_filter = ["active", "team"]
    # Read-only like the rest: webhooks are added through the page or the API, where the URL is checked.
    exclude = ["secret_sealed"]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "event", "webhook", "status", "attempts", "response_status", "error"]
    list_filter = ["status", "event"]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "user", "text", "read_at"]
