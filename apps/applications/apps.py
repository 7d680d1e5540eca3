from django.apps import AppConfig


class ApplicationsConfig(AppConfig):
    """The core domain: an app (its team, image version, command, limits, environment), its
    volume and uploads. Instances, addresses and placement build on it. The label stays
    "catalog", the package's old name, so tables and migrations keep theirs."""

    name = "apps.applications"
    label = "catalog"
    default_auto_field = "django.db.models.BigAutoField"
