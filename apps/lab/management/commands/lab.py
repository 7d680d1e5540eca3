from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.lab import fleet
from apps.lab.register import fix_lab_network, register_hosts, register_images, register_pool


class Command(BaseCommand):
    help = "Build (up), remove (down) or show (status) the lab fleet of Docker hosts on this machine."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["up", "down", "status"])
        parser.add_argument(
            "--hosts", type=int, default=None, help="number of Docker hosts (default: LAB_HOSTS)"
        )
        parser.add_argument(
            "--no-register", action="store_true", help="do not register the hosts in the portal"
        )
        parser.add_argument(
            "--purge", action="store_true", help="with down: also delete the hosts' disks (images, volumes)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        hosts = options["hosts"]
        if hosts is not None and not 1 <= hosts <= 20:
            raise CommandError(f"--hosts {hosts}: use 1 to 20 hosts")
        config = fleet.LabConfig.from_settings(hosts=hosts)
        log = self.stdout.write
        try:
            if options["action"] == "up":
                lab_hosts = fleet.up(config, log)
                if not options["no_register"]:
                    hosts = register_hosts(lab_hosts, log)
                    register_images(config.images, log)
                    register_pool(config, hosts, log)
                    fix_lab_network(hosts, log)
                self._print_status(config)
            elif options["action"] == "down":
                fleet.down(config, log, purge=options["purge"])
                log("lab is down")
            else:
                if not self._print_status(config):
                    raise CommandError("the lab is not healthy; run `manage.py lab up`")
        except fleet.LabError as exc:
            raise CommandError(str(exc)) from exc

    def _print_status(self, config: fleet.LabConfig) -> bool:
        rows = fleet.status(config)
        if not rows:
            self.stdout.write("no lab hosts")
            return False
        self.stdout.write(
            f"bridge {config.bridge} {config.portal_ip}/{config.subnet.prefixlen} (mac {config.bridge_mac})"
        )
        for row in rows:
            images = ", ".join(f"{ref} {'yes' if ok else 'MISSING'}" for ref, ok in row.images.items())
            self.stdout.write(
                f"{row.host.name:8} {row.host.address!s:15} netns {'up' if row.netns else 'DOWN'}  "
                f"dockerd {'up' if row.docker else 'DOWN'}  sshd {'up' if row.sshd else 'DOWN'}  "
                f"lxcfs {'up' if row.lxcfs else 'DOWN'}  images: {images}"
            )
        return all(row.healthy for row in rows)
