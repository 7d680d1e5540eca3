from __future__ import annotations

from django import forms

from apps.hosts.models import Host


class HostRegisterForm(forms.ModelForm):
    class Meta:
        model = Host
        fields = [
            "name",
            "address",
            "ssh_port",
            "ssh_user",
            "docker_transport",
            "docker_socket",
            "volume_root",
        ]


class ConfirmKeyForm(forms.Form):
    fingerprint = forms.CharField(
        max_length=300,
        help_text="Paste the SHA256 fingerprint you verified on the host's console, or the whole line "
        "“ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub” prints there.",
    )
