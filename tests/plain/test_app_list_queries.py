"""The app list costs the same number of queries for 3 apps or 30 (no query per row)."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.instances.models import Instance, Operation


def _seed(owner: User, image: BaseImage, host: Host, start: int, count: int) -> None:
    team = owner.memberships.get().team
    for n in range(start, start + count):
        app = App.objects.create(slug=f"app-{n}", team=team, base_image=image, instances=2)
        for slot in range(2):
            Instance.objects.create(
                app=app,
                slot=slot,
                host=host,
                memory_mb=64,
                cpus=Decimal("0.25"),
                state=Instance.State.RUNNING if slot == 0 else Instance.State.FAILED,
            )


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured.captured_queries)


def test_the_app_list_page_does_not_query_per_app(owner: User, image: BaseImage, hosts: list[Host]) -> None:
    client = Client()
    client.force_login(owner)
    _seed(owner, image, hosts[0], 0, 3)
    few = _queries(client, "/apps/")
    _seed(owner, image, hosts[0], 3, 27)
    many = _queries(client, "/apps/")
    assert few == many
    page = client.get("/apps/").content.decode()
    assert page.count("1 / 2 running") == 30
    assert page.count("1 failed") == 30


def test_the_app_list_api_does_not_query_per_app(owner: User, image: BaseImage, hosts: list[Host]) -> None:
    client = APIClient()
    client.force_login(owner)
    _seed(owner, image, hosts[0], 0, 3)
    few = _queries(client, "/api/v1/apps/")
    _seed(owner, image, hosts[0], 3, 27)
    many = _queries(client, "/api/v1/apps/")
    assert few == many
    assert client.get("/api/v1/apps/?limit=1").json()["results"][0]["running"] == 1


def test_the_app_list_pages_and_filters(owner: User, image: BaseImage, hosts: list[Host]) -> None:
    client = Client()
    client.force_login(owner)
    _seed(owner, image, hosts[0], 0, 60)
    first = client.get("/apps/").content.decode()
    assert first.count("running</span>") == 50
    assert "page 1 of 2 (60 apps)" in first
    second = client.get("/apps/?page=2").content.decode()
    assert second.count("running</span>") == 10
    found = client.get("/apps/?q=app-5").content.decode()
    # app-5 and app-50..app-59
    assert found.count("running</span>") == 11
    fragment = client.get("/apps/?q=app-59", HTTP_HX_REQUEST="true").content.decode()
    assert 'id="app-table"' in fragment and "<html" not in fragment
    assert "app-59" in fragment
    none = client.get("/apps/?team=beta").content.decode()
    assert "No app matches." in none


def test_an_app_being_deleted_says_so_and_the_list_follows_it_until_it_is_gone(
    owner: User, image: BaseImage
) -> None:
    app = App.objects.create(slug="leaving", team=owner.memberships.get().team, base_image=image)
    op = Operation.objects.create(app=app, app_slug=app.slug, kind=Operation.Kind.DELETE)
    client = Client()
    client.force_login(owner)
    page = client.get("/apps/").content.decode()
    assert "being deleted" in page and "0 / 0 running" not in page
    assert 'hx-trigger="every 1s"' in page  # the table polls itself
    polled = client.get("/apps/", headers={"HX-Request": "true"})
    assert polled.status_code == 200 and "being deleted" in polled.content.decode()
    Operation.objects.filter(pk=op.pk).update(status=Operation.Status.SUCCEEDED)
    app.delete()
    done = client.get("/apps/", headers={"HX-Request": "true"})
    assert done.status_code == 286 and "leaving" not in done.content.decode()  # the poll stops
