"""Retention on the lab fleet, through a real Celery worker that keeps 2 releases
(RELEASES_KEEP=2 in its environment): after each deploy the worker's prune task removes the
files of older releases from the host and the portal's storage, but never those of the running
release, the one before it, or one a kept release reuses; a host that gets its first instance
later gets exactly the release the app runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import override_settings

from apps.applications import releases, services
from apps.applications.models import App, Release
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from tests.conftest import TEST_BROKER_URL, _database_url
from tests.docker.releases_support import all_serve, by_name, ship
from tests.helpers import KillableWorker, eventually


@pytest.fixture
def keeping_two(transactional_db: None) -> Iterator[KillableWorker]:
    process = KillableWorker(TEST_BROKER_URL, _database_url(), RELEASES_KEEP="2")
    yield process
    process.stop()


def _deployed(op: Operation | None) -> None:
    assert op is not None
    done = eventually(
        lambda: (lambda o: o if o.terminal else None)(Operation.objects.get(pk=op.pk)), 90, "the deploy"
    )
    assert done.status == Operation.Status.SUCCEEDED, done.error


def _kept(app: App) -> list[int]:
    return sorted(app.releases.filter(pruned_at=None).values_list("number", flat=True))


def _dirs(volume: Path) -> list[str]:
    return sorted(p.name for p in volume.iterdir() if not p.name.startswith("."))


def test_retention_prunes_old_releases_but_not_the_running_one_or_the_one_before(
    owner: User, site: Callable[[str, int], App], lab: list[fleet.LabHost], keeping_two: KillableWorker
) -> None:
    # (The fixture deploys release 2 in this process; from then on the worker deploys and prunes.)
    with override_settings(RELEASES_KEEP=2):  # the rollback's message says what this process keeps
        app = site("relkeep", 1)
        for page in (b"B\n", b"C\n", b"D\n"):
            _deployed(ship(owner, app, {"index.html": page})[1])
        all_serve(app, b"D\n")
        eventually(lambda: _kept(app) == [4, 5], 30, "releases 1 to 3 pruned")
        instance = Instance.objects.select_related("host").get(app=app)
        volume = by_name(lab)[instance.host.name].volume_root / app.slug / "releases"
        eventually(lambda: _dirs(volume) == ["4", "5"], 30, "the files of 2 and 3 gone from the host")
        assert not Release.objects.get(app=app, number=3).archive  # gone from the portal's storage too
        with pytest.raises(ValidationError, match=r"Release 3 was pruned .*Kept releases: 4, 5"):
            releases.release_rollback(user=owner, app=app, number=3)
        # Rolling back to 4 keeps 4's files (used by the new release 6) and 5 (the one before).
        restored, op = releases.release_rollback(user=owner, app=app)
        assert restored.restored_from == 4
        _deployed(op)
        all_serve(app, b"C\n")
        eventually(lambda: _kept(app) == [5, 6], 30, "release 4 pruned, its files kept for 6")
        assert _dirs(volume) == ["4", "5"]
        # A host that gets its first instance now gets exactly the release the app runs.
        _deployed(services.app_scale(user=owner, app=app, instances=2))
        hosts = set(Instance.objects.filter(app=app).values_list("host__name", flat=True))
        assert len(hosts) == 2
        assert set(Instance.objects.filter(app=app).values_list("release__number", flat=True)) == {6}
        all_serve(app, b"C\n")
        for name in hosts:
            other = by_name(lab)[name].volume_root / app.slug / "releases"
            assert (other / "4" / "index.html").read_bytes() == b"C\n"
