"""`manage.py reconcile`: one sweep now, as beat runs it, and what it found (docs/backup.md: the
step after a restore, before the workers and beat start again)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.instances.models import Finding
from apps.instances.reconcile import reconcile


class Command(BaseCommand):
    help = (
        "Run the reconcile once and print what it repaired and found; exit status 3 if the fleet "
        "is newer than the database (restored from a backup?)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--findings", action="store_true", help="Also list every open finding, host by host."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = reconcile()
        lines = [
            *(f"repair queued: {slug}: {'; '.join(reasons)}" for slug, reasons in report.repaired.items()),
            *(f"newer than the database: {what}" for what in report.ahead),
            *(f"held: {what}" for what in report.held),
            *(f"operation #{pk} failed rather than run again" for pk in report.operations_held),
            *(["long work (drains, moves of VMs, publishes) not sent again"] if report.jobs_held else []),
            *(f"unknown container: {what}" for what in report.unknown),
            *(f"unreachable: {what}" for what in report.unreachable),
            *(f"failed: {what}" for what in report.failed),
        ]
        for line in lines or ["nothing to repair, nothing found"]:
            self.stdout.write(line)
        if options["findings"]:
            for finding in (
                Finding.objects.filter(resolved_at=None)
                .select_related("host")
                .order_by("host__name", "kind", "subject")
            ):
                where = finding.host.name if finding.host else "-"
                self.stdout.write(
                    f"{where}\t{finding.get_kind_display()}\t{finding.subject}\t{finding.detail}"
                )
        if report.ahead:
            self.stderr.write(
                "The fleet is newer than the database (restored from a backup?): the apps concerned are "
                "left as they are. Read the findings (docs/backup.md, after a restore)."
            )
            raise SystemExit(3)
