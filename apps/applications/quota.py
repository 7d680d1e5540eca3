"""Team quotas: what a team's apps reserve (limits x desired instances) against what ops allow.

Scale-ups and resizes both come through `check_quota`, so neither can pass a quota."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db.models import DecimalField, F, IntegerField, Sum

from apps.accounts.models import Team
from apps.applications.models import App


@dataclass(frozen=True)
class Usage:
    memory_mb: int
    cpus: Decimal
    quota_memory_mb: int | None
    quota_cpus: Decimal | None

    @property
    def free_memory_mb(self) -> int | None:
        return None if self.quota_memory_mb is None else self.quota_memory_mb - self.memory_mb

    @property
    def free_cpus(self) -> Decimal | None:
        return None if self.quota_cpus is None else self.quota_cpus - self.cpus


def usage(team: Team) -> Usage:
    totals = App.objects.filter(team=team).aggregate(
        memory=Sum(F("memory_mb") * F("instances"), output_field=IntegerField()),
        cpus=Sum(F("cpus") * F("instances"), output_field=DecimalField(max_digits=12, decimal_places=2)),
    )
    return Usage(
        memory_mb=int(totals["memory"] or 0),
        cpus=Decimal(totals["cpus"] or 0).quantize(Decimal("0.01")),
        quota_memory_mb=team.quota_memory_mb,
        quota_cpus=team.quota_cpus,
    )


def check_quota(team: Team, *, add_memory_mb: int, add_cpus: Decimal, what: str) -> None:
    """Refuse, with the figures, a change that takes the team past its quota."""
    now = usage(team)
    errors = []
    if now.quota_memory_mb is not None and add_memory_mb > 0:
        after = now.memory_mb + add_memory_mb
        if after > now.quota_memory_mb:
            errors.append(
                f"memory: {after} MiB after {what}, over team {team.slug}'s quota of {now.quota_memory_mb} MiB "
                f"by {after - now.quota_memory_mb} MiB"
            )
    if now.quota_cpus is not None and add_cpus > 0:
        after_cpus = now.cpus + add_cpus
        if after_cpus > now.quota_cpus:
            errors.append(
                f"CPU: {after_cpus} cores after {what}, over team {team.slug}'s quota of {now.quota_cpus} "
                f"by {after_cpus - now.quota_cpus}"
            )
    if errors:
        raise ValidationError(
            f"Quota exceeded: {'; '.join(errors)}. Ask ops to raise the quota, or free some."
        )
