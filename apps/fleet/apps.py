from django.apps import AppConfig


class FleetConfig(AppConfig):
    """Work that spans hosts, above the core: placement reasons shown to ops, draining a host,
    the consolidation planner and what-if fleets, and the ops pages for hosts."""

    name = "apps.fleet"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from apps.fleet import receivers  # noqa: F401 - host events into the audit trail
