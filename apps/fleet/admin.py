"""Admin for hosts and the fleet work on them. The host admin lives here, above the hosts app,
because its actions drain and re-activate hosts (fleet work); the hosts app stays the floor."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from apps.fleet import drain as draining
from apps.fleet import prepare as preparing
from apps.fleet.models import Drain, FleetScenario
from apps.hosts import services
from apps.hosts.models import Host
from portal.admin import ReadOnlyAdmin


class HostAdminForm(forms.ModelForm):
    confirm_fingerprint = forms.CharField(
        required=False,
        help_text="To pin the offered key, type its fingerprint exactly as shown "
        "(verify it on the host's console first).",
    )

    class Meta:
        model = Host
        fields = ["name", "ssh_user", "docker_transport", "docker_socket", "volume_root", "state"]


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    form = HostAdminForm
    list_display = ["name", "address", "state", "checks_ok", "cpus", "memory_mb", "last_seen", "last_error"]
    list_filter = ["state", "docker_transport"]
    search_fields = ["name", "address"]
    # The address is the host's identity and its key is pinned to it: a new address is a new host.
    readonly_fields = [
        "address",
        "ssh_port",
        "fingerprint",
        "offered_fingerprint",
        "cpus",
        "memory_mb",
        "last_seen",
        "last_checked",
        "last_error",
        "facts",
    ]
    fields = [
        "name",
        "address",
        "ssh_port",
        "ssh_user",
        "docker_transport",
        "docker_socket",
        "volume_root",
        "state",
        "fingerprint",
        "offered_fingerprint",
        "confirm_fingerprint",
        "cpus",
        "memory_mb",
        "last_seen",
        "last_checked",
        "last_error",
        "facts",
    ]
    actions = ["probe", "refetch_key", "fix_network", "prepare", "prepare_dockerd", "drain", "activate"]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        # Registering fetches the host key for confirmation: one flow, on the ops host page.
        return redirect("hosts:list")

    def save_model(self, request: HttpRequest, obj: Host, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        confirm = form.cleaned_data.get("confirm_fingerprint")
        if confirm:
            try:
                services.host_confirm_key(host=obj, confirmed_fingerprint=confirm, user=request.user)
            except ValidationError as exc:
                messages.error(request, "; ".join(exc.messages))
            else:
                messages.success(request, f"Key pinned for {obj.name}; the host is {obj.state}.")

    @admin.action(description="Probe the selected hosts now")
    def probe(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        for host in queryset:
            host = services.host_probe(host=host)
            # The probe writes the host's state and facts straight to its row: the admin's own log
            # (and so the audit trail) says so, as it does for a save in the form.
            self.log_change(
                request, host, f"Probed: {host.state}" + (f", {host.last_error}" if host.last_error else ".")
            )
            level = messages.SUCCESS if host.state == Host.State.ACTIVE else messages.WARNING
            self.message_user(request, f"{host.name}: {host.state} {host.last_error}", level)

    @admin.action(description="Fix network (ip_forward off, bridge MACs pinned) and re-check")
    def fix_network(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        for host in queryset:
            try:
                host = services.host_fix_network(host=host, user=request.user)
            except ValidationError as exc:
                self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            else:
                level = messages.SUCCESS if host.checks_ok else messages.WARNING
                self.message_user(
                    request, f"{host.name}: checks {'pass' if host.checks_ok else 'still fail'}.", level
                )

    @admin.action(description="Re-fetch the offered SSH host key")
    def refetch_key(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        for host in queryset:
            try:
                services.host_refetch_key(host=host, user=request.user)
            except ValidationError as exc:
                self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            else:
                self.message_user(
                    request, f"{host.name} offers {host.offered_fingerprint}; confirm it to pin."
                )

    @admin.action(description="Prepare the selected hosts (agent, doctor, safe fixes, base images)")
    def prepare(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        self._prepare(request, queryset, restart_dockerd=False)

    @admin.action(
        description="Prepare the selected hosts and apply dockerd's settings (restarts dockerd; "
        "live-restore keeps instances running)"
    )
    def prepare_dockerd(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        self._prepare(request, queryset, restart_dockerd=True)

    def _prepare(self, request: HttpRequest, queryset: QuerySet[Host], *, restart_dockerd: bool) -> None:
        done = "preparing, dockerd settings included" if restart_dockerd else "preparing"
        for host in queryset:
            try:
                preparing.host_prepare(user=request.user, host=host, restart_dockerd=restart_dockerd)
            except ValidationError as exc:
                self.message_user(request, f"{host.name}: {'; '.join(exc.messages)}", messages.ERROR)
            else:
                self.message_user(request, f"{host.name}: {done}; the steps are on its host page.")

    @admin.action(description="Drain the selected hosts (move their instances away, one at a time)")
    def drain(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        for host in queryset:
            try:
                made = draining.host_drain(user=request.user, host=host)
            except ValidationError as exc:
                self.message_user(request, f"{host.name}: {'; '.join(exc.messages)}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"{host.name}: draining, {made.total} instance(s) to move; progress on its host page.",
                )

    @admin.action(description="Let the selected draining hosts take instances again")
    def activate(self, request: HttpRequest, queryset: QuerySet[Host]) -> None:
        for host in queryset:
            try:
                draining.host_activate(user=request.user, host=host)
            except ValidationError as exc:
                self.message_user(request, f"{host.name}: {'; '.join(exc.messages)}", messages.ERROR)
            else:
                self.message_user(request, f"{host.name} takes instances again.")


@admin.register(Drain)
class DrainAdmin(ReadOnlyAdmin):
    """Drains, for ops to follow; started and stopped from the host actions or the host page."""

    list_display = ["host", "state", "done", "total", "current", "started_by", "created_at", "finished_at"]
    list_filter = ["state"]
    readonly_fields = ["log", "error"]


@admin.register(FleetScenario)
class FleetScenarioAdmin(admin.ModelAdmin):
    """What-if fleets (`manage.py synthetic_fleet`): plain numbers, deletable, never placed on."""

    list_display = ["name", "description", "created_at"]
    fields = ["name", "description"]
    readonly_fields = ["name", "description"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
