from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework.authtoken.models import TokenProxy

from apps.accounts import tokens
from apps.accounts.models import ApiToken, Membership, Team


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


# DRF's single tokens were converted into named ones (migration 0003): their admin has nothing to show.
if admin.site.is_registered(TokenProxy):
    admin.site.unregister(TokenProxy)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Everyone's tokens for ops: who has which, when each was used and from where; revoke with
    the action. Never the key (only its first characters are stored in the clear)."""

    list_display = [
        "name",
        "user",
        "scope",
        "prefix",
        "created_at",
        "expires_at",
        "last_used_at",
        "last_used_from",
        "revoked_at",
    ]
    list_filter = ("scope", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ["name", "user__username", "prefix"]
    list_select_related = ["user"]
    fields = readonly_fields = (
        "user",
        "name",
        "scope",
        "prefix",
        "created_at",
        "expires_at",
        "last_used_at",
        "last_used_from",
        "revoked_at",
        "revoked_by",
    )
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a key is shown once to its owner: made on the API tokens page or the API

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoked rows stay, with when and by whom

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        done = 0
        for token in queryset.filter(revoked_at__isnull=True):
            tokens.api_token_revoke(user=request.user, token=token)
            done += 1
        self.message_user(
            request, f"Revoked {done} token{'s' if done != 1 else ''}; they stopped working at once."
        )
