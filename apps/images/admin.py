"""The registry in the Django admin: shown, never its password, and changed only through the
registry page (which checks it against the registry before saving)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.images.models import Registry


@admin.register(Registry)
class RegistryAdmin(admin.ModelAdmin):
    list_display = ["url", "username", "enabled", "password_set", "checked_at", "updated_at"]
    fields = (
        "url",
        "username",
        "password_set",
        "ca_pem",
        "enabled",
        "checked_at",
        "updated_at",
        "updated_by",
    )
    readonly_fields = fields

    @admin.display(boolean=True, description="password set")
    def password_set(self, row: Registry) -> bool:
        return row.has_password

    # Saved only where it is checked first: the registry page (Base images → Image registry).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
