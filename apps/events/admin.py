from __future__ import annotations

from django.contrib import admin

from apps.events.models import ContainerEvent, EventCursor
from portal.admin import ReadOnlyAdmin


@admin.register(ContainerEvent)
class ContainerEventAdmin(ReadOnlyAdmin):
    list_display = ["time", "kind", "container_name", "host_name", "exit_code", "oom", "detail"]
    list_filter = ["kind", "oom", "host"]
    search_fields = ["app_slug", "container_name", "container_id"]
    date_hierarchy = "time"


@admin.register(EventCursor)
class EventCursorAdmin(ReadOnlyAdmin):
    list_display = ["host", "time_ns", "updated_at"]
