from __future__ import annotations

from django.contrib import admin

from apps.audit.models import AuditEntry
from portal.admin import ReadOnlyAdmin


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """The trail is written by the portal only; ops search it here or on /audit/."""

    list_display = ["at", "actor_name", "source", "action", "object_repr", "summary"]
    list_filter = ["source", "action"]
    search_fields = ["summary", "object_repr", "actor_name"]
