"""Where new instances go: spread one app over hosts, avoid hosts whose measured use is high,
then pack tight (best fit); and the choice is explained on the operation."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.instances.models import Instance, Operation
from apps.metrics.services import host_usage


@pytest.fixture
def three(hosts: list[Host], image: BaseImage) -> list[Host]:
    third = Host.objects.create(
        name="h3",
        address="127.0.0.1",
        ssh_port=3,
        host_key="ssh-ed25519 AAAA",
        state=Host.State.ACTIVE,
        checks_ok=True,
        cpus=2,
        memory_mb=1024,
    )
    image.hosts.add(third)
    return [*hosts, third]


def _app(owner: User, team: Team, image: BaseImage, slug: str, memory: int = 128) -> App:
    return services.app_create(
        user=owner, team=team, slug=slug, base_image=image, memory_mb=memory, cpus="0.25"
    )


def test_a_new_app_goes_to_the_fullest_host_that_fits_and_says_why(
    owner: User, alpha: Team, image: BaseImage, three: list[Host]
) -> None:
    filler = _app(owner, alpha, image, "filler", memory=512)
    services.app_scale(user=owner, app=filler, instances=1)
    full = Instance.objects.get(app=filler).host
    app = _app(owner, alpha, image, "web")
    op = services.app_scale(user=owner, app=app, instances=1)
    assert Instance.objects.get(app=app).host == full  # best fit: the host already half full
    [placed] = op.params["placement"]
    assert placed["host"] == full.name and placed["slot"] == 0
    assert f"{full.name} (512/1024 MiB" in placed["reason"]
    assert "fullest after placing (62% reserved)" in placed["reason"]
    assert "also fitting:" in placed["reason"]
    assert f"(on {full.name})" in op.summary


def test_an_app_with_several_instances_is_spread_before_it_is_packed(
    owner: User, alpha: Team, image: BaseImage, three: list[Host]
) -> None:
    app = _app(owner, alpha, image, "web")
    op = services.app_scale(user=owner, app=app, instances=3)
    assert Instance.objects.filter(app=app).values("host").distinct().count() == 3
    reasons = [p["reason"] for p in op.params["placement"]]
    assert "fewest instances of web (0; " in reasons[1]


def test_a_host_whose_measured_use_is_high_is_passed_over_while_another_has_room(
    owner: User, alpha: Team, image: BaseImage, three: list[Host]
) -> None:
    filler = _app(owner, alpha, image, "filler", memory=256)
    services.app_scale(user=owner, app=filler, instances=1)
    fullest = Instance.objects.get(app=filler).host
    # Its instance uses far more than its neighbours' limits suggest: 900 of 1024 MiB in use.
    Host.objects.filter(pk=fullest.pk).update(usage={"t": 1, "cpu_ns": 0, "memory_mb": 900.0, "cpus": 0.1})
    app = _app(owner, alpha, image, "web")
    op = services.app_scale(user=owner, app=app, instances=1)
    chosen = Instance.objects.get(app=app).host
    assert chosen != fullest
    assert "its measured use leaves room" in op.params["placement"][0]["reason"]


def test_draining_unreachable_and_failing_hosts_get_nothing(
    owner: User, alpha: Team, image: BaseImage, three: list[Host]
) -> None:
    h1, h2, _ = three
    Host.objects.filter(pk=h1.pk).update(state=Host.State.DRAINING)
    Host.objects.filter(pk=h2.pk).update(checks_ok=False)
    app = _app(owner, alpha, image, "web")
    services.app_scale(user=owner, app=app, instances=2)
    assert set(Instance.objects.filter(app=app).values_list("host__name", flat=True)) == {"h3"}
    assert Operation.objects.filter(app=app).latest("created_at").params["placement"][1]["host"] == "h3"


def test_host_usage_is_the_working_sets_and_the_cpu_rate_between_sweeps() -> None:
    first = host_usage(
        {}, {"time": 100.0, "containers": [{"cpu_usage_ns": 10**9, "memory_working_set": 2**20 * 50}]}
    )
    assert first == {"t": 100.0, "cpu_ns": 10**9, "memory_mb": 50.0, "cpus": None}
    second = host_usage(
        first,
        {
            "time": 110.0,
            "containers": [
                {"cpu_usage_ns": 6 * 10**9, "memory_working_set": 2**20 * 40},
                {"cpu_usage_ns": 10**9, "memory_working_set": 2**20 * 10},
                {"error": "gone"},
            ],
        },
    )
    assert second["cpus"] == 0.6 and second["memory_mb"] == 50.0
    # A container went away and the total fell: no rate this time rather than a negative one.
    assert host_usage(second, {"time": 120.0, "containers": []})["cpus"] is None


def test_hosts_chosen_by_the_caller_must_still_have_room(
    owner: User, alpha: Team, image: BaseImage, three: list[Host]
) -> None:
    h1 = three[0]
    big = _app(owner, alpha, image, "big", memory=900)
    op = services.app_scale(user=owner, app=big, instances=1, hosts=[h1])
    assert "chosen by the caller" in op.params["placement"][0]["reason"]
    more = _app(owner, alpha, image, "more", memory=256)
    with pytest.raises(ValidationError, match="h1 cannot take an instance of more now: it has 124 MiB"):
        services.app_scale(user=owner, app=more, instances=1, hosts=[h1])
    Host.objects.filter(pk=three[1].pk).update(state=Host.State.DRAINING)
    with pytest.raises(ValidationError, match="h2 cannot take an instance of more now: it is not active"):
        services.app_scale(user=owner, app=more, instances=1, hosts=[three[1]])


def test_a_scale_to_many_names_each_host_once_and_a_long_summary_is_cut_not_refused(
    owner: User, alpha: Team, image: BaseImage, three: list[Host]
) -> None:
    """Found by the scale bench on PostgreSQL: a scale to 100 named every placement and
    overflowed the summary column (SQLite never enforces its length)."""
    from apps.instances.services import SUMMARY_MAX, operation_create

    app = services.app_create(user=owner, team=alpha, slug="many", base_image=image, memory_mb=8, cpus="0.02")
    op = services.app_scale(user=owner, app=app, instances=45)
    assert op.summary.startswith("scale 0 → 45 (on ")
    assert all(f"{h.name} ×15" in op.summary for h in three), op.summary
    long = operation_create(app=app, kind=op.kind, user=owner, summary="x" * 1000)
    long.refresh_from_db()
    assert len(long.summary) == SUMMARY_MAX and long.summary.endswith("…")
