"""Hosts that lack what Prepare makes are prepared by the beat (at most every 10 minutes each),
and image archives no version needs are pruned."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from apps.applications.models import BaseImage, BuildState
from apps.fleet import prepare
from apps.fleet.models import Preparation
from apps.hosts.models import Host, HostEvent
from apps.images import publish

RECIPE = "FROM scratch\nADD busybox /\n"


def test_a_host_that_lacks_a_version_or_fails_a_fixable_check_is_prepared_once(hosts: list[Host]) -> None:
    h1, h2 = hosts
    image = BaseImage.objects.create(name="slipway/web", tag="1", runtime="busybox", recipe=RECIPE)
    image.hosts.add(h1, h2)
    assert prepare.wanting() == []  # both have it, and no check fails

    image.hosts.remove(h2)  # h2 joined after the publish
    h1.checks = [{"name": "network public", "ok": False, "fix": "network", "detail": "", "remedy": ""}]
    h1.save()
    assert {h.name for h in prepare.wanting()} == {"h1", "h2"}

    started = prepare.prepare_wanting()

    assert sorted(Preparation.objects.filter(pk__in=started).values_list("host__name", flat=True)) == [
        "h1",
        "h2",
    ]
    assert HostEvent.objects.filter(action="prepare started").count() == 2
    # Not again while the last one is recent, whatever it came to.
    Preparation.objects.update(state=Preparation.State.NEEDS_OPS)
    assert prepare.prepare_wanting() == []
    Preparation.objects.update(created_at=timezone.now() - timedelta(seconds=prepare.AUTO_EVERY_S + 1))
    assert len(prepare.prepare_wanting()) == 2


def test_a_version_without_a_recipe_or_a_host_not_active_wants_nothing(hosts: list[Host]) -> None:
    BaseImage.objects.create(name="slipway/imported", tag="1", runtime="busybox", recipe="")
    BaseImage.objects.create(
        name="slipway/draft", tag="1", runtime="busybox", recipe=RECIPE, state=BuildState.DRAFT
    )
    hosts[1].state = Host.State.DRAINING
    hosts[1].save()
    assert prepare.wanting() == []


def test_archives_no_version_needs_are_pruned(tmp_path: Path, db: None) -> None:
    kept = BaseImage.objects.create(name="slipway/web", tag="2", runtime="busybox", recipe=RECIPE)
    with override_settings(IMAGE_ARCHIVE_DIR=tmp_path):
        publish.archive_path(kept).write_bytes(b"tar")
        (tmp_path / "slipway_web_1.tar").write_bytes(b"old")  # its version was deleted
        (tmp_path / "notes.txt").write_text("not an archive: left alone")

        assert publish.prune_archives() == ["slipway_web_1.tar"]

        assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "slipway_web_2.tar"]


def test_dockerd_settings_are_never_applied_by_the_beat_only_on_ops_word(hosts: list[Host], ops: Any) -> None:
    """Log rotation and live-restore need dockerd restarted: the beat leaves them to ops, who
    ask through the API with restart_dockerd (a boolean, said so when it is not)."""
    h1, _ = hosts
    h1.host_key = h1.host_key or "ssh-ed25519 AAAA"
    h1.checks = [
        {
            "name": "live-restore",
            "ok": False,
            "fix": "daemon-json",
            "required": False,
            "detail": "",
            "remedy": "",
        }
    ]
    h1.save()
    assert h1.dockerd_settings_due
    assert h1 not in prepare.wanting()
    h1.checks[0]["fix"] = "lxcfs"  # LXCFS is safe to start unasked
    h1.save()
    assert h1 in prepare.wanting()

    api = APIClient()
    api.force_authenticate(ops)
    url = f"/api/v1/hosts/{h1.pk}/prepare/"
    refused = api.post(url, {"restart_dockerd": "please"}, format="json")
    assert refused.status_code == 400
    assert "restart_dockerd" in refused.json() and "valid boolean" in str(refused.json()["restart_dockerd"])
    assert not Preparation.objects.filter(host=h1).exists()
    with patch("apps.fleet.prepare.jobs.start") as start:
        answer = api.post(url, {"restart_dockerd": True}, format="json")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["preparation"]["restart_dockerd"] is True
    assert start.call_count == 1


def test_the_admin_prepares_with_or_without_dockerd_settings(hosts: list[Host], ops: Any) -> None:
    h1, h2 = hosts
    Host.objects.filter(pk__in=[h1.pk, h2.pk]).update(host_key="ssh-ed25519 AAAA")
    ops.is_superuser = True  # the admin is for ops with its permissions, as seed_demo makes them
    ops.save(update_fields=["is_superuser"])
    client = Client()
    client.force_login(ops)
    url = "/admin/hosts/host/"
    with patch("apps.fleet.prepare.jobs.start"):
        plain = client.post(url, {"action": "prepare", "_selected_action": [h1.pk]}, follow=True)
        asked = client.post(url, {"action": "prepare_dockerd", "_selected_action": [h2.pk]}, follow=True)
    said = [str(m) for m in plain.context["messages"]]
    assert "h1: preparing; the steps are on its host page." in said, said
    said = [str(m) for m in asked.context["messages"]]
    assert "h2: preparing, dockerd settings included; the steps are on its host page." in said, said
    assert Preparation.objects.get(host=h1).restart_dockerd is False
    assert Preparation.objects.get(host=h2).restart_dockerd is True
