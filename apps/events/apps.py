from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "apps.events"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The executor says when it replaces a container; its last lines are kept here.
        from apps.events import receivers  # noqa: F401
