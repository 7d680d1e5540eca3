from django.apps import AppConfig


class ImagesConfig(AppConfig):
    """Base images: recipes, root filesystems built from Debian's packages, the build into a
    `docker load` archive, and publishing onto the hosts. A feature above the core: apps pin
    a version, this package makes and ships them."""

    name = "apps.images"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the publish job kind, so every process's reconcile knows it, and the sealed
        # registry password, so `manage.py rotate_secrets` seals it again.
        from apps.images import publish, registry_settings  # noqa: F401
