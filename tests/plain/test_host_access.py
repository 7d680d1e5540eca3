"""What ops need to let the portal onto a server: the portal's key as the authorized_keys line,
on the hosts page (before registering), on each host's page and in the API, with the agent the
host runs once probed."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from apps.hosts import gateway
from apps.hosts.models import Host


def test_the_pages_and_the_api_give_the_authorized_keys_line(ops: User, hosts: list[Host]) -> None:
    line = gateway.portal_public_key()
    assert line.startswith("ssh-ed25519 ") and line.endswith(" slipway-portal")
    client = Client()
    client.force_login(ops)
    listing = client.get(reverse("hosts:list")).content.decode()
    assert line in listing and "/root/.ssh/authorized_keys" in listing
    hosts[0].facts = {"agent_version": 8}
    hosts[0].save()
    detail = client.get(reverse("hosts:detail", args=[hosts[0].pk])).content.decode()
    assert line in detail and "must be <strong>root</strong>" in detail
    assert "hostagent 8 in <code>/opt/slipway/agent/current</code>" in detail

    api = APIClient()
    api.force_authenticate(ops)
    document = api.get(f"/api/v1/hosts/{hosts[0].pk}/").json()
    assert document["authorized_keys_line"] == line
    assert document["agent_version"] == 8
    assert api.get(f"/api/v1/hosts/{hosts[1].pk}/").json()["agent_version"] is None
