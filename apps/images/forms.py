from __future__ import annotations

from django import forms

from apps.applications.forms import CommandField
from apps.applications.models import BaseImage
from apps.images.starters import Starter


class VersionForm(forms.Form):
    """A new version of an image, prefilled from the version it is made from."""

    tag = forms.CharField(max_length=64, help_text="The version, e.g. 2 or 3.12.")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    recipe = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "code"}),
        help_text=(
            "FROM debian:<release> with PACKAGES, or FROM scratch with ADD <rootfs> /; then ENV, CMD, "
            "ENTRYPOINT, WORKDIR, LABEL, EXPOSE, USER."
        ),
    )
    default_command = CommandField(
        required=False, help_text="What an app runs unless it says otherwise, as words: httpd -f -p 8080"
    )
    default_port = forms.IntegerField(required=False, min_value=1, max_value=65535)
    reload_command = CommandField(
        required=False, help_text="Offered on app pages as “reload”, e.g. kill -HUP 1; empty: none."
    )

    @classmethod
    def from_image(cls, image: BaseImage, tag: str) -> VersionForm:
        return cls(
            initial={
                "tag": tag,
                "description": image.description,
                "recipe": image.recipe,
                "default_command": image.default_command,
                "default_port": image.default_port,
                "reload_command": image.reload_command,
            }
        )


class ImageForm(VersionForm):
    """A new base image: its name and runtime, then what a version has."""

    name = forms.CharField(max_length=100, help_text="A Docker repository name, e.g. slipway/java-tomcat.")
    runtime = forms.CharField(
        max_length=40, help_text="What it runs, shown to developers: jvm, node, python, ..."
    )
    field_order = ["name", "tag", "runtime", "description", "recipe", "default_command", "default_port"]

    @classmethod
    def from_starter(cls, starter: Starter | None) -> ImageForm:
        if starter is None:
            return cls(initial={"tag": "1", "recipe": "FROM debian:bookworm\nPACKAGES \n"})
        return cls(
            initial={
                "name": starter.name,
                "tag": starter.tag,
                "runtime": starter.runtime,
                "description": starter.description,
                "recipe": starter.recipe,
                "default_port": starter.port,
            }
        )
