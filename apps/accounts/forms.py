from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from apps.accounts import tokens
from apps.accounts.models import ApiToken

DATE = "date"


class ApiTokenForm(forms.Form):
    """Name, scope and expiry (a number of days or a date). The service checks the name and the
    expiry again (as it does for the API), so both paths refuse with the same messages."""

    name = forms.CharField(
        required=False,
        strip=False,
        widget=forms.TextInput(attrs={"maxlength": tokens.NAME_MAX, "placeholder": "e.g. laptop, ci deploy"}),
        help_text=f"What or who uses it; up to {tokens.NAME_MAX} characters, unique among your live tokens.",
    )
    scope = forms.ChoiceField(
        choices=ApiToken.Scope.choices,
        initial=ApiToken.Scope.READ,
        widget=forms.RadioSelect,
        error_messages={
            "required": "Choose read only or read and write.",
            "invalid_choice": "%(value)s is not a scope: choose read only or read and write.",
        },
        help_text="Read only: GET requests only (lists, logs, metrics). Read and write: all you may do.",
    )
    expires = forms.ChoiceField(
        label="Expires",
        error_messages={
            "required": "Choose when the token expires.",
            "invalid_choice": "%(value)s is not offered: choose a number of days or a date.",
        },
    )
    expires_on = forms.DateField(
        required=False,
        label="Date",
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "Give a date as YYYY-MM-DD."},
        help_text="With “on a date”: it stops working at 00:00 on that day.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        days = tokens.expiry_choices()
        choices = [(str(d), f"in {d} days") for d in days] + [(DATE, "on a date…")]
        field = self.fields["expires"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = choices
        field.initial = "30" if 30 in days else str(days[0])
        today = timezone.localdate()
        self.fields["expires_on"].widget.attrs.update(
            min=(today + timedelta(days=1)).isoformat(),
            max=(today + timedelta(days=settings.API_TOKEN_MAX_DAYS)).isoformat(),
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        expires = data.get("expires")
        if expires == DATE:
            day = data.get("expires_on")
            if day is None:
                if "expires_on" not in self.errors:
                    self.add_error("expires_on", "Give the date the token stops working.")
                return data
            data["expires_at"] = tokens.expires_on(day)
        elif expires:
            try:
                data["expires_at"] = tokens.expires_after(expires)
            except ValidationError as exc:
                self.add_error("expires", exc)
        return data

    def add_service_errors(self, error: ValidationError) -> None:
        """The service's errors on the fields they are about (its expires_at is ours or the date's)."""
        where = "expires_on" if self.cleaned_data.get("expires") == DATE else "expires"
        for field, messages in error.message_dict.items():
            self.add_error({"name": "name", "scope": "scope", "expires_at": where}.get(field), messages)
