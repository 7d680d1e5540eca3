"""manage.py synthetic_fleet --apps 500 --instances 2000 --hosts 60 --seed 1

A seeded made-up fleet for what-if planning on the consolidation page (/hosts/planner/). It is
stored as plain numbers: no host or app rows are made, so nothing is ever placed on it."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.fleet import consolidation, planner


class Command(BaseCommand):
    help = "Generate a seeded synthetic fleet for the consolidation planner, and plan it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--apps", type=int, default=500)
        parser.add_argument("--instances", type=int, default=2000)
        parser.add_argument("--hosts", type=int, default=60)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--name", default="", help="default: synthetic-<apps>x<instances>x<hosts>-<seed>")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"] or (
            f"synthetic-{options['apps']}x{options['instances']}x{options['hosts']}-{options['seed']}"
        )
        try:
            scenario = consolidation.scenario_save(
                name=name,
                apps=options["apps"],
                instances=options["instances"],
                hosts=options["hosts"],
                seed=options["seed"],
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        fleet = consolidation.scenario_fleet(scenario)
        result = planner.plan(fleet.hosts, fleet.items)
        self.stdout.write(
            f"{scenario.name}: {scenario.description}\n"
            f"  hosts {result.hosts_before} -> {result.hosts_after} (lower bound {result.lower_bound}, "
            f"ratio {result.ratio:.3f}), {len(result.moves)} moves, {len(result.emptied)} hosts emptied, "
            f"planned in {result.seconds:.3f} s\n"
            f"  see it at /hosts/planner/?scenario={scenario.pk}"
        )
