from django.apps import AppConfig


class AuditConfig(AppConfig):
    """One audit trail: every change a person or the portal makes, as one row. The floor of the
    layers beside hosts: the layers above record into it; it imports no other Slipway app."""

    name = "apps.audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.audit import receivers  # noqa: F401 - connects the admin's log and sign-ins
