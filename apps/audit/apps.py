from django.apps import AppConfig


class AuditConfig(AppConfig):
    """One audit trail: every change a person or the portal makes, as one row. The floor of the
    layers beside hosts: the layers above record into it; it imports no other Slipway app."""

    name = "apps.audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The admin's log (each save and delete, bulk deletes included) and sign-ins, in and out
        # and failed, become rows of the trail.
        from apps.audit import receivers

        receivers.connect_bulk_logs()
