"""Read every host's container events as they happen, until stopped (SIGTERM or Ctrl-C)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand

from apps.events.watcher import watch


class Command(BaseCommand):
    help = "Watch the hosts' Docker events (deaths, OOM kills, restarts) and record them as they happen."

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.stdout.write("watching container events; stop with SIGTERM")
        watch(stop)
        self.stdout.write("stopped")
