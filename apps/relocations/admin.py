from __future__ import annotations

import json

from django.contrib import admin

from apps.relocations import plan as planning
from apps.relocations.models import Inspection, Relocation, Step
from portal.admin import ReadOnlyAdmin


class StepInline(admin.TabularInline):
    model = Step
    extra = 0
    can_delete = False
    fields = ("attempt", "name", "state", "done", "total", "detail", "started_at", "finished_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


class InspectionInline(admin.TabularInline):
    model = Inspection
    extra = 0
    can_delete = False
    fields = ("created_at", "error")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(Relocation)
class RelocationAdmin(ReadOnlyAdmin):
    """Moves of VM apps, for ops to follow. Every step happens in the wizard (or the API), through
    the services, so the admin cannot skip the host-key check or the plan's validation."""

    list_display = ["name", "address", "team", "state", "app", "host", "attempt", "updated_at"]
    list_filter = ["state", "team"]
    search_fields = ["name", "address", "app__slug", "error"]
    list_select_related = ["team", "app", "host"]
    inlines = [InspectionInline, StepInline]
    # The plan as the wizard shows it: secrets by name, their sealed values never.
    exclude = ["plan"]
    readonly_fields = ["plan_shown"]

    @admin.display(description="plan")
    def plan_shown(self, obj: Relocation) -> str:
        return json.dumps(planning.shown(obj.plan), indent=2)
