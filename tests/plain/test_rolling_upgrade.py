"""Rolling onto another base image version (a release that changes only that) without hosts: what
the owner and ops may ask for and what they are told, the health check against real local
sockets, the progress on the app page, the images page and the API. The roll itself on the lab
fleet: tests/docker/test_rolling_upgrade_on_lab.py; releases: tests/plain/test_releases.py."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from rest_framework.test import APIClient

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import App, BaseImage, BuildState
from apps.hosts.models import Host
from apps.images import publish
from apps.instances import health
from apps.instances.models import Instance, Operation


@pytest.fixture
def v2(image: BaseImage, hosts: list[Host]) -> BaseImage:
    newer = BaseImage.objects.create(
        name=image.name, tag="2", runtime=image.runtime, recommended=True, default_port=8080
    )
    newer.hosts.set(hosts)
    return newer


@pytest.fixture
def web(owner: User, alpha: Team, image: BaseImage) -> App:
    app = services.app_create(user=owner, team=alpha, slug="web", base_image=image, port=8080)
    services.app_scale(user=owner, app=app, instances=3)
    return app


def test_an_upgrade_pins_the_new_version_and_lists_every_instance(
    owner: User, web: App, image: BaseImage, v2: BaseImage
) -> None:
    op = services.app_upgrade(user=owner, app=web, base_image=v2)
    assert op is not None and op.kind == Operation.Kind.RELEASE
    assert op.summary == "deploy release 2: base image slipway/busybox:1 → slipway/busybox:2"
    assert [(r["name"], r["state"], r["from"]) for r in op.params["instances"]] == [
        (f"slw-web-{slot}", "waiting", 1) for slot in range(3)
    ]
    web.refresh_from_db()
    assert web.base_image == v2 and web.release is not None and web.release.number == 2
    # Until the worker gets to them, the instances still run (and would be recreated on) release 1.
    assert set(Instance.objects.filter(app=web).values_list("image", "release__number")) == {(image.pk, 1)}
    with pytest.raises(ValidationError, match="Release 2 of web is being deployed"):
        services.app_upgrade(user=owner, app=web, base_image=image)


def test_changing_the_image_with_other_settings_is_one_release_rolled_and_rolled_back_as_one(
    owner: User, web: App, v2: BaseImage
) -> None:
    services.app_update(user=owner, app=web, base_image=v2, command=["httpd", "-f"], health_path="/ok")
    web.refresh_from_db()
    assert (web.base_image, web.command, web.health_path) == (v2, ["httpd", "-f"], "/ok")
    deploy = web.operations.get(kind=Operation.Kind.RELEASE)
    assert deploy.params["number"] == 2
    # (The path alone does not change a TCP check, so it is not said.)
    assert web.release is not None
    assert web.release.changes == [
        "base image slipway/busybox:1 → slipway/busybox:2",
        "command (the image's default) → httpd -f",
    ]


def test_health_settings_alone_make_a_release_that_is_checked_and_bad_ones_are_refused(
    owner: User, web: App
) -> None:
    services.app_update(user=owner, app=web, health_check="none", health_timeout=60)
    web.refresh_from_db()
    assert web.release is not None
    assert web.release.changes == ["health check TCP within 30 s → none"]
    with pytest.raises(ValidationError, match="Release 2 of web is being deployed"):
        services.app_update(user=owner, app=web, health_timeout=61)
    Operation.objects.filter(kind=Operation.Kind.RELEASE).update(status=Operation.Status.SUCCEEDED)
    with pytest.raises(ValidationError) as caught:
        services.app_update(user=owner, app=web, health_path="no slash", health_timeout=0)
    assert "the health check path starts with '/'" in str(caught.value.message_dict["health_path"])
    assert caught.value.message_dict["health_timeout"]


def test_unpublished_and_withdrawn_versions_cannot_be_rolled_onto(
    owner: User, web: App, image: BaseImage, v2: BaseImage
) -> None:
    draft = BaseImage.objects.create(name=image.name, tag="3", runtime="busybox", state=BuildState.DRAFT)
    with pytest.raises(
        ValidationError, match=r"slipway/busybox:3 is not published \(draft\); use slipway/busybox:2"
    ):
        services.app_upgrade(user=owner, app=web, base_image=draft)
    BaseImage.objects.filter(pk=v2.pk).update(withdrawn=True, recommended=False)
    with pytest.raises(ValidationError, match="slipway/busybox:2 is withdrawn and takes no new instances"):
        services.app_upgrade(user=owner, app=web, base_image=BaseImage.objects.get(pk=v2.pk))
    web.refresh_from_db()
    assert web.base_image == image and not web.operations.filter(kind=Operation.Kind.RELEASE).exists()
    assert list(web.releases.values_list("number", flat=True)) == [1]


def test_ops_roll_every_app_on_older_versions_and_owners_may_not(
    owner: User, ops: User, alpha: Team, web: App, image: BaseImage, v2: BaseImage
) -> None:
    empty = services.app_create(user=owner, team=alpha, slug="empty", base_image=image)
    with pytest.raises(PermissionDenied, match="Only ops"):
        services.apps_upgrade(user=owner, target=v2)
    started, refused = services.apps_upgrade(user=ops, target=v2)
    assert [op.app_slug for op in started] == ["web"] and refused == []
    empty.refresh_from_db()
    assert empty.base_image == v2  # nothing to roll: only the pin moves
    started, refused = services.apps_upgrade(user=ops, target=image, apps=[web])
    assert started == [] and len(refused) == 1
    assert refused[0].startswith("web: Release 2 of web is being deployed (operation ")
    assert refused[0].endswith("Wait for it to finish, then try again: nothing was changed.")


# --- the health check, against real sockets on 127.0.0.1 -----------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_probe_tells_healthy_from_not(server: int) -> None:
    assert health.probe("127.0.0.1", server, health.Check("tcp", "/", 1)) == ""
    assert health.probe("127.0.0.1", server, health.Check("http", "/ok", 1)) == ""
    assert health.probe("127.0.0.1", server, health.Check("http", "/down", 1)) == "answered HTTP 503"
    assert "ConnectionRefusedError" in health.probe("127.0.0.1", _closed_port(), health.Check("tcp", "/", 1))


def test_waiting_for_an_instance_gives_up_after_the_timeout_with_what_it_tried(
    owner: User, web: App, server: int
) -> None:
    instance = Instance.objects.select_related("app__base_image", "host", "image").get(app=web, slot=0)
    instance.address = "127.0.0.1"
    assert instance.release is not None
    instance.release.port = server
    assert health.wait_healthy(instance, health.Check("http", "/ok", 2)) == ""
    clock = iter(range(0, 100, 1))
    why = health.wait_healthy(
        instance, health.Check("http", "/down", 3), sleep=lambda s: None, clock=lambda: float(next(clock))
    )
    assert why == (
        f"slw-web-0 did not pass its health check within 3 s: GET http://127.0.0.1:{server}/down answered HTTP 503"
    )
    assert health.wait_healthy(instance, health.Check("none", "/", 1)) == ""


# --- pages and API -------------------------------------------------------------------------------


def test_the_app_page_offers_the_roll_and_shows_it_per_instance(
    owner: User, web: App, image: BaseImage, v2: BaseImage
) -> None:
    client = Client()
    client.force_login(owner)
    page = client.get("/apps/web/").content.decode()
    assert (
        'id="upgrade-form"' in page
        and f'<option value="{v2.pk}" selected>slipway/busybox:2 (recommended)' in page
    )
    assert "TCP connect to port 8080, within 30 s" in page
    response = client.post("/apps/web/upgrade/", {"base_image": v2.pk}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    live = response.content.decode()
    assert "Deploy of release 2 (from 1)</strong>" in live
    assert live.count('data-roll-state="waiting"') == 3
    # The activity keeps each deploy's steps per instance.
    activity = client.get("/apps/web/activity/").content.decode()
    assert "<li>slw-web-2 (h1, was 1): waiting</li>" in activity
    refused = client.post("/apps/web/upgrade/", {"base_image": "x"}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 422
    assert (
        "Pick a published version of slipway/busybox to roll onto (available: slipway/busybox:1)"
        in refused.content.decode()
    )


def test_the_api_rolls_an_app_and_reports_the_instances_version(
    owner: User, web: App, image: BaseImage, v2: BaseImage
) -> None:
    api = APIClient()
    api.force_authenticate(owner)
    response = api.post("/api/v1/apps/web/upgrade/", {"base_image": "slipway/busybox:2"}, format="json")
    assert response.status_code == 202, response.data
    assert response.data["kind"] == "release" and len(response.data["params"]["instances"]) == 3
    assert {i["image"] for i in api.get("/api/v1/apps/web/instances/").data} == {"slipway/busybox:1"}
    again = api.post("/api/v1/apps/web/upgrade/", {"base_image": "slipway/busybox:9"}, format="json")
    assert again.status_code == 400
    assert "No base image 'slipway/busybox:9'" in str(again.data["base_image"])


def test_ops_publish_and_roll_from_the_images_page(
    ops: User, owner: User, web: App, image: BaseImage, v2: BaseImage
) -> None:
    client = Client()
    client.force_login(ops)
    page = client.get("/images/").content.decode()
    assert 'data-version="slipway/busybox:2"' in page and "Roll 1 app onto it" in page
    draft = BaseImage.objects.create(
        name=image.name, tag="3", runtime="busybox", state=BuildState.DRAFT, recipe="FROM scratch\nRUN true\n"
    )
    response = client.post(f"/images/{draft.pk}/publish/", follow=True)
    text = response.content.decode()
    assert "slipway/busybox:3 not published" in text and "line 2: RUN is not supported" in text
    response = client.post(f"/images/{v2.pk}/roll/", follow=True)
    assert "Rolling 1 app(s) onto slipway/busybox:2: web." in response.content.decode()
    assert web.operations.filter(kind=Operation.Kind.RELEASE).count() == 1
    # Developers see the catalog but have no buttons.
    client.force_login(owner)
    assert "Publish</button>" not in client.get("/images/").content.decode()


def test_a_recipe_is_checked_before_anything_is_built(ops: User, image: BaseImage) -> None:
    draft = BaseImage.objects.create(name=image.name, tag="3", runtime="busybox", state=BuildState.DRAFT)
    with pytest.raises(ValidationError, match="has no recipe to build from"):
        publish.image_publish(user=ops, image=draft)
    draft.recipe = "FROM scratch\nADD busybox /\n"
    draft.save()
    with pytest.raises(PermissionDenied, match="Only ops publish"):
        publish.image_publish(user=User.objects.create(username="dev"), image=draft)
