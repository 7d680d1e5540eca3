"""Webhooks' signing secrets sealed at rest with SECRETS_KEYS, like apps' secrets: each row's
secret is sealed into secret_sealed and the clear column goes. Backwards, each is opened into
the clear column again (a secret no key in SECRETS_KEYS opens stops it, naming the webhook)."""

from typing import Any

from django.db import migrations, models

import apps.alerts.models
from apps.applications import secret_env


def seal(apps: Any, schema_editor: Any) -> None:
    Webhook = apps.get_model("alerts", "Webhook")
    for row in Webhook.objects.only("pk", "secret").order_by("pk"):
        Webhook.objects.filter(pk=row.pk).update(secret_sealed=secret_env.seal(row.secret))


def unseal(apps: Any, schema_editor: Any) -> None:
    Webhook = apps.get_model("alerts", "Webhook")
    for row in Webhook.objects.only("pk", "name", "secret_sealed").order_by("pk"):
        secret = secret_env.unseal(f"of the webhook {row.name} (id {row.pk})", row.secret_sealed)
        Webhook.objects.filter(pk=row.pk).update(secret=secret)


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhook",
            name="secret_sealed",
            field=models.TextField(
                default=apps.alerts.models._sealed_secret,
                editable=False,
                help_text="The signing secret, sealed with SECRETS_KEYS",
                validators=[apps.alerts.models.validate_sealed_secret],
            ),
        ),
        migrations.RunPython(seal, unseal),
        migrations.RemoveField(model_name="webhook", name="secret"),
    ]
