from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "apps.alerts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Container events raise alerts and lifecycle webhooks the moment they are recorded.
        from apps.alerts import receivers  # noqa: F401
