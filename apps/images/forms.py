from __future__ import annotations

import shlex

from django import forms

from apps.applications.models import BaseImage


def _argv(value: str, field: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise forms.ValidationError(
            f"{field} could not be split into words ({exc}); quote words with spaces, e.g. sh -c 'echo hi'."
        ) from exc


class VersionForm(forms.Form):
    """A new version of an image, prefilled from the version it is made from."""

    tag = forms.CharField(max_length=64, help_text="The version, e.g. 2 or 3.12.")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    recipe = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "code"}),
        help_text="FROM scratch, ADD <rootfs> /, then ENV, CMD, ENTRYPOINT, WORKDIR, LABEL, EXPOSE, USER.",
    )
    default_command = forms.CharField(
        required=False, help_text="What an app runs unless it says otherwise, as words: httpd -f -p 8080"
    )
    default_port = forms.IntegerField(required=False, min_value=1, max_value=65535)
    reload_command = forms.CharField(
        required=False, help_text="Offered on app pages as “reload”, e.g. kill -HUP 1; empty: none."
    )

    @classmethod
    def from_image(cls, image: BaseImage, tag: str) -> VersionForm:
        return cls(
            initial={
                "tag": tag,
                "description": image.description,
                "recipe": image.recipe,
                "default_command": shlex.join(image.default_command),
                "default_port": image.default_port,
                "reload_command": shlex.join(image.reload_command),
            }
        )

    def clean_default_command(self) -> list[str]:
        return _argv(self.cleaned_data["default_command"], "The default command")

    def clean_reload_command(self) -> list[str]:
        return _argv(self.cleaned_data["reload_command"], "The reload command")
