"""Rows for load and what-if work: N apps with M instances in a team (no containers are made).

manage.py seed_apps --team demo --apps 500 --instances 2000 --seed 1
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from apps.accounts.models import Team
from apps.applications.models import App, BaseImage, Release
from apps.hosts.models import Host
from apps.instances.models import Instance

SIZES = [(64, "0.10"), (128, "0.25"), (256, "0.25"), (512, "0.50"), (1024, "1.00")]


class Command(BaseCommand):
    help = "Create N apps with M instances in total (database rows only), for benchmarks and planning."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--team", required=True, help="team slug (created if missing)")
        parser.add_argument("--apps", type=int, default=500)
        parser.add_argument("--instances", type=int, default=2000)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--prefix", default="seed")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        apps, instances = options["apps"], options["instances"]
        if apps < 1 or instances < 0:
            raise CommandError("--apps must be at least 1 and --instances 0 or more")
        rng = random.Random(options["seed"])  # noqa: S311 - reproducible test data, not secrets
        team, _ = Team.objects.get_or_create(slug=options["team"], defaults={"name": options["team"]})
        image = BaseImage.objects.order_by("pk").first() or BaseImage.objects.create(
            name="slipway/seed", tag="1", runtime="seed"
        )
        hosts = list(Host.objects.all()[:50]) or [
            Host.objects.create(name="seed-host", address="seed-host.invalid", state=Host.State.ACTIVE)
        ]
        created = App.objects.bulk_create(
            [
                App(
                    slug=f"{options['prefix']}-{n:04d}",
                    team=team,
                    base_image=image,
                    memory_mb=(size := rng.choice(SIZES))[0],
                    cpus=Decimal(size[1]),
                )
                for n in range(apps)
            ]
        )
        # Each its release 1 (no files), as app_create makes it.
        releases = Release.objects.bulk_create(
            [
                Release(app=app, number=1, base_image=image, code_number=1, changes=["no files yet"])
                for app in created
            ]
        )
        for app, release in zip(created, releases, strict=True):
            app.release = release
        # Every app gets one instance, the rest are spread at random (some apps get many).
        counts = [1] * apps if instances >= apps else [0] * apps
        for _ in range(instances - sum(counts)):
            counts[rng.randrange(apps)] += 1
        states = [Instance.State.RUNNING] * 8 + [Instance.State.STOPPED, Instance.State.FAILED]
        rows = []
        for app, count in zip(created, counts, strict=True):
            app.instances = count
            for slot in range(count):
                rows.append(
                    Instance(
                        app=app,
                        slot=slot,
                        host=rng.choice(hosts),
                        memory_mb=app.memory_mb,
                        cpus=app.cpus,
                        image_id=app.base_image_id,
                        release=app.release,
                        state=rng.choice(states),
                    )
                )
        App.objects.bulk_update(created, ["instances", "release"])
        Instance.objects.bulk_create(rows, batch_size=1000)
        self.stdout.write(f"{apps} apps with {len(rows)} instances in team {team.slug}")
