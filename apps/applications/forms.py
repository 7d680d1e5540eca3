from __future__ import annotations

import shlex
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from apps.accounts import permissions
from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import App, BaseImage, BuildState
from apps.applications.selectors import base_images_for_new_apps
from apps.applications.validators import parse_env_text, validate_argv
from apps.network.models import IPPool
from apps.network.services import default_pool


class CommandField(forms.CharField):
    """A command typed like a shell line, stored as argv (it is never run through a shell)."""

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().to_python(value)
        if not text:
            return []
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            raise ValidationError(
                f"Cannot split the command into arguments: {exc} (check the quotes)."
            ) from exc
        validate_argv(argv)
        return argv

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return shlex.join(value)
        return value


class EnvField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 4, "placeholder": "NAME=value, one per line"})

    def to_python(self, value: Any) -> dict[str, str]:  # type: ignore[override]
        return parse_env_text(super().to_python(value) or "")

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, dict):
            return "\n".join(f"{k}={v}" for k, v in value.items())
        return value


class AppCreateForm(forms.Form):
    slug = forms.CharField(
        max_length=40, help_text="Lowercase letters, digits and '-', 2-40 characters, starting with a letter."
    )
    team = forms.ModelChoiceField(queryset=Team.objects.none())
    base_image = forms.ModelChoiceField(queryset=BaseImage.objects.none())
    command = CommandField(required=False, help_text="Leave empty for the base image's default command.")
    port = forms.IntegerField(
        required=False, min_value=1, max_value=65535, help_text="Leave empty for the image's default."
    )
    env = EnvField(required=False, label="Environment")
    memory_mb = forms.IntegerField(initial=64, label="Memory (MiB)", min_value=1)
    cpus = forms.DecimalField(initial=Decimal("0.25"), label="CPU (cores)", max_digits=5, decimal_places=2)
    instances = forms.IntegerField(initial=1, min_value=0, help_text="How many to start now.")
    ip_pool = forms.ModelChoiceField(
        queryset=IPPool.objects.all(),
        required=False,
        label="IP pool",
        help_text="Instances get static addresses from it. Empty: the hosts' default bridge.",
    )
    address = forms.CharField(
        required=False,
        max_length=45,
        label="Static IP of the first instance",
        help_text="Optional: a free address of the pool, for example the IP of the VM this app replaces.",
    )

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["ip_pool"].initial = default_pool()
        self.fields["team"].queryset = permissions.teams_of(user)  # type: ignore[attr-defined]
        self.fields["base_image"].queryset = base_images_for_new_apps()  # type: ignore[attr-defined]
        self.fields["memory_mb"].min_value = settings.MIN_MEMORY_MB  # type: ignore[attr-defined]
        self.fields["instances"].max_value = settings.MAX_INSTANCES_PER_APP  # type: ignore[attr-defined]
        # With one choice there is nothing to choose: one team, the one recommended version.
        teams = list(permissions.teams_of(user)[:2])
        if len(teams) == 1:
            self.fields["team"].initial = teams[0]
        images = base_images_for_new_apps()
        recommended = list(images.filter(recommended=True)[:2])
        only = list(images[:2])
        if len(recommended) == 1:
            self.fields["base_image"].initial = recommended[0]
        elif len(only) == 1:
            self.fields["base_image"].initial = only[0]

    def clean_slug(self) -> str:
        # The service's own check, here too, so every error shows in one round.
        try:
            return services.slug_check(self.cleaned_data["slug"])
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["slug"]) from None


class StatePathsField(forms.Field):
    """One path per line; the model's validator says what a persistent path may be."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]


class DeleteForm(forms.Form):
    confirm = forms.CharField(required=False, help_text="Type the app's name to confirm.")

    def __init__(self, *args: Any, app: App, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = app

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"]
        if not value:
            raise ValidationError(f"Type {self.app.slug} in the box to confirm; nothing was deleted.")
        if value != self.app.slug:
            raise ValidationError(f"Type {self.app.slug} exactly to delete this app; nothing was deleted.")
        return value


class AppEditForm(forms.ModelForm):
    command = CommandField(required=False, help_text="Leave empty for the base image's default command.")
    env = EnvField(required=False, label="Environment")
    state_paths = StatePathsField(
        required=False,
        label="Persistent paths",
        help_text="Paths inside the app's files (one per line, like logs) kept in its persistent directory "
        "across releases.",
    )
    note = forms.CharField(
        required=False, max_length=500, help_text="Optional: why, shown with the new release."
    )

    class Meta:
        model = App
        fields = [
            "base_image",
            "command",
            "port",
            "env",
            "state_paths",
            "health_check",
            "health_path",
            "health_timeout",
        ]
        labels = {"health_timeout": "Health check timeout (s)"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        current = self.instance.base_image_id
        field = cast(forms.ModelChoiceField, self.fields["base_image"])
        field.queryset = BaseImage.objects.filter(
            deprecated=False, withdrawn=False, state=BuildState.PUBLISHED
        ) | BaseImage.objects.filter(pk=current)
        field.help_text = (
            "Every change here is a new release, rolled out one instance at a time behind the health check."
        )


class AddressForm(forms.Form):
    address = forms.CharField(max_length=45, label="Address")
    slot = forms.IntegerField(
        required=False, min_value=0, help_text="Empty: the next instance a scale-up makes."
    )


class ScaleForm(forms.Form):
    instances = forms.IntegerField(min_value=0)


class ReleaseForm(forms.Form):
    file = forms.FileField(
        label="Archive",
        help_text="A tar archive (.tar, .tar.gz, .tgz, .tar.xz) of the app's files: the new release.",
    )
    note = forms.CharField(required=False, max_length=500, help_text="Optional: what this release is.")
    batch = forms.IntegerField(
        required=False,
        min_value=1,
        label="Batch size",
        help_text="Instances recreated at a time, for this deploy or a rollback below (empty: one).",
    )


class RollbackForm(forms.Form):
    note = forms.CharField(required=False, max_length=500)
    batch = forms.IntegerField(required=False, min_value=1)
