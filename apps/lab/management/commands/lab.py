from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.lab import fleet, netns, registry, vm
from apps.lab.register import (
    prepare_lab_hosts,
    register_hosts,
    register_images,
    register_pool,
    register_registry,
)


class Command(BaseCommand):
    help = (
        "Build (up), remove (down) or show (status) the lab fleet of Docker hosts and its legacy VM; "
        "vm: how to log in to the legacy VM."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["up", "down", "status", "vm"])
        parser.add_argument(
            "--hosts", type=int, default=None, help="number of Docker hosts (default: LAB_HOSTS)"
        )
        parser.add_argument(
            "--no-register", action="store_true", help="do not register the hosts in the portal"
        )
        parser.add_argument(
            "--registry",
            action="store_true",
            help="with up: publish base images through the lab registry (default: SSH streaming)",
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
                # Registered, the hosts get their base images from Prepare, as real servers do.
                lab_hosts = fleet.up(config, log, load_images=options["no_register"])
                vm.vm_up(vm.demo_vm(config), log)
                registry.up(config, log)
                if not options["no_register"]:
                    hosts = register_hosts(lab_hosts, log)
                    if options["registry"]:
                        register_registry(config, log)
                    register_images(config.images, log)
                    register_pool(config, hosts, log)
                    prepare_lab_hosts(hosts, log)
                self._print_status(config)
            elif options["action"] == "down":
                fleet.down(config, log, purge=options["purge"])  # the VMs too
                log("lab is down")
            elif options["action"] == "vm":
                self._print_vm_login(vm.demo_vm(config))
            else:
                if not self._print_status(config):
                    raise CommandError("the lab is not healthy; run `manage.py lab up`")
        except netns.LabError as exc:
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
        self._print_vm_status(vm.demo_vm(config))
        lab_registry = registry.LabRegistry.of(config)
        self.stdout.write(
            f"registry {lab_registry.url} {'up' if registry.status(config) else 'DOWN'} "
            f"(CA {lab_registry.ca_cert}, user and password in {lab_registry.credentials_file})"
        )
        return all(row.healthy for row in rows)

    def _print_vm_status(self, legacy: vm.LegacyVM) -> None:
        # Not part of the lab's health: after a migration the VM's app is down on purpose.
        state = vm.vm_status(legacy)
        if not any(state.values()):
            self.stdout.write(f"{legacy.name:8} legacy VM not running (`manage.py lab up` starts it)")
            return
        self.stdout.write(
            f"{legacy.name:8} {legacy.ssh_address!s:15} legacy VM, service {legacy.service_address}:"
            f"{legacy.port}  init {'up' if state['init'] else 'DOWN'}  sshd {'up' if state['sshd'] else 'DOWN'}  "
            f"app {'up' if state['app'] else 'DOWN'}"
        )

    def _print_vm_login(self, legacy: vm.LegacyVM) -> None:
        self.stdout.write(f"Legacy VM {legacy.name} (an app to migrate into a container):")
        self.stdout.write(f"  ssh      root@{legacy.ssh_address}  password {vm.vm_password(legacy)}")
        self.stdout.write(f"  service  {legacy.service_address} (the address its callers know)")
        self.stdout.write(f"  app      {legacy.url}  (/etc/init.d/notes, files in {legacy.app_dir})")
        if not vm.vm_status(legacy)["sshd"]:
            self.stdout.write("  (not running now: `manage.py lab up` starts it)")
