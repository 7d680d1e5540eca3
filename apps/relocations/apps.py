from django.apps import AppConfig


class RelocationsConfig(AppConfig):
    name = "apps.relocations"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "VM relocations"

    def ready(self) -> None:
        # Registers the plans' sealed secrets, so `manage.py rotate_secrets` seals them again.
        from apps.relocations import plan  # noqa: F401
