"""The portal-wide activity page (who sees what, filters, following running operations) and
base image versions made outside the admin (draft from an existing one, refused inputs,
recommending one)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from apps.accounts.models import Membership, Team
from apps.applications import services
from apps.applications.models import BaseImage, BuildState
from apps.images import versions
from apps.instances.models import Operation

ACTIVITY = reverse("activity")


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def two_teams(owner: User, image: BaseImage, db: None) -> tuple[str, str]:
    """`web` of the owner's team and `other` of a team the owner is not in; one operation each."""
    services.app_create(
        user=owner, team=owner.memberships.get().team, slug="web", base_image=image, instances=1
    )
    stranger = User.objects.create_user("stranger")
    team = Team.objects.create(slug="others", name="Others")
    Membership.objects.create(team=team, user=stranger, role=Membership.Role.DEVELOPER)
    services.app_create(user=stranger, team=team, slug="other", base_image=image, instances=1)
    return "web", "other"


def test_ops_see_every_apps_activity_and_others_their_teams(
    two_teams: tuple[str, str], owner: User, ops: User
) -> None:
    everything = _client(ops).get(ACTIVITY).content.decode()
    assert ">web</a>" in everything and ">other</a>" in everything
    mine = _client(owner).get(ACTIVITY).content.decode()
    assert ">web</a>" in mine and ">other</a>" not in mine


def test_filters_narrow_the_list_and_say_when_nothing_matches(two_teams: tuple[str, str], ops: User) -> None:
    client = _client(ops)
    body = client.get(ACTIVITY, {"team": "others"}).content.decode()
    assert ">other</a>" in body and ">web</a>" not in body
    body = client.get(ACTIVITY, {"app": "we", "kind": "scale"}).content.decode()
    assert ">web</a>" in body and ">other</a>" not in body
    assert "Nothing matches these filters." in client.get(ACTIVITY, {"by": "nobody"}).content.decode()


def test_the_list_follows_operations_until_they_end(two_teams: tuple[str, str], ops: User) -> None:
    client = _client(ops)
    assert 'hx-trigger="every 2s"' in client.get(ACTIVITY).content.decode()  # both still queued
    Operation.objects.update(status=Operation.Status.SUCCEEDED)
    partial = client.get(ACTIVITY, HTTP_HX_REQUEST="true").content.decode()
    assert partial.strip().startswith('<div id="activity-list"') and "every 2s" not in partial


RECIPE = 'FROM scratch\nADD busybox /\nCMD ["httpd", "-f", "-p", "8080"]\n'


@pytest.fixture
def v1(db: None) -> BaseImage:
    return BaseImage.objects.create(name="slipway/web", tag="1", runtime="busybox", recipe=RECIPE)


def test_a_new_version_is_a_draft_made_from_an_existing_one(v1: BaseImage, ops: User, settings) -> None:  # type: ignore[no-untyped-def]
    client = _client(ops)
    url = reverse("images:new-version", args=[v1.pk])
    form = client.get(url).content.decode()
    assert 'value="2"' in form and "ADD busybox /" in form  # next tag and the recipe to edit

    response = client.post(
        url,
        {"tag": "2", "recipe": RECIPE, "default_command": "httpd -f -p 8080", "default_port": "8080"},
    )

    v2 = BaseImage.objects.get(name="slipway/web", tag="2")
    assert response.status_code == 302 and response["Location"].endswith(f"#version-{v2.pk}")
    assert (v2.state, v2.runtime, v2.default_command) == (
        BuildState.DRAFT,
        "busybox",
        ["httpd", "-f", "-p", "8080"],
    )


def test_a_refused_version_says_what_is_wrong_and_makes_nothing(v1: BaseImage, ops: User) -> None:
    client = _client(ops)
    url = reverse("images:new-version", args=[v1.pk])
    response = client.post(url, {"tag": "1", "recipe": "FROM debian\n", "default_command": "sh -c 'oops"})
    body = response.content.decode()
    assert response.status_code == 400
    assert "slipway/web:1 exists already; pick another tag, e.g. 2." in body
    assert "FROM scratch" in body  # the recipe's own message
    assert "Cannot split the command into arguments" in body  # the shared CommandField says it
    assert BaseImage.objects.count() == 1


def test_only_ops_make_versions(v1: BaseImage, owner: User) -> None:
    with pytest.raises(Exception, match="Only ops"):
        versions.version_create(user=owner, base=v1, tag="2", recipe=RECIPE)


def test_recommending_a_version_unmarks_the_one_before(v1: BaseImage, ops: User) -> None:
    v1.recommended = True
    v1.save()
    v2 = BaseImage.objects.create(
        name="slipway/web", tag="2", runtime="busybox", recipe=RECIPE, state=BuildState.DRAFT
    )
    with pytest.raises(ValidationError, match="only a published version"):
        versions.version_recommend(user=ops, image=v2)
    BaseImage.objects.filter(pk=v2.pk).update(state=BuildState.PUBLISHED)
    response = _client(ops).post(reverse("images:recommend", args=[v2.pk]))
    assert response.status_code == 302
    assert list(BaseImage.objects.filter(recommended=True).values_list("tag", flat=True)) == ["2"]
