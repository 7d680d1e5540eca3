"""Every app made before releases becomes release 1 of itself, "in its volume": its containers
keep binding the volume read-write as before, so nothing is recreated by the upgrade. Its next
release moves it to the release layout (immutable files, a persistent directory)."""

from __future__ import annotations

from typing import Any

from django.db import migrations

CONFIG = ("command", "port", "env", "workdir", "volume_mount", "health_check", "health_path", "health_timeout")


def forwards(apps: Any, schema_editor: Any) -> None:
    App = apps.get_model("catalog", "App")
    Release = apps.get_model("catalog", "Release")
    Instance = apps.get_model("instances", "Instance")
    for app in App.objects.filter(release__isnull=True):
        release = Release.objects.create(
            app=app,
            number=1,
            base_image_id=app.base_image_id,
            code_number=1,
            source="volume",
            home_id=app.volume_home_id,
            changes=["the app as it was before releases (its files written in its volume)"],
            created_by_id=app.created_by_id,
            **{field: getattr(app, field) for field in CONFIG},
        )
        App.objects.filter(pk=app.pk).update(release=release)
        Instance.objects.filter(app=app).update(release=release)


class Migration(migrations.Migration):
    dependencies = [("instances", "0008_instance_release"), ("catalog", "0010_releases")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
