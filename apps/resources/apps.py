from django.apps import AppConfig


class ResourcesConfig(AppConfig):
    name = "apps.resources"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The executor (core) runs RESIZE operations with this feature's handler.
        from apps.instances import executor
        from apps.instances.models import Operation
        from apps.resources import apply

        executor.register(Operation.Kind.RESIZE, apply.resize)
