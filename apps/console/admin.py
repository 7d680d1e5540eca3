from __future__ import annotations

from django.contrib import admin

from apps.console.models import ExecSession, NamedCommand
from portal.admin import ReadOnlyAdmin


@admin.register(ExecSession)
class ExecSessionAdmin(ReadOnlyAdmin):
    """The exec and terminal audit: who, where, what, when, how it ended."""

    list_display = [
        "started_at",
        "username",
        "kind",
        "app_slug",
        "instance_name",
        "host_name",
        "exit_code",
        "bytes_out",
    ]
    list_filter = ["kind", "timed_out", "host_name"]
    search_fields = ["username", "app_slug", "instance_name"]
    date_hierarchy = "started_at"


@admin.register(NamedCommand)
class NamedCommandAdmin(admin.ModelAdmin):
    """One-click commands per app (leads define them on the app page too)."""

    list_display = ["app", "name", "argv", "description", "created_by"]
    list_filter = ["app__team"]
    search_fields = ["app__slug", "name"]
    autocomplete_fields = ["app"]
    readonly_fields = ["created_by"]

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        obj.created_by = request.user
        super().save_model(request, obj, form, change)
