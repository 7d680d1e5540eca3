from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "apps.accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Each sign-in notes its backend, for API tokens (which have no session) to know it.
        from apps.accounts import receivers  # noqa: F401
