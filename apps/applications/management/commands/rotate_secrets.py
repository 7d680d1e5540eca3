"""Seal every app's and release's secret variables, and everything else sealed with the same
keys (the registry password, VM moves' plans, webhooks' signing secrets), again with the first key of SECRETS_KEYS.

Rotation: put a new key first in SECRETS_KEYS (keep the old one after it), restart the portal and
its workers, run this, then drop the old key. `--new-key` prints a key to use.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.applications.secret_env import SecretUnreadable
from apps.applications.services import secrets_rotate


class Command(BaseCommand):
    help = "Seal all secret values again with the first key of SECRETS_KEYS (or print a new key)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--new-key", action="store_true", help="Print a new key and change nothing.")

    def handle(self, *args: Any, new_key: bool = False, **options: Any) -> None:
        if new_key:
            self.stdout.write(Fernet.generate_key().decode())
            return
        try:
            apps, releases, values, others = secrets_rotate()
        except SecretUnreadable as exc:
            raise CommandError(str(exc)) from None
        also = "".join(f", {count} of {name}" for name, count in others.items())
        self.stdout.write(
            f"Sealed {values} secret value(s) again with the first key: {apps} app(s), {releases} release(s)"
            f"{also}. Every value now opens with that key alone; the other keys can go from SECRETS_KEYS."
        )
