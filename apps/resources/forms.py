from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings


class ResourceRequestForm(forms.Form):
    """Memory, CPU and why. The fields take any text: the service checks them (as it does for the
    API), so the page and the API refuse with the same messages."""

    memory_mb = forms.CharField(
        required=False,
        label="Memory (MiB per instance)",
        widget=forms.NumberInput(attrs={"step": 1}),
    )
    cpus = forms.CharField(
        required=False,
        label="CPU (cores per instance)",
        widget=forms.NumberInput(attrs={"step": "0.01", "min": "0.01"}),
        help_text="Up to two decimals, e.g. 0.5.",
    )
    reason = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(
            attrs={"rows": 2, "placeholder": "What the app needs it for; the lead reads this."}
        ),
        help_text="Goes to a lead of the team, who approves or rejects the change.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["memory_mb"].widget.attrs["min"] = settings.MIN_MEMORY_MB
        self.fields["memory_mb"].help_text = f"At least {settings.MIN_MEMORY_MB} MiB."
