from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from apps.network import services
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
    """Addresses change with scale, delete and owner requests, all through the services. Rows
    without an app are addresses found in use outside Slipway, held so nobody gets them."""

    list_display = ["address", "pool", "app", "slot", "requested", "held_by", "verified_at", "created_at"]
    list_filter = ["pool", "requested", ("app", admin.EmptyFieldListFilter)]
    search_fields = ["address", "app__slug", "held_by"]
    list_select_related = ["pool", "app"]
    actions = ["release_foreign"]

    @admin.action(description="Release addresses held as in use outside Slipway")
    def release_foreign(self, request: HttpRequest, queryset: QuerySet[IPAllocation]) -> None:
        # Only foreign holds: an app's address goes with its slot, through the services.
        released = len(
            services.address_release_foreign(
                allocations=queryset.filter(app=None), user=request.user, why="released in the admin"
            )
        )
        skipped = queryset.exclude(app=None).count()
        message = f"Released {released} address(es); the reconcile holds them again if they are still in use."
        if skipped:
            message += f" Skipped {skipped} held by apps (scale down or delete the app instead)."
        self.message_user(request, message, messages.SUCCESS if not skipped else messages.WARNING)
