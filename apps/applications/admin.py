from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.applications import services
from apps.applications.models import App, BaseImage, BuildState, RetainedVolume, VolumeUpload
from apps.applications.selectors import image_usage
from apps.images import publish
from portal.admin import ReadOnlyAdmin


@admin.register(BaseImage)
class BaseImageAdmin(admin.ModelAdmin):
    list_display = [
        "reference",
        "runtime",
        "state",
        "recommended",
        "deprecated",
        "withdrawn",
        "apps_on_it",
        "instances_on_it",
        "host_names",
        "created_at",
    ]
    list_filter = ["state", "recommended", "deprecated", "withdrawn", "runtime", "name"]
    readonly_fields = ["state", "digest", "size", "load_progress", "build_error"]
    search_fields = ["name", "tag", "runtime"]
    filter_horizontal = ["hosts"]
    actions = ["publish", "refresh_hosts"]

    @admin.display(description="On hosts")
    def host_names(self, image: BaseImage) -> str:
        return ", ".join(h.name for h in image.hosts.all())

    @admin.display(description="Apps", ordering="app_count")
    def apps_on_it(self, image: BaseImage) -> int:
        return int(getattr(image, "app_count", 0))

    @admin.display(description="Instances", ordering="instance_count")
    def instances_on_it(self, image: BaseImage) -> int:
        return int(getattr(image, "instance_count", 0))

    def get_queryset(self, request: HttpRequest) -> QuerySet[BaseImage]:
        # Per version, which apps and how many instances still run it.
        return image_usage().prefetch_related("hosts")

    @admin.action(description="Publish: build from the recipe and load onto every active host")
    def publish(self, request: HttpRequest, queryset: QuerySet[BaseImage]) -> None:
        for image in queryset:
            try:
                publish.image_publish(user=request.user, image=image)
            except (ValidationError, PermissionDenied) as exc:
                text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                self.message_user(request, f"{image.reference}: {text}", messages.ERROR)
            else:
                self.message_user(request, f"{image.reference}: building; progress on the Base images page.")

    def get_readonly_fields(self, request: HttpRequest, obj: BaseImage | None = None) -> list[str]:
        # A published version's recipe is what its digest was built from: changes are new versions.
        fields = list(self.readonly_fields)
        if obj is not None and obj.digest and obj.published:
            fields.append("recipe")
        return fields

    def save_model(self, request: HttpRequest, obj: BaseImage, form: Any, change: bool) -> None:
        # A new version with a recipe is a draft until it is published (built and loaded).
        if not change and obj.recipe.strip():
            obj.state = BuildState.DRAFT
            if obj.recommended:
                obj.recommended = False
                self.message_user(
                    request,
                    "Saved as a draft, not recommended: mark it recommended once it is published.",
                    messages.WARNING,
                )
        super().save_model(request, obj, form, change)

    @admin.action(description="Check which hosts have the selected images")
    def refresh_hosts(self, request: HttpRequest, queryset: QuerySet[BaseImage]) -> None:
        for image in queryset:
            errors = services.base_image_refresh_hosts(image=image)
            names = ", ".join(h.name for h in image.hosts.all()) or "no host"
            # Written straight to the image's hosts: the admin's own log (and so the audit trail)
            # says so, as it does for a save in the form.
            self.log_change(request, image, f"Checked which hosts have it: {names}.")
            level = messages.WARNING if errors else messages.SUCCESS
            self.message_user(request, f"{image.reference}: on {names}. {' '.join(errors)}", level)


@admin.register(App)
class AppAdmin(ReadOnlyAdmin):
    """Apps are changed through the portal's services (scale, resize, delete); here ops look."""

    list_display = ["slug", "team", "base_image", "instances", "memory_mb", "cpus", "created_at"]
    list_filter = ["team", "base_image"]
    search_fields = ["slug"]
    list_select_related = ["team", "base_image"]
    # Sealed values are no use to read, and only names are ever shown.
    exclude = ["secrets"]
    readonly_fields = ["secret_names"]

    @admin.display(description="Secret variables")
    def secret_names(self, app: App) -> str:
        return ", ".join(sorted(app.secrets or {})) or "none"


@admin.register(VolumeUpload)
class VolumeUploadAdmin(admin.ModelAdmin):
    list_display = ["app", "sha256", "size", "files", "uploaded_by", "created_at"]
    list_select_related = ["app", "uploaded_by"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RetainedVolume)
class RetainedVolumeAdmin(admin.ModelAdmin):
    """Volume data left on hosts (a deleted app's, or where an app no longer runs), kept on the
    hosts until ops purge it."""

    list_display = ["app_slug", "host", "path", "reason", "team", "deleted_at", "purged_at", "purge_error"]
    list_filter = ["purged_at", "reason", "host"]
    search_fields = ["app_slug"]
    readonly_fields = ["host", "app_slug", "path", "reason", "team", "deleted_at", "purged_at", "purge_error"]
    actions = ["purge"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Purge: delete the volume data on the host")
    def purge(self, request: HttpRequest, queryset: QuerySet[RetainedVolume]) -> None:
        for volume in queryset.select_related("host"):
            volume = services.volume_purge(volume=volume, user=request.user)
            if volume.purged_at:
                self.message_user(request, f"Purged {volume.path} on {volume.host}.")
            else:
                self.message_user(
                    request, f"{volume.path} on {volume.host}: {volume.purge_error}", messages.ERROR
                )
