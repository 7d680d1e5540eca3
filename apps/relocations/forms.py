"""Forms of the relocation wizard. They only turn what was typed into the shapes the services
take (lines into lists, NAME=value lines into a dict); every rule, and every message about a
value, comes from apps.relocations.services and plan.py, so fields are lenient on purpose."""

from __future__ import annotations

from typing import Any

from django import forms
from django.template.defaultfilters import filesizeformat

from apps.accounts import permissions
from apps.accounts.models import Team
from apps.applications.forms import EnvField, SecretFields
from apps.applications.selectors import base_images_for_new_apps
from apps.network.models import IPPool
from apps.relocations.plan import FIELDS, MASK, SYSTEM_ENV


class RegisterForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none(), help_text="The team the app belongs to.")
    name = forms.CharField(required=False, help_text="What the VM is called, for people.")
    address = forms.CharField(
        required=False,
        label="VM address",
        help_text="The IP address the portal reaches the VM on over SSH.",
    )
    port = forms.CharField(
        required=False,
        initial="22",
        label="SSH port",
        widget=forms.NumberInput(attrs={"min": 1, "max": 65535}),
    )
    ssh_user = forms.CharField(required=False, initial="root", label="SSH user")

    def __init__(self, *args: Any, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = permissions.teams_of(user).order_by("slug")  # type: ignore[attr-defined]


class ConfirmKeyForm(forms.Form):
    # Never prefilled: the person must compare what the VM shows with what the portal was offered.
    fingerprint = forms.CharField(
        required=False,
        max_length=200,
        label="Fingerprint seen on the VM",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false", "size": 60}),
        help_text="Paste the SHA256 fingerprint the VM shows you, or the whole line “ssh-keygen -lf” prints there.",
    )


class InstallKeyForm(forms.Form):
    password = forms.CharField(
        required=False,
        strip=False,
        label="Password of the SSH user",
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text="Used once to add the portal's key to the user's authorized_keys; not kept.",
    )


class LinesField(forms.CharField):
    """One item per line; blank lines are dropped (exclusions, verify paths)."""

    widget = forms.Textarea(attrs={"rows": 3})

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(str(item) for item in value)
        return value


class ArgvField(forms.CharField):
    """A command as one argument a line, like the exec form of the console: nothing is split or
    unquoted, so an argument with spaces is just a line. Blank lines before and after are dropped."""

    widget = forms.Textarea(attrs={"rows": 4, "spellcheck": "false"})

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("strip", False)
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        lines = [line.rstrip("\r") for line in (super().to_python(value) or "").split("\n")]
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        return lines

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(str(item) for item in value)
        return value


class PlanForm(SecretFields, forms.Form):
    """The plan's FIELDS (apps.relocations.plan), named the same so the service's errors land next
    to their fields. Secrets are rows as on an app's form (forms.SecretFields): one per secret of
    the plan (suggested from the names that look secret, or saved), its value typed into a
    password box and never shown back; empty rows for more; boxes that mark plain ones secret."""

    app_slug = forms.CharField(required=False, label="App name", help_text="The app the VM becomes.")
    # A select whose value the service checks: a vanished or deprecated image gets its message.
    base_image = forms.CharField(required=False, widget=forms.Select)
    app_dir = forms.CharField(
        required=False,
        label="App directory on the VM",
        help_text="Copied into the app's volume and bound into the container at the same path.",
        widget=forms.TextInput(attrs={"list": "app-dir-candidates", "size": 50, "spellcheck": "false"}),
    )
    exclude = LinesField(
        required=False,
        label="Leave out",
        help_text="Paths inside the app directory not to copy (logs, caches), one per line.",
    )
    state_paths = LinesField(
        required=False,
        label="Persistent paths",
        help_text="Paths inside the app directory that the app writes and must keep (data, uploads, its own "
        "logs), one per line: they go to its persistent directory and stay across releases.",
    )
    command = ArgvField(
        required=False,
        help_text="One argument per line, as the VM runs it. Empty: the base image's default command.",
    )
    workdir = forms.CharField(
        required=False, label="Working directory", help_text="Empty: the base image's default."
    )
    env = EnvField(required=False, label="Environment")
    port = forms.CharField(
        required=False, label="Port", help_text="The port the app listens on.", widget=forms.NumberInput
    )
    memory_mb = forms.CharField(required=False, label="Memory (MiB)", widget=forms.NumberInput)
    cpus = forms.CharField(
        required=False, label="CPU (cores)", widget=forms.NumberInput(attrs={"step": "0.25"})
    )
    keep_address = forms.CharField(required=False, label="Address", widget=forms.Select)
    stop_command = ArgvField(
        required=False,
        label="Stop command on the VM",
        help_text="One argument per line; run at the cutover, and never again unless you move again.",
    )
    start_command = ArgvField(
        required=False,
        label="Start command on the VM",
        help_text="One argument per line; run by a rollback to make the VM serve again.",
    )
    health_path = forms.CharField(
        required=False,
        label="Health path",
        help_text="An HTTP path that answers when the app is up. Empty: a TCP connection is enough.",
    )
    verify_paths = LinesField(
        required=False,
        label="Verify paths",
        help_text="HTTP paths that must answer the same from the container as from the VM, one per line.",
    )

    def __init__(
        self,
        *args: Any,
        report: dict[str, Any],
        vm_address: str,
        pool: IPPool | None,
        current: dict[str, Any] | None = None,
        secret_names: list[str] | None = None,
        saved_secrets: list[str] | None = None,
        plain_names: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        current = current or {}
        # Errors the service gives about the secrets as a whole, shown with them.
        self.secret_errors: list[str] = []
        self.saved_secrets = set(saved_secrets or [])
        self.add_secret_fields(sorted(secret_names or []), sorted(plain_names or []))
        for name in self.secret_names:
            if name not in self.saved_secrets:
                self.fields[f"secret_value__{name}"].label = f"Value of {name}"
            self.fields[f"secret_delete__{name}"].label = f"Leave out {name}"
        images: list[tuple[str, str]] = [
            (str(image.pk), f"{image.reference} ({image.runtime})")
            for image in base_images_for_new_apps().order_by("name", "tag")
        ]
        if str(current.get("base_image") or "") not in {value for value, _ in images}:
            images.insert(0, ("", "Pick a base image"))
        self.fields["base_image"].widget.choices = images  # type: ignore[attr-defined]

        addresses: list[tuple[str, str]] = [("", "Take a new address")]
        for entry in report.get("addresses") or []:
            address = str(entry.get("address") or "")
            if not address or entry.get("ssh") or address == vm_address:
                continue
            why = pool.why_not(address) if pool is not None else "no IP pool serves new apps"
            label = f"Keep {address}" + (f" ({entry['dev']})" if entry.get("dev") else "")
            addresses.append((address, f"{label}: {why}" if why else label))
        kept = str(current.get("keep_address") or "")
        if kept and kept not in {value for value, _ in addresses}:
            addresses.append((kept, f"Keep {kept}"))
        self.fields["keep_address"].widget.choices = addresses  # type: ignore[attr-defined]
        self.fields["keep_address"].help_text = (
            "Keeping the VM's address moves it to the container at the cutover, so callers need no "
            "change. The address the portal reaches the VM on over SSH cannot be kept."
        )

        # A saved plan may have left out what the inspection could not read (secrets are masked):
        # say which, so they are added (as secrets) if the app needs them.
        seen = report.get("env") or {}
        hidden = sorted(
            name
            for name, value in seen.items()
            if MASK in value
            and name not in SYSTEM_ENV
            and name not in {*self.secret_names, *(plain_names or [])}
        )
        help_text = "NAME=value, one per line. Passwords, tokens and keys go in the secret variables below."
        if hidden:
            help_text += (
                f" The app on the VM also has {', '.join(hidden)}; the inspection does not copy secret "
                "values: add them as secrets below if the app needs them."
            )
        self.fields["env"].help_text = help_text

        self.candidates = [
            {
                "path": c.get("path", ""),
                "label": f"{filesizeformat(int(c.get('size_bytes') or 0))}, {c.get('files') or 0} files",
            }
            for c in report.get("candidates") or []
            if c.get("path")
        ]

    def clean(self) -> dict[str, Any]:
        super().clean()
        self.clean_secrets()
        env = self.cleaned_data.get("env") or {}
        for name in self.cleaned_data["make_secret"]:
            if name not in env:
                self.add_error(
                    "make_secret",
                    f"{name} is not in the environment above any more: add it back, or untick it.",
                )
        return self.cleaned_data

    def plan(self) -> dict[str, Any]:
        """The plan dict for services.relocation_plan, from a valid form. A secret row left empty
        is sent masked: the service keeps its saved value, or asks for one."""
        data = self.cleaned_data
        plan = {name: data[name] for name in FIELDS if name != "secrets"}
        env = dict(data["env"] or {})
        changes = data["secrets"]
        secrets: dict[str, str] = {name: MASK for name in self.secret_names if name not in changes}
        secrets |= {name: value for name, value in changes.items() if value is not None}
        for name in data["make_secret"]:
            secrets[name] = env.pop(name)
        plan["env"], plan["secrets"] = env, secrets
        return plan
