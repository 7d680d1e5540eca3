from django.apps import AppConfig


class RelocationsConfig(AppConfig):
    name = "apps.relocations"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "VM relocations"
