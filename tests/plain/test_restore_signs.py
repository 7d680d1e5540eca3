"""Signs that the database is older than the fleet (apps.instances.ahead), read from what the
hosts list, and what they hold back: the lost operations of the apps concerned are failed rather
than run on the older record (the lab test tests/docker/test_restore_on_lab.py restores a real dump)."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone

from apps.applications import services
from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.hosts.transport import MANAGED_LABEL, ContainerSpec, ContainerState
from apps.instances import ahead
from apps.instances.models import Finding, Instance, Operation
from apps.instances.services import HELD, operations_hold_stale, operations_requeue_stale
from apps.instances.spec import APP_LABEL, INSTANCE_LABEL, RELEASE_STAMP, instance_spec


@pytest.fixture
def web(owner: User, image: BaseImage, hosts: list[Host]) -> App:
    app = services.app_create(
        user=owner, team=owner.memberships.get().team, slug="web", base_image=image, instances=2
    )
    Operation.objects.filter(app=app).update(status=Operation.Status.SUCCEEDED)
    return app


def _slot(app: App, slot: int) -> Instance:
    return Instance.objects.select_related("app", "host", "release").get(app=app, slot=slot)


def _container(instance: Instance, **labels: str) -> ContainerState:
    """The container as the listing shows it: the spec's labels, some changed."""
    made = dict(instance_spec(instance).labels)
    return ContainerState(
        id="c0ffee" * 10, name=instance.container_name, status="running", labels={**made, **labels}
    )


def test_the_container_is_stamped_with_its_release_and_the_stamp_is_left_out_of_its_digest(web: App) -> None:
    spec = instance_spec(_slot(web, 0))
    labels = dict(spec.labels)
    assert labels[RELEASE_STAMP] == str(web.release_id) and labels[INSTANCE_LABEL] == str(_slot(web, 0).pk)
    unstamped = tuple((k, v) for k, v in spec.labels if k != RELEASE_STAMP)
    restamped = (*unstamped, (RELEASE_STAMP, "999"))
    assert ContainerSpec(**{**spec.__dict__, "labels": unstamped}).digest == spec.digest
    assert ContainerSpec(**{**spec.__dict__, "labels": restamped}).digest == spec.digest
    # Any other label still makes another container.
    other = (*spec.labels, (APP_LABEL + ".x", "1"))
    assert ContainerSpec(**{**spec.__dict__, "labels": other}).digest != spec.digest


def test_containers_as_the_database_made_them_show_no_sign(web: App) -> None:
    zero, one = _slot(web, 0), _slot(web, 1)
    listings = [(zero.host, [_container(zero)]), (one.host, [_container(one)])]
    assert ahead.signs(listings) == []


def test_ids_the_database_has_not_given_out_yet_are_signs(web: App) -> None:
    zero, one = _slot(web, 0), _slot(web, 1)
    newest_release = web.release_id or 0
    signs = ahead.signs(
        [
            (zero.host, [_container(zero, **{RELEASE_STAMP: str(newest_release + 1)})]),
            (
                one.host,
                [
                    _container(one),
                    # A third instance made after the dump: no row under its name.
                    ContainerState(
                        id="ab" * 32,
                        name="slw-web-2",
                        status="running",
                        labels={MANAGED_LABEL: "1", APP_LABEL: "web", INSTANCE_LABEL: str(one.pk + 1)},
                    ),
                ],
            ),
        ]
    )
    assert [(s.host, s.name, s.kind, s.app_id) for s in signs] == [
        (zero.host, "slw-web-0", Finding.Kind.NEWER_CONTAINER, web.pk),
        (one.host, "slw-web-2", Finding.Kind.NEWER_CONTAINER, web.pk),
    ]
    assert f"made from release id {newest_release + 1}; the newest the database has is {newest_release}" in (
        signs[0].detail
    )
    assert f"made for instance id {one.pk + 1}; the newest the database has is {one.pk}" in signs[1].detail


def test_a_container_on_another_host_or_made_for_another_row_is_a_sign_unless_an_operation_works_on_the_app(
    web: App,
) -> None:
    zero, one = _slot(web, 0), _slot(web, 1)
    # Slot 0 runs on slot 1's host; slot 1's container was made for an older row of that name.
    listings = [(one.host, [_container(zero), _container(one, **{INSTANCE_LABEL: str(zero.pk)})])]
    signs = ahead.signs(listings)
    assert [(s.name, s.kind) for s in signs] == [
        ("slw-web-0", Finding.Kind.ELSEWHERE),
        ("slw-web-1", Finding.Kind.NEWER_CONTAINER),
    ]
    assert f"the database places it on {zero.host.name}" in signs[0].detail
    assert f"made for instance id {zero.pk}; the database has id {one.pk} under this name" in signs[1].detail
    # A move under way has its container on the old host for a while: not a sign.
    assert ahead.signs(listings, left_alone={web.pk}) == []


def test_containers_of_apps_the_database_does_not_know_are_no_sign(web: App, hosts: list[Host]) -> None:
    stranger = ContainerState(
        id="cd" * 32,
        name="slw-other-0",
        status="running",
        labels={MANAGED_LABEL: "1", APP_LABEL: "other", INSTANCE_LABEL: "999999", RELEASE_STAMP: "999999"},
    )
    assert ahead.signs([(hosts[0], [stranger])]) == []


def test_lost_operations_of_apps_ahead_of_the_database_are_failed_and_others_sent_again(
    web: App, owner: User, image: BaseImage
) -> None:
    other = services.app_create(
        user=owner, team=owner.memberships.get().team, slug="other", base_image=image, instances=0
    )
    an_hour_ago = timezone.now() - timedelta(hours=1)
    lost = Operation.objects.create(
        app=web, app_slug="web", kind=Operation.Kind.SCALE, status=Operation.Status.RUNNING
    )
    waiting = Operation.objects.create(app=other, app_slug="other", kind=Operation.Kind.SCALE)
    Operation.objects.filter(pk__in=[lost.pk, waiting.pk]).update(
        heartbeat_at=an_hour_ago, created_at=an_hour_ago
    )
    assert operations_hold_stale({web.pk}, 60, None, 60) == [lost.pk]
    lost.refresh_from_db()
    assert (lost.status, lost.error) == (Operation.Status.FAILED, HELD) and lost.finished_at is not None
    assert operations_requeue_stale(60, None, 60) == 1  # the other app's, as before
    waiting.refresh_from_db()
    assert waiting.status == Operation.Status.QUEUED


def test_the_reconcile_command_says_what_it_found_and_exits_0_when_the_fleet_is_not_ahead(
    web: App, hosts: list[Host]
) -> None:
    out = io.StringIO()
    call_command("reconcile", "--findings", stdout=out)  # the hosts' port refuses: unreachable
    printed = out.getvalue()
    assert "unreachable: h1:" in printed and "unreachable: h2:" in printed
    assert "newer than the database" not in printed and "held:" not in printed
