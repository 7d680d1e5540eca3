"""What the release tests on the lab share: an app serving a page from its release, and shipping
archives to it (tests/docker/test_releases_on_lab.py, test_release_retention_on_lab.py)."""

from __future__ import annotations

import urllib.request
from typing import Any

from django.contrib.auth.models import User

from apps.applications import releases
from apps.applications.models import App, Release
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from tests.helpers import archive, eventually


def answers(address: str) -> bytes | None:
    try:
        with urllib.request.urlopen(f"http://{address}:8080/index.html", timeout=2) as response:
            return bytes(response.read())
    except OSError:
        return None


def serving(app: App) -> dict[int, bytes | None]:
    return {i.slot: answers(str(i.address)) for i in Instance.objects.filter(app=app)}


def all_serve(app: App, content: bytes) -> dict[int, bytes | None]:
    return eventually(
        lambda: (lambda seen: seen if set(seen.values()) == {content} else None)(serving(app)),
        15,
        f"every instance of {app.slug} serving {content!r}",
    )


def run(op: Operation | None) -> Operation:
    """The operation once it ended: run here, or waited for where a worker took it."""
    assert op is not None
    return executor.run_or_wait(op, 120)


def ship(owner: User, app: App, files: dict[str, bytes], **kwargs: Any) -> tuple[Release, Operation | None]:
    data = archive(files)
    return releases.release_create(user=owner, app=app, fileobj=data, size=len(data.getvalue()), **kwargs)


def by_name(lab: list[fleet.LabHost]) -> dict[str, fleet.LabHost]:
    return {h.name: h for h in lab}
