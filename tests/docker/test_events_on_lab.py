"""Container events from the lab hosts' real Docker, read by a real `manage.py watch_events`:
an OOM kill (the kernel's, past the instance's memory limit), a crash loop, Docker's restarts,
the portal's own stops and starts, and the last lines of a container the portal replaced."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.models import User

from apps.applications import services
from apps.applications.models import App
from apps.events.models import ContainerEvent
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from tests.helpers import CRASHER, EATER, EventWatcher, api_client, app_prints, eventually


def _events(instance: Instance, kind: str) -> list[ContainerEvent]:
    return list(ContainerEvent.objects.filter(instance=instance, kind=kind).order_by("time"))


def test_an_oom_kill_is_recorded_with_the_lines_before_it_and_dockers_restart(
    watcher: EventWatcher,
    app_running: Callable[[str, str], Instance],
    lab: list[fleet.LabHost],
    owner: User,
    outsider: User,
) -> None:
    instance = app_running("eater", EATER)
    lab_host = next(h for h in lab if h.name == instance.host.name)
    app_prints(lab, instance, "echo a line before the end")
    fleet.docker(lab_host, "exec", instance.container_name, "touch", "/srv/data/eat")

    died = eventually(lambda: _events(instance, "died"), 20, "the death recorded")[0]
    assert died.oom and died.exit_code == 137, (died.oom, died.exit_code)
    assert died.summary == f"{instance.container_name} died: exit code 137 (OOM killed)"
    texts = [text for _, _, text in died.lines]
    # The lines up to that moment, and none from after Docker restarted it.
    assert texts[-2:] == ["a line before the end", "eating memory"], texts
    assert texts.count("waiting") == 1
    assert _events(instance, "oom"), "the kernel's OOM kill itself is an event"
    restarted = eventually(lambda: _events(instance, "restarted"), 20, "Docker's restart recorded")[0]
    assert restarted.summary == f"{instance.container_name} restarted by Docker after exit code 137"
    assert restarted.time > died.time

    # The timeline says it, newest first, to the app's team; another team gets a 404.
    body = api_client(owner).get(f"/api/v1/instances/{instance.pk}/events/", {"category": "deaths"}).json()
    kinds = [e["kind"] for e in body["results"]]
    assert kinds[0] == "died" and "oom" in kinds, kinds
    assert body["results"][0]["oom"] is True
    assert body["results"][0]["lines"][-1]["text"] == "eating memory"
    assert api_client(outsider).get(f"/api/v1/instances/{instance.pk}/events/").status_code == 404

    # The previous container's lines (`kubectl logs --previous`) are the kept ones.
    previous = api_client(owner).get(f"/api/v1/instances/{instance.pk}/logs/", {"previous": "1", "tail": "2"})
    assert b"".join(previous.streaming_content).decode() == "a line before the end\neating memory\n"  # type: ignore[attr-defined]

    # And a marker on the charts, at the moment of the death.
    markers = api_client(owner).get(f"/api/v1/instances/{instance.pk}/metrics/").json()["markers"]
    assert any(m["kind"] == "oom" and m["t"] == int(died.time.timestamp()) for m in markers), markers


def test_a_crash_loop_is_said_once(
    watcher: EventWatcher,
    app_running: Callable[[str, str], Instance],
    owner: User,
) -> None:
    instance = app_running("crasher", CRASHER)
    loop = eventually(lambda: _events(instance, "crash_loop"), 30, "a crash loop recorded")[0]
    assert loop.exit_code == 3
    assert loop.detail.startswith("died 3 times within 300 s; last exit code 3"), loop.detail
    died = _events(instance, "died")
    assert len(died) >= 3 and all(d.exit_code == 3 and not d.oom for d in died)
    assert died[0].lines[-1][2] == "giving up" and died[0].lines[-1][0] == "stderr"
    assert len(_events(instance, "crash_loop")) == 1


def test_the_previous_containers_lines_are_kept_when_the_portal_replaces_it(
    watcher: EventWatcher, deploy: Callable[..., App], lab: list[fleet.LabHost], owner: User
) -> None:
    app = deploy("replaced", instances=1)
    instance = Instance.objects.select_related("host", "app").get(app=app)
    app_prints(lab, instance, "echo said by the first container")
    services.app_update(user=owner, app=app, env={"COLOUR": "blue"})
    op = Operation.objects.get(app=app, kind=Operation.Kind.RELEASE)
    executor.run_operation(op.pk)
    op.refresh_from_db()
    assert op.status == Operation.Status.SUCCEEDED, op.error
    new = Instance.objects.get(pk=instance.pk)
    assert new.container_id != instance.container_id

    kept = ContainerEvent.objects.get(instance=instance, kind="replaced")
    assert kept.container_id == instance.container_id
    assert kept.detail == "replaced by a new container (its settings changed)"
    assert [text for _, _, text in kept.lines][-1] == "said by the first container"
    previous = api_client(owner).get(f"/api/v1/instances/{instance.pk}/logs/", {"previous": "1"})
    assert "said by the first container" in b"".join(previous.streaming_content).decode()  # type: ignore[attr-defined]
    # The new container's own logs do not have it.
    current = api_client(owner).get(f"/api/v1/instances/{instance.pk}/logs/")
    assert "said by the first container" not in b"".join(current.streaming_content).decode()  # type: ignore[attr-defined]

    # The portal's own stop and start are lifecycle events, not deaths.
    stop = services.instance_action(user=owner, instance=new, action="stop")
    executor.run_operation(stop.pk)
    stopped = eventually(lambda: _events(instance, "stopped"), 20, "the stop recorded")[0]
    assert stopped.detail.startswith("stopped (exit code"), stopped.detail
    assert not _events(instance, "died")
    started = _events(instance, "started")
    assert started and started[-1].container_id == new.container_id
    entries = api_client(owner).get(f"/api/v1/apps/{app.slug}/events/").json()["results"]
    assert [e["kind"] for e in entries][:2] == ["stopped", "stop"], entries
    assert entries[1]["category"] == "changes" and entries[1]["who"] == owner.username
