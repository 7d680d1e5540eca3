from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from apps.instances.models import Finding, Instance, Operation
from portal.admin import ReadOnlyAdmin


@admin.register(Instance)
class InstanceAdmin(ReadOnlyAdmin):
    list_display = [
        "__str__",
        "host",
        "state",
        "desired_state",
        "memory_mb",
        "cpus",
        "container_id",
        "updated_at",
    ]
    list_filter = ["state", "desired_state", "host"]
    list_select_related = ["app", "host"]
    search_fields = ["app__slug", "container_id"]


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "app_slug",
        "kind",
        "status",
        "summary",
        "requested_by",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "kind"]
    list_select_related = ["requested_by"]
    search_fields = ["app_slug", "summary", "error"]


@admin.register(Finding)
class FindingAdmin(admin.ModelAdmin):
    list_display = ["host", "kind", "subject", "detail", "first_seen", "last_seen", "resolved_at"]
    list_filter = ["kind", "host", "resolved_at"]
    readonly_fields = ["host", "kind", "subject", "detail", "first_seen", "last_seen"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
