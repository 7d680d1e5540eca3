from django.contrib import admin

from apps.accounts.models import Membership, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "quota_memory_mb",
        "quota_cpus",
        "auto_approve_memory_mb",
        "auto_approve_cpus",
    ]
    fieldsets = [
        (None, {"fields": ["slug", "name"]}),
        (
            "Quota and resize policy",
            {
                "fields": ["quota_memory_mb", "quota_cpus", "auto_approve_memory_mb", "auto_approve_cpus"],
                "description": "Totals are limits x desired instances over the team's apps; scale-ups and "
                "resizes past them are refused. A resize within quota that raises each instance by no "
                "more than the auto-approve step applies without a lead.",
            },
        ),
    ]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]
