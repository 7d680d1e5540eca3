"""The REST API: same services and permissions as the pages; another team's app is a 404."""

from __future__ import annotations

import io
import tarfile

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from apps.accounts.models import Team
from apps.applications.models import App, BaseImage
from apps.instances.models import Instance, Operation
from tests.helpers import api_token


def _client(user: User | None = None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def _new_app(client: APIClient, image: BaseImage, **extra: object) -> dict:
    body = {"slug": "web", "team": "alpha", "base_image": image.pk, "memory_mb": 64, "cpus": "0.25"}
    body.update(extra)
    response = client.post("/api/v1/apps/", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_developer_creates_scales_and_reads_an_app(owner: User, image: BaseImage) -> None:
    api = _client(owner)
    created = _new_app(api, image, command=["httpd", "-f"], env={"GREETING": "hi"}, port=8080)
    assert created["base_image_reference"] == "slipway/busybox:1"
    assert created["command"] == ["httpd", "-f"]

    scaled = api.post("/api/v1/apps/web/scale/", {"instances": 3}, format="json")
    assert scaled.status_code == 202
    op = scaled.json()
    assert op["kind"] == "scale" and op["status"] == "queued"
    assert (op["params"]["from"], op["params"]["to"]) == (0, 3)
    assert [p["slot"] for p in op["params"]["placement"]] == [0, 1, 2]
    assert op["requested_by"] == "owner"

    assert api.get(f"/api/v1/operations/{op['id']}/").json()["summary"].startswith("scale 0 → 3 (on h")
    instances = api.get("/api/v1/apps/web/instances/").json()
    assert [i["name"] for i in instances] == ["slw-web-0", "slw-web-1", "slw-web-2"]
    assert {i["state"] for i in instances} == {"pending"}
    detail = api.get("/api/v1/apps/web/").json()
    assert detail["instances"] == 3 and detail["running"] == 0
    assert [o["kind"] for o in api.get("/api/v1/apps/web/operations/").json()] == ["scale"]


def test_instance_actions_and_delete_return_202_with_the_operation(owner: User, image: BaseImage) -> None:
    api = _client(owner)
    _new_app(api, image, instances=2)
    instance = Instance.objects.get(app__slug="web", slot=0)
    for action in ("stop", "start", "restart"):
        response = api.post(f"/api/v1/instances/{instance.pk}/{action}/")
        assert response.status_code == 202, response.content
        assert response.json()["kind"] == action
    removed = api.delete(f"/api/v1/instances/{instance.pk}/")
    assert removed.status_code == 202 and removed.json()["kind"] == "remove"
    deleted = api.delete("/api/v1/apps/web/")
    assert deleted.status_code == 202 and deleted.json()["kind"] == "delete"
    assert set(Instance.objects.values_list("desired_state", flat=True)) == {"removed"}


def test_patch_changes_the_command_and_redeploys_but_refuses_limits(owner: User, image: BaseImage) -> None:
    api = _client(owner)
    _new_app(api, image, instances=1)
    response = api.patch("/api/v1/apps/web/", {"command": ["sleep", "60"], "env": {"A": "1"}}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["command"] == ["sleep", "60"]
    deploy = Operation.objects.get(kind=Operation.Kind.RELEASE)
    assert deploy.params["number"] == 2
    assert deploy.summary == "deploy release 2: command (the image's default) → sleep 60; env added: A"
    refused = api.patch("/api/v1/apps/web/", {"memory_mb": 512}, format="json")
    assert refused.status_code == 400
    assert "resource request" in str(refused.json()["memory_mb"])


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"slug": "Bad Slug"}, "slug", "lowercase letters"),
        ({"memory_mb": 2}, "memory_mb", "at least 6 MiB"),
        ({"cpus": "0"}, "cpus", "more than 0 cores"),
        ({"env": {"9X": "1"}}, "env", "not allowed"),
        ({"team": "beta"}, "team", "not a member of team beta"),
        ({"team": "nosuch"}, "team", "does not exist"),
        ({"command": "echo hi"}, "command", "list"),
        (
            {"base_image": "slipway/busybox:9"},
            "base_image",
            "No base image 'slipway/busybox:9'; give the id or",
        ),
    ],
)
def test_bad_input_gets_a_400_naming_the_field(
    owner: User, image: BaseImage, beta: Team, body: dict, field: str, message: str
) -> None:
    payload = {"slug": "web", "team": "alpha", "base_image": image.pk, "memory_mb": 64, "cpus": "0.25"}
    payload.update(body)
    response = _client(owner).post("/api/v1/apps/", payload, format="json")
    assert response.status_code == 400
    assert message in str(response.json().get(field, response.json()))
    assert not App.objects.exists()


def test_scale_errors_are_400_with_the_free_capacity(owner: User, image: BaseImage) -> None:
    api = _client(owner)
    _new_app(api, image, memory_mb=512)
    assert "cannot be negative" in str(
        api.post("/api/v1/apps/web/scale/", {"instances": -1}, format="json").json()
    )
    response = api.post("/api/v1/apps/web/scale/", {"instances": 5}, format="json")
    assert response.status_code == 400
    assert "room for 4 more" in str(response.json())


def test_another_teams_app_is_a_404_everywhere(owner: User, outsider: User, image: BaseImage) -> None:
    _new_app(_client(owner), image, instances=1)
    instance = Instance.objects.get()
    op = Operation.objects.get()
    api = _client(outsider)
    assert api.get("/api/v1/apps/").json()["results"] == []
    for method, url in [
        ("get", "/api/v1/apps/web/"),
        ("patch", "/api/v1/apps/web/"),
        ("delete", "/api/v1/apps/web/"),
        ("post", "/api/v1/apps/web/scale/"),
        ("get", "/api/v1/apps/web/instances/"),
        ("get", f"/api/v1/instances/{instance.pk}/"),
        ("post", f"/api/v1/instances/{instance.pk}/stop/"),
        ("delete", f"/api/v1/instances/{instance.pk}/"),
        ("get", f"/api/v1/operations/{op.pk}/"),
    ]:
        assert getattr(api, method)(url, {}, format="json").status_code == 404, (method, url)


def test_ops_see_every_app_and_leads_their_teams(
    owner: User, lead: User, ops: User, image: BaseImage
) -> None:
    _new_app(_client(owner), image)
    assert [a["slug"] for a in _client(ops).get("/api/v1/apps/").json()["results"]] == ["web"]
    assert [a["slug"] for a in _client(lead).get("/api/v1/apps/").json()["results"]] == ["web"]


def test_token_auth_works_and_anonymous_is_refused(owner: User, image: BaseImage) -> None:
    token = api_token(owner)
    anonymous = APIClient()
    assert anonymous.get("/api/v1/apps/").status_code == 401
    anonymous.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert anonymous.get("/api/v1/apps/").status_code == 200
    assert anonymous.get("/api/v1/base-images/").json()["results"][0]["reference"] == "slipway/busybox:1"


def test_an_archive_becomes_a_release_through_the_api(owner: User, image: BaseImage) -> None:
    api = _client(owner)
    _new_app(api, image, instances=1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("index.html")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    buffer.seek(0)
    buffer.name = "site.tar"
    response = api.post(
        "/api/v1/apps/web/releases/", {"file": buffer, "note": "first page"}, format="multipart"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["release"]["number"] == 2
    assert body["release"]["note"] == "first page"
    assert body["release"]["archive"]["files"] == 1
    assert body["release"]["current"] is True
    assert body["operation"]["kind"] == "release"
    assert [row["from"] for row in body["operation"]["params"]["instances"]] == [1]
    # While that deploy has not ended, another is refused with 409 naming it.
    buffer.seek(0)
    busy = api.post("/api/v1/apps/web/releases/", {"file": buffer}, format="multipart")
    assert busy.status_code == 409, busy.content
    assert busy.json()["operation"] == body["operation"]["id"]
    assert "Release 2 of web is being deployed" in busy.json()["detail"]
    rollback = api.post("/api/v1/apps/web/rollback/", {}, format="json")
    assert rollback.status_code == 409
    Operation.objects.filter(pk=body["operation"]["id"]).update(status=Operation.Status.SUCCEEDED)
    bad = io.BytesIO(b"not a tar")
    bad.name = "x.tar"
    refused = api.post("/api/v1/apps/web/releases/", {"file": bad}, format="multipart")
    assert refused.status_code == 400
    assert "Not a readable tar archive" in str(refused.json())
    listed = api.get("/api/v1/apps/web/releases/").json()["results"]
    assert [r["number"] for r in listed] == [2, 1]
    # The old upload endpoint makes a release too.
    buffer.seek(0)
    old = api.post("/api/v1/apps/web/volume/", {"file": buffer}, format="multipart")
    assert old.status_code == 202, old.content
    assert old.json()["kind"] == "release"


def test_the_schema_describes_the_api(owner: User) -> None:
    response = _client(owner).get("/api/schema/")
    assert response.status_code == 200
    text = response.content.decode()
    for path in ["/api/v1/apps/{slug}/scale/", "/api/v1/instances/{id}/restart/", "/api/v1/operations/{id}/"]:
        assert path in text


def test_only_ops_may_move_an_instance(owner: User, image: BaseImage, hosts: list) -> None:
    api = _client(owner)
    _new_app(api, image, instances=1)
    instance = Instance.objects.get()
    other = next(h for h in hosts if h.pk != instance.host_id)
    refused = api.post(f"/api/v1/instances/{instance.pk}/move/", {"host": other.name}, format="json")
    assert refused.status_code == 403
    assert "Only ops move instances" in str(refused.json())
    unknown = api.post(f"/api/v1/instances/{instance.pk}/move/", {"host": "nowhere"}, format="json")
    assert unknown.status_code == 400
    assert not Operation.objects.filter(kind=Operation.Kind.MOVE).exists()


def test_a_base_image_is_named_by_id_or_by_reference(owner: User, image: BaseImage) -> None:
    api = _client(owner)
    body = {
        "slug": "byref",
        "team": "alpha",
        "base_image": "slipway/busybox:1",
        "memory_mb": 64,
        "cpus": "0.25",
    }
    created = api.post("/api/v1/apps/", body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["base_image"] == image.pk
