from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "apps.alerts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Container events raise alerts and lifecycle webhooks the moment they are recorded; the
        # webhooks' sealed signing secrets are registered for `manage.py rotate_secrets`.
        from apps.alerts import receivers, services  # noqa: F401
