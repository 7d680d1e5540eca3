from __future__ import annotations

from django.contrib import admin

from apps.resources.models import ResourceEvent, ResourceRequest
from portal.admin import ReadOnlyAdmin


class ResourceEventInline(admin.TabularInline):
    model = ResourceEvent
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "user", "action", "detail"]

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(ResourceRequest)
class ResourceRequestAdmin(ReadOnlyAdmin):
    """The audit of resizes. Deciding happens on the approvals page (or the API), through the
    same service, so the admin cannot bypass the policy."""

    list_display = ["app", "change_text", "state", "requested_by", "decided_by", "created_at", "applied_at"]
    list_filter = ["state", "auto_approved", "app__team"]
    search_fields = ["app__slug", "reason", "comment"]
    list_select_related = ["app", "requested_by", "decided_by"]
    inlines = [ResourceEventInline]
