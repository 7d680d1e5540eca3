"""Models that moved between packages keep their rows: a database made before the move migrates
forward with nothing lost (the tables stay; only Django's idea of the owning app changes)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def _latest() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def _before(moved: dict[str, str | None]) -> list[tuple[str, str | None]]:
    """Every app at its latest migration, except those named, which are set back as given."""
    return [node for node in _latest() if node[0] not in moved] + list(moved.items())


def _migrate(targets: Sequence[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor


@pytest.mark.django_db(transaction=True)
def test_drains_and_fleet_scenarios_made_under_the_hosts_app_survive_the_move_to_fleet() -> None:
    # The last migrations before Drain and FleetScenario moved from the hosts app to the fleet app.
    # Apps made after the move (events, alerts) depend on it: they are set back to nothing too.
    before = _before(
        {
            "hosts": "0007_alter_host_volume_root",
            "fleet": None,
            "events": None,
            "alerts": None,
            "catalog": "0009_retainedvolume_reason",
            "instances": "0007_operation_heartbeat",
        }
    )
    old = _migrate(before).loader.project_state([(a, n) for a, n in before if n]).apps
    Host = old.get_model("hosts", "Host")
    OldDrain = old.get_model("hosts", "Drain")
    OldScenario = old.get_model("hosts", "FleetScenario")
    ContentType = old.get_model("contenttypes", "ContentType")
    host = Host.objects.create(name="old-host", address="10.213.0.99")
    OldDrain.objects.create(host=host, total=3, done=1, log="slw-web-0 → lab-h2 (1.0 s)\n")
    OldScenario.objects.create(name="what-if", hosts=[[1, "h", 1024, 2, True]], items=[])
    ContentType.objects.get_or_create(app_label="hosts", model="drain")

    new = _migrate(_latest()).loader.project_state(_latest()).apps
    Drain = new.get_model("fleet", "Drain")
    Scenario = new.get_model("fleet", "FleetScenario")
    NewContentType = new.get_model("contenttypes", "ContentType")

    assert list(Drain.objects.values_list("host__name", "total", "done", "log")) == [
        ("old-host", 3, 1, "slw-web-0 → lab-h2 (1.0 s)\n")
    ]
    assert list(Scenario.objects.values_list("name", flat=True)) == ["what-if"]
    # Admin history and permissions point at the model where it lives now.
    assert NewContentType.objects.filter(app_label="fleet", model="drain").exists()
    assert not NewContentType.objects.filter(app_label="hosts", model="drain").exists()


@pytest.mark.django_db(transaction=True)
def test_apps_from_before_releases_become_release_1_written_in_their_volume() -> None:
    before = _before({"catalog": "0009_retainedvolume_reason", "instances": "0007_operation_heartbeat"})
    old = _migrate(before).loader.project_state([(a, n) for a, n in before if n]).apps
    Team = old.get_model("accounts", "Team")
    Image = old.get_model("catalog", "BaseImage")
    Host = old.get_model("hosts", "Host")
    OldApp = old.get_model("catalog", "App")
    OldInstance = old.get_model("instances", "Instance")
    team = Team.objects.create(slug="old-team", name="Old")
    image = Image.objects.create(name="slipway/busybox", tag="1", runtime="busybox", default_port=8080)
    host = Host.objects.create(name="old-host", address="10.213.0.98")
    app = OldApp.objects.create(
        slug="legacy", team=team, base_image=image, command=["httpd"], env={"A": "1"}, volume_home=host
    )
    OldInstance.objects.create(app=app, slot=0, host=host, memory_mb=64, cpus="0.25", image=image)

    new = _migrate(_latest()).loader.project_state(_latest()).apps
    App = new.get_model("catalog", "App")
    Instance = new.get_model("instances", "Instance")
    migrated = App.objects.get(slug="legacy")
    release = migrated.release
    assert (release.number, release.source, release.code_number) == (1, "volume", 1)
    assert (release.command, release.env, release.base_image_id, release.home_id) == (
        ["httpd"],
        {"A": "1"},
        image.pk,
        host.pk,
    )
    # Its instance runs it: nothing is recreated by the upgrade (the volume stays bound as before).
    assert Instance.objects.get(app=migrated).release_id == release.pk


def _webhook_rows() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM alerts_webhook")
        return repr(cursor.fetchall())


@pytest.mark.django_db(transaction=True)
def test_webhooks_signing_secrets_are_sealed_by_the_migration_and_opened_again_backwards() -> None:
    from apps.alerts.models import Webhook  # the model as it is now, once migrated forward

    before = _before({"alerts": "0001_initial"})
    try:
        old = _migrate(before).loader.project_state([(a, n) for a, n in before if n]).apps
        Team = old.get_model("accounts", "Team")
        OldWebhook = old.get_model("alerts", "Webhook")
        team = Team.objects.create(slug="old-team", name="Old")
        secrets = {"lb": "ab" * 32, "ops": "cd" * 32}
        OldWebhook.objects.create(
            team=team, name="lb", url="https://10.1.2.3/", secret=secrets["lb"], topics=[]
        )
        OldWebhook.objects.create(
            team=None, name="ops", url="https://10.1.2.4/", secret=secrets["ops"], topics=[]
        )

        _migrate(_latest())
        assert not any(secret in _webhook_rows() for secret in secrets.values())
        assert {hook.name: hook.secret_opened() for hook in Webhook.objects.all()} == secrets

        back = _migrate(before).loader.project_state([(a, n) for a, n in before if n]).apps
        assert dict(back.get_model("alerts", "Webhook").objects.values_list("name", "secret")) == secrets
    finally:
        _migrate(_latest())
