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


class SecretFields:
    """Secret variables on a form: a row per secret the app has (a new value replaces it, a box
    deletes it; the value is never shown), empty rows for new ones, and on the edit form boxes
    that mark plain variables secret. `clean_secrets` leaves `secrets` (NAME: value, or None to
    delete) and `make_secret` in cleaned_data for the service, which checks the names."""

    NEW_ROWS = 3
    fields: dict[str, forms.Field]
    cleaned_data: dict[str, Any]
    add_error: Any

    def add_secret_fields(self, existing: list[str], plain: list[str]) -> None:
        self.secret_names = existing
        for name in existing:
            self.fields[f"secret_value__{name}"] = forms.CharField(
                required=False,
                strip=False,
                label=f"New value of {name}",
                widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
            )
            self.fields[f"secret_delete__{name}"] = forms.BooleanField(required=False, label=f"Delete {name}")
        for row in range(self.NEW_ROWS):
            self.fields[f"new_secret_name_{row}"] = forms.CharField(
                required=False, label="Name", widget=forms.TextInput(attrs={"placeholder": "NAME"})
            )
            self.fields[f"new_secret_value_{row}"] = forms.CharField(
                required=False,
                strip=False,
                label="Value",
                widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
            )
        if plain:
            self.fields["make_secret"] = forms.MultipleChoiceField(
                required=False,
                choices=[(name, name) for name in plain],
                widget=forms.CheckboxSelectMultiple,
                label="Mark secret",
                help_text="These plain variables become secret, with their value.",
            )

    def is_secret_field(self, name: str) -> bool:
        return name.startswith(("secret_value__", "secret_delete__", "new_secret_")) or name == "make_secret"

    @property
    def plain_fields(self) -> list[Any]:
        return [self[name] for name in self.fields if not self.is_secret_field(name)]  # type: ignore[index]

    @property
    def secret_rows(self) -> list[tuple[str, Any, Any]]:
        return [
            (name, self[f"secret_value__{name}"], self[f"secret_delete__{name}"])  # type: ignore[index]
            for name in self.secret_names
        ]

    @property
    def new_secret_rows(self) -> list[tuple[Any, Any]]:
        return [
            (self[f"new_secret_name_{row}"], self[f"new_secret_value_{row}"])  # type: ignore[index]
            for row in range(self.NEW_ROWS)
        ]

    def clean_secrets(self) -> None:
        data = self.cleaned_data
        changes: dict[str, str | None] = {}
        for name in self.secret_names:
            value = data.pop(f"secret_value__{name}", "")
            if data.pop(f"secret_delete__{name}", False):
                if value:
                    self.add_error(
                        f"secret_delete__{name}", f"Either a new value for {name} or delete it, not both."
                    )
                changes[name] = None
            elif value:
                changes[name] = value
        for row in range(self.NEW_ROWS):
            name = data.pop(f"new_secret_name_{row}", "").strip()
            value = data.pop(f"new_secret_value_{row}", "")
            if not name and not value:
                continue
            if not name:
                self.add_error(f"new_secret_name_{row}", "Name the secret whose value you typed.")
            elif name in changes or name in self.secret_names:
                self.add_error(
                    f"new_secret_name_{row}",
                    f"{name} is already a secret: type its new value in its own row above.",
                )
            else:
                changes[name] = value
        data["secrets"] = changes
        data["make_secret"] = list(data.get("make_secret") or [])


class AppCreateForm(SecretFields, forms.Form):
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
        self.add_secret_fields([], [])
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

    def clean(self) -> dict[str, Any]:
        super().clean()
        self.clean_secrets()
        self.cleaned_data.pop("make_secret", None)
        return self.cleaned_data

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


class AppEditForm(SecretFields, forms.ModelForm):
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
        self.add_secret_fields(sorted(self.instance.secrets or {}), sorted(self.instance.env or {}))

    def clean(self) -> dict[str, Any]:
        super().clean()
        self.clean_secrets()
        return self.cleaned_data


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
