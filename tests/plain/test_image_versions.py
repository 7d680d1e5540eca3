"""Versions of a base image: one recommended, deprecated ones take no new apps, withdrawn ones no
new instances at all; an app on an older version is told of the recommended one; ops see per
version how many apps and instances still run it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import BaseImage
from apps.applications.selectors import image_usage, newer_recommended
from apps.hosts.models import Host


@pytest.fixture
def v2(image: BaseImage, hosts: list[Host]) -> BaseImage:
    newer = BaseImage.objects.create(name=image.name, tag="2", runtime=image.runtime, recommended=True)
    newer.hosts.set(hosts)
    return newer


def test_an_app_on_an_older_version_is_told_of_the_recommended_one(
    owner: User, alpha: Team, image: BaseImage, v2: BaseImage
) -> None:
    app = services.app_create(user=owner, team=alpha, slug="web", base_image=image)
    assert newer_recommended(app) == v2
    client = Client()
    client.force_login(owner)
    page = client.get("/apps/web/").content.decode()
    assert "A newer recommended version exists: <strong>slipway/busybox:2</strong>" in page
    services.app_update(user=owner, app=app, base_image=v2)
    app.refresh_from_db()
    assert newer_recommended(app) is None


def test_a_withdrawn_version_takes_no_new_app_and_no_new_instance(
    owner: User, alpha: Team, image: BaseImage, v2: BaseImage
) -> None:
    app = services.app_create(user=owner, team=alpha, slug="web", base_image=image)
    services.app_scale(user=owner, app=app, instances=1)
    BaseImage.objects.filter(pk=image.pk).update(withdrawn=True)
    app.refresh_from_db()
    with pytest.raises(ValidationError) as caught:
        services.app_scale(user=owner, app=app, instances=2)
    assert caught.value.message_dict["instances"] == [
        "slipway/busybox:1 is withdrawn: it takes no new instances. Move web to another version first "
        "(use slipway/busybox:2)."
    ]
    # Scaling down still works, and so does moving the app to another version.
    services.app_scale(user=owner, app=app, instances=0)
    services.app_update(user=owner, app=app, base_image=v2)
    with pytest.raises(ValidationError, match="withdrawn and takes no new instances; use slipway/busybox:2"):
        services.app_create(
            user=owner, team=alpha, slug="other", base_image=BaseImage.objects.get(pk=image.pk)
        )


def test_only_one_version_of_a_name_is_recommended_and_never_a_withdrawn_one(
    image: BaseImage, v2: BaseImage
) -> None:
    image.recommended = True
    with pytest.raises(ValidationError, match="slipway/busybox:2 is the recommended version"):
        image.full_clean()
    v2.withdrawn = True
    with pytest.raises(ValidationError, match="cannot be the recommended one"):
        v2.full_clean()


def test_ops_see_how_many_apps_and_instances_run_each_version(
    owner: User, alpha: Team, image: BaseImage, v2: BaseImage, ops: User
) -> None:
    for slug, version, count in (("app-a", image, 2), ("app-b", image, 1), ("app-c", v2, 1)):
        app = services.app_create(user=owner, team=alpha, slug=slug, base_image=version)
        services.app_scale(user=owner, app=app, instances=count)
    figures = {i.reference: (getattr(i, "app_count"), getattr(i, "instance_count")) for i in image_usage()}  # noqa: B009 - annotations
    assert figures == {"slipway/busybox:1": (2, 3), "slipway/busybox:2": (1, 1)}
    # The admin is for ops with the admin's permissions (seed_demo makes its ops a superuser).
    ops.is_superuser = True
    ops.save(update_fields=["is_superuser"])
    client = Client()
    client.force_login(ops)
    listing = client.get("/admin/catalog/baseimage/")
    assert listing.status_code == 200
    assert '<td class="field-instances_on_it">3</td>' in listing.content.decode()
