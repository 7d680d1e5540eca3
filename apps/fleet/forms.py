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
        max_length=100,
        help_text="Type or paste the SHA256 fingerprint you verified on the host's console.",
    )
