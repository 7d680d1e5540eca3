from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from apps.network.models import IPAllocation, IPPool
from portal.admin import ReadOnlyAdmin


@admin.register(IPPool)
class IPPoolAdmin(admin.ModelAdmin):
    list_display = ["name", "network", "gateway", "range_start", "range_end", "in_use", "docker_network"]
    filter_horizontal = ["hosts"]
    search_fields = ["name", "network"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[IPPool]:
        return super().get_queryset(request).annotate(allocation_count=Count("allocations"))

    @admin.display(description="Allocated")
    def in_use(self, pool: IPPool) -> int:
        return int(getattr(pool, "allocation_count", 0))


@admin.register(IPAllocation)
class IPAllocationAdmin(ReadOnlyAdmin):
    """Addresses change with scale, delete and owner requests, all through the services."""

    list_display = ["address", "pool", "app", "slot", "requested", "created_at"]
    list_filter = ["pool", "requested"]
    search_fields = ["address", "app__slug"]
    list_select_related = ["pool", "app"]
