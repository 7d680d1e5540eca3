"""How Docker's events become a timeline, on the events as Docker sends them (their order and
attributes as the lab tests see them; kept lines are left out here, EVENTS_KEEP_LINES=0, so no
host is read): a stop is not a death, an OOM kill marks the death after it, a start after a
death is Docker's restart, three deaths are one crash loop, a replayed stream records nothing
twice. And the timeline's query, every bad value refused with what is allowed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import override_settings

from apps.applications.models import App, BaseImage
from apps.events import selectors
from apps.events import services as events_services
from apps.events.models import ContainerEvent
from apps.events.services import Recorder
from apps.hosts.gateway import DockerEvent
from apps.hosts.models import Host
from apps.instances.models import Instance

S = 1_000_000_000  # a second in nanoseconds
T0 = 1_800_000_000 * S


@pytest.fixture
def instance(owner: User, image: BaseImage, hosts: list[Host]) -> Instance:
    app = App.objects.create(slug="web", team=owner.memberships.get().team, base_image=image, instances=1)
    return Instance.objects.create(
        app=app, slot=0, host=hosts[0], memory_mb=64, cpus=Decimal("0.25"), address="10.213.200.9"
    )


def _message(instance: Instance, action: str, at: float, **attrs: str) -> dict[str, object]:
    return {
        "Type": "container",
        "Action": action,
        "Actor": {
            "ID": "c" * 64,
            "Attributes": {
                "name": instance.container_name,
                "io.slipway.app": instance.app.slug,
                "io.slipway.slot": str(instance.slot),
                "io.slipway.instance": str(instance.pk),
                "image": "slipway/busybox:1",
                **attrs,
            },
        },
        "time": int(T0 / S + at),
        "timeNano": T0 + int(at * S),
    }


def _event(instance: Instance, action: str, at: float, **attrs: str) -> DockerEvent:
    event = DockerEvent.of(_message(instance, action, at, **attrs))
    assert event is not None
    return event


def _kinds(instance: Instance) -> list[tuple[str, int | None, bool]]:
    rows = ContainerEvent.objects.filter(instance=instance).order_by("time", "id")
    return [(e.kind, e.exit_code, e.oom) for e in rows]


@override_settings(EVENTS_KEEP_LINES=0)
def test_deaths_stops_oom_kills_and_restarts_are_told_apart(instance: Instance) -> None:
    recorder = Recorder(instance.host)
    for event in [
        _event(instance, "start", 0),
        _event(instance, "kill", 10, signal="15"),
        _event(instance, "die", 10.2, exitCode="143"),
        _event(instance, "stop", 10.3),
        _event(instance, "start", 20),
        _event(instance, "oom", 30),
        _event(instance, "die", 30.01, exitCode="137"),
        _event(instance, "start", 30.2),
        _event(instance, "die", 31, exitCode="137"),  # killed later, not by the OOM killer
    ]:
        recorder.handle(event)
    assert _kinds(instance) == [
        ("started", None, False),
        ("stopped", 143, False),
        ("started", None, False),
        ("oom", None, True),
        ("died", 137, True),
        ("restarted", None, False),
        ("died", 137, False),
    ]
    # Docker's other events (an exec, a health check) are not the portal's.
    assert DockerEvent.of(_message(instance, "exec_start: sh -c id", 31)) is None
    started = ContainerEvent.objects.filter(instance=instance, kind="started").first()
    assert started is not None and started.summary == "slw-web-0 started at 10.213.200.9"
    assert ContainerEvent.objects.get(kind="stopped").summary == "slw-web-0 stopped (exit code 143)"


@override_settings(EVENTS_KEEP_LINES=0, CRASH_LOOP_DEATHS=3, CRASH_LOOP_WINDOW=300)
def test_three_deaths_within_the_window_are_one_crash_loop_and_a_replay_records_nothing(
    instance: Instance,
) -> None:
    stream = []
    for n in range(5):
        stream += [_event(instance, "die", n * 2, exitCode="3"), _event(instance, "start", n * 2 + 0.5)]
    recorder = Recorder(instance.host)
    for event in stream:
        recorder.handle(event)
    kinds = [k for k, _, _ in _kinds(instance)]
    assert kinds.count("died") == 5
    assert kinds.count("restarted") == 5
    assert kinds.count("crash_loop") == 1
    loop = ContainerEvent.objects.get(kind="crash_loop")
    assert loop.summary == "slw-web-0 is in a crash loop: died 3 times within 300 s; last exit code 3"
    # The same stream read again (a watcher restarted before its cursor moved): nothing new.
    again = Recorder(instance.host)
    for event in stream:
        again.handle(event)
    assert ContainerEvent.objects.filter(instance=instance).count() == 11


@override_settings(EVENTS_KEEP_LINES=0)
def test_a_container_no_instance_explains_is_left_to_the_reconcile(instance: Instance) -> None:
    stray = _event(instance, "die", 1, exitCode="1")
    stray = DockerEvent(
        action="die", container_id="d" * 64, name="slw-gone-3", time_ns=stray.time_ns, exit_code=1
    )
    assert Recorder(instance.host).handle(stray) is None
    assert not ContainerEvent.objects.exists()


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"category": "oops"}, "category", "'oops' is not one of deaths, lifecycle, changes, exec, failures"),
        ({"before": "yesterday"}, "before", "'yesterday' is not an ISO 8601 time with its zone"),
        ({"since": "2026-12-04T10:00:00"}, "since", "is not an ISO 8601 time with its zone"),
        ({"limit": "0"}, "limit", "'0' is not a number of entries from 1 to 200."),
        ({"limit": "201"}, "limit", "from 1 to 200"),
    ],
)
def test_the_timelines_query_refuses_what_it_cannot_take(
    params: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        selectors.parse_query(params)
    assert message in caught.value.message_dict[field][0]


def test_the_timelines_query_takes_a_zone_written_as_a_query_string_plus() -> None:
    # "+00:00" in a query string arrives as " 00:00".
    query = selectors.parse_query({"before": "2026-12-04T10:00:00 00:00", "category": "deaths", "limit": "5"})
    assert query.before is not None and query.before.utcoffset() is not None
    assert (query.category, query.limit) == ("deaths", 5)


@override_settings(EVENTS_KEEP_LINES=0, EVENTS_RETENTION_DAYS=30)
def test_events_older_than_the_retention_go(instance: Instance) -> None:
    recorder = Recorder(instance.host)
    recorder.handle(_event(instance, "start", 0))
    now = datetime.fromtimestamp(T0 / S, tz=UTC)
    assert events_services.prune(now + timedelta(days=29)) == 0
    assert events_services.prune(now + timedelta(days=31)) == 1
    assert not ContainerEvent.objects.exists()


@override_settings(EVENTS_KEEP_LINES=0)
def test_the_stop_of_a_container_whose_row_is_gone_is_kept_for_its_app(instance: Instance) -> None:
    # A scale-down: the worker removed the container and deleted the row before the watcher
    # read the stop. A load balancer following lifecycle webhooks must hear of it all the same.
    kill, die = _event(instance, "kill", 1, signal="15"), _event(instance, "die", 1.1, exitCode="143")
    app, slot = instance.app, instance.slot
    instance.delete()
    recorder = Recorder(Host.objects.get(name="h1"))
    recorder.handle(kill)
    stopped = recorder.handle(die)
    assert stopped is not None and stopped.instance is None
    assert (stopped.app, stopped.slot, stopped.kind, stopped.exit_code) == (app, slot, "stopped", 143)
    assert stopped.summary == "slw-web-0 stopped (exit code 143), removed"
