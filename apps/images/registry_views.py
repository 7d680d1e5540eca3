"""The registry page for ops: the registry publishing goes through (URL, credentials, CA), saved
only once the registry answered with them. The password is never shown back: the page says
whether one is set, and a new one replaces it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from apps.audit.models import AuditEntry
from apps.images import registry_settings
from apps.images.models import Registry
from portal.http import HtmxHttpRequest


class RegistryForm(forms.Form):
    url = forms.CharField(
        label="URL",
        required=False,
        max_length=300,
        help_text="https://host:port, e.g. https://registry.example:5000",
    )
    username = forms.CharField(required=False, max_length=150)
    password = forms.CharField(
        required=False,
        max_length=1024,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Left empty, the password set before stays.",
    )
    clear_password = forms.BooleanField(required=False, label="Remove the password")
    ca_pem = forms.CharField(
        label="CA certificate (PEM)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "spellcheck": "false"}),
        help_text="The CA that signed the registry's certificate, if it is not a public one. Hosts get it in "
        "/etc/docker/certs.d/<host:port>/ca.crt before they pull.",
    )
    enabled = forms.BooleanField(required=False, label="Publish through this registry")


def _context(row: Registry, form: RegistryForm | None = None, saved: bool = False) -> dict[str, Any]:
    if form is None:
        form = RegistryForm(
            initial={"url": row.url, "username": row.username, "ca_pem": row.ca_pem, "enabled": row.enabled}
        )
    history = AuditEntry.objects.filter(action="registry.save").order_by("-at")[:5]
    return {"registry": row, "form": form, "saved": saved, "history": history}


# The form takes the registry password: an error report shows neither it nor the variables.
@sensitive_post_parameters("password")
@sensitive_variables()
@staff_member_required
def registry_page(request: HtmxHttpRequest) -> HttpResponse:
    row = registry_settings.registry_get()
    if request.method != "POST":
        return render(request, "catalog/registry.html", _context(row))
    form = RegistryForm(request.POST)
    template = "catalog/registry.html#registry-card" if request.htmx else "catalog/registry.html"
    status = 422
    if form.is_valid():
        data = form.cleaned_data
        try:
            row = registry_settings.registry_save(
                user=request.user,
                url=data["url"],
                username=data["username"],
                password=data["password"] or None,
                clear_password=data["clear_password"],
                ca_pem=data["ca_pem"],
                enabled=data["enabled"],
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                form.add_error(field if field in form.fields else None, messages)
        except PermissionDenied as exc:
            form.add_error(None, str(exc))
            status = 403
        else:
            # The saved values, the password box empty again.
            return render(request, template, _context(row, saved=True))
    return render(request, template, _context(row, form), status=status)
