from django.apps import AppConfig


class HostsConfig(AppConfig):
    name = "apps.hosts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.hosts import receivers  # noqa: F401 - host events into the audit trail
