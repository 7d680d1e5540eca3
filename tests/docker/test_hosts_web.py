"""Ops register hosts in the browser and the API: the key is fetched, shown, and must be confirmed."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from apps.audit.models import AuditEntry
from apps.hosts.models import Host
from apps.lab import fleet


@pytest.fixture
def ops_client(ops: User) -> Client:
    client = Client()
    client.force_login(ops)
    return client


def _form(lab_host: fleet.LabHost, **extra: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "web-h1",
        "address": str(lab_host.address),
        "ssh_port": 22,
        "ssh_user": "root",
        "docker_transport": "ssh",
        "docker_socket": "",
        "volume_root": str(lab_host.volume_root),
    }
    data.update(extra)
    return data


def test_ops_register_a_host_confirm_its_key_and_it_becomes_active(
    ops_client: Client, lab: list[fleet.LabHost]
) -> None:
    lab_host = lab[0]
    response = ops_client.post(reverse("hosts:list"), _form(lab_host))
    assert response.status_code == 302
    host = Host.objects.get(name="web-h1")
    assert host.state == Host.State.PENDING
    assert host.host_key == ""
    expected = fleet_fingerprint(lab_host)
    page = ops_client.get(response["Location"]).content.decode()
    assert expected in page
    assert "Confirm and pin" in page
    # Registering and fetching the key again are host events, so rows of the audit trail.
    registered = AuditEntry.objects.get(action="host.registered", object_id=str(host.pk))
    assert (registered.actor_name, registered.source, registered.object_repr) == ("ops", "page", "web-h1")
    assert expected in registered.summary
    assert ops_client.post(reverse("hosts:refetch-key", args=[host.pk])).status_code == 200
    fetched = AuditEntry.objects.get(action="host.key-fetched", object_id=str(host.pk))
    assert (fetched.actor_name, fetched.source) == ("ops", "page") and expected in fetched.summary

    wrong = ops_client.post(reverse("hosts:confirm-key", args=[host.pk]), {"fingerprint": "SHA256:nope"})
    assert wrong.status_code == 400
    assert "not a SHA256 fingerprint" in wrong.content.decode()
    other = "SHA256:" + "A" * 43
    wrong = ops_client.post(reverse("hosts:confirm-key", args=[host.pk]), {"fingerprint": other})
    assert wrong.status_code == 400
    assert "does not match the key the host offered" in wrong.content.decode()
    host.refresh_from_db()
    assert host.host_key == ""

    # The whole line `ssh-keygen -lf` prints on the host is what people paste.
    right = ops_client.post(
        reverse("hosts:confirm-key", args=[host.pk]), {"fingerprint": f"256 {expected} root@web-h1 (ED25519)"}
    )
    assert right.status_code == 302
    host.refresh_from_db()
    assert host.state == Host.State.ACTIVE
    assert host.fingerprint == expected
    assert host.cpus and host.memory_mb
    event = host.events.get(action="key pinned")
    assert event.user is not None and event.user.username == "ops" and event.detail == expected

    # The htmx probe button returns only the state fragment.
    fragment = ops_client.post(reverse("hosts:probe", args=[host.pk]), HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert 'id="host-state"' in html and "<html" not in html
    assert "overlay2" in html


def fleet_fingerprint(lab_host: fleet.LabHost) -> str:
    from apps.hosts.transport import fingerprint

    return fingerprint(lab_host.host_public_key())


def test_an_unreachable_address_is_refused_and_nothing_is_saved(
    ops_client: Client, lab: list[fleet.LabHost]
) -> None:
    response = ops_client.post(reverse("hosts:list"), _form(lab[0], address="127.0.0.1", ssh_port=1))
    assert response.status_code == 200
    assert "Cannot fetch the SSH host key of 127.0.0.1:1" in response.content.decode()
    assert not Host.objects.exists()


def test_bad_input_gets_a_field_error(ops_client: Client, lab: list[fleet.LabHost]) -> None:
    response = ops_client.post(reverse("hosts:list"), _form(lab[0], name="Bad Name", ssh_port=0))
    html = response.content.decode()
    assert "lowercase letters" in html
    assert "greater than or equal to 1" in html
    assert not Host.objects.exists()


def test_host_pages_are_for_ops_only(owner: User, lab_hosts: list[Host]) -> None:
    client = Client()
    for url in [reverse("hosts:list"), reverse("hosts:detail", args=[lab_hosts[0].pk])]:
        assert client.get(url).status_code == 302  # anonymous: to the login page
        client.force_login(owner)
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
        client.logout()
    client.force_login(owner)
    assert client.post(reverse("hosts:probe", args=[lab_hosts[0].pk])).status_code == 302


def test_api_registers_and_confirms_for_ops_and_lists_for_everyone(
    ops: User, owner: User, lab: list[fleet.LabHost]
) -> None:
    api = APIClient()
    api.force_authenticate(owner)
    refused = api.post("/api/v1/hosts/", _form(lab[1], name="api-h2"), format="json")
    assert refused.status_code == 403

    api.force_authenticate(ops)
    created = api.post("/api/v1/hosts/", _form(lab[1], name="api-h2"), format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["state"] == "pending"
    assert body["fingerprint"] == ""
    assert body["offered_fingerprint"] == fleet_fingerprint(lab[1])
    row = AuditEntry.objects.get(action="host.registered", object_id=str(body["id"]))
    assert (row.actor_name, row.source) == ("ops", "api")

    bad = api.post(f"/api/v1/hosts/{body['id']}/confirm-key/", {"fingerprint": "SHA256:x"}, format="json")
    assert bad.status_code == 400
    assert "not a SHA256 fingerprint" in str(bad.json())
    other = "SHA256:" + "B" * 43
    bad = api.post(f"/api/v1/hosts/{body['id']}/confirm-key/", {"fingerprint": other}, format="json")
    assert bad.status_code == 400
    assert "does not match" in str(bad.json())

    good = api.post(
        f"/api/v1/hosts/{body['id']}/confirm-key/",
        {"fingerprint": body["offered_fingerprint"]},
        format="json",
    )
    assert good.status_code == 200
    assert good.json()["state"] == "active"

    api.force_authenticate(owner)
    listed = api.get("/api/v1/hosts/").json()
    assert [h["name"] for h in listed["results"]] == ["api-h2"]

    duplicate = APIClient()
    duplicate.force_authenticate(ops)
    again = duplicate.post("/api/v1/hosts/", _form(lab[1], name="api-h2"), format="json")
    assert again.status_code == 400
    assert "already exists" in str(again.json())
