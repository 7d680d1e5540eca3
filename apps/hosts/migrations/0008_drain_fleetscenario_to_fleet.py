# Drain and FleetScenario now belong to the fleet app (its 0001 takes them over with their
# tables). Their content types follow, so admin history and permissions keep pointing at them.

from django.db import migrations


def _content_types(apps, schema_editor, old, new):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in ("drain", "fleetscenario"):
        if not ContentType.objects.filter(app_label=new, model=model).exists():
            ContentType.objects.filter(app_label=old, model=model).update(app_label=new)


def forwards(apps, schema_editor):
    _content_types(apps, schema_editor, "hosts", "fleet")


def backwards(apps, schema_editor):
    _content_types(apps, schema_editor, "fleet", "hosts")


class Migration(migrations.Migration):

    dependencies = [
        ('hosts', '0007_alter_host_volume_root'),
        ('fleet', '0001_initial'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='Drain'),
                migrations.DeleteModel(name='FleetScenario'),
            ],
            database_operations=[],
        ),
        migrations.RunPython(forwards, backwards),
    ]
