"""The consolidation planner page (/hosts/planner/): it plans the live fleet or a stored
what-if scenario, draws it, lists the moves, and on the live fleet drains what the plan empties.
Who may see it is the route matrix's business (tests/plain/test_routes.py)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from apps.applications import services
from apps.applications.models import App, BaseImage
from apps.fleet import consolidation, planner
from apps.fleet.models import Drain
from apps.hosts.models import Host
from apps.instances.models import Instance

URL = reverse("hosts:planner")
APPLY = reverse("hosts:planner-apply")


def _app(
    owner: User, image: BaseImage, slug: str, host: Host, memory_mb: int = 256, cpus: str = "0.5"
) -> App:
    """One instance of a new app on `host`: rows only, the operation is never run."""
    app = services.app_create(
        user=owner,
        team=owner.memberships.get().team,
        slug=slug,
        base_image=image,
        memory_mb=memory_mb,
        cpus=cpus,
    )
    services.app_scale(user=owner, app=app, instances=1, hosts=[host])
    return app


@pytest.fixture
def half_empty(owner: User, image: BaseImage, hosts: list[Host]) -> list[App]:
    """h1 and h2 each a quarter full: one of them is enough."""
    return [_app(owner, image, "web", hosts[0]), _app(owner, image, "api", hosts[1])]


@pytest.fixture
def ops_client(ops: User) -> Client:
    client = Client()
    client.force_login(ops)
    return client


def test_it_plans_two_half_empty_hosts_onto_one(ops_client: Client, half_empty: list[App]) -> None:
    response = ops_client.get(URL)

    assert response.status_code == 200
    body = response.content.decode()
    assert "2 → 1" in body
    assert re.search(r'<svg[^>]*role="img"', body)
    assert re.search(r'aria-label="[^"]*2 hosts?[^"]*2 in use now, 1 after, 1 emptied', body)
    moved = response.context["plan"].moves
    assert len(moved) == 1
    name = Instance.objects.get(pk=moved[0].item_id).container_name
    assert f"<td>{name}</td>" in body
    assert "Apply: drain the 1 emptied host" in body
    assert 'hx-confirm="Drain the 1 host this plan empties?' in body


def test_it_links_each_live_host_to_its_page(
    ops_client: Client, half_empty: list[App], hosts: list[Host]
) -> None:
    body = ops_client.get(URL).content.decode()

    for host in hosts:
        assert f'<a href="{reverse("hosts:detail", args=[host.pk])}">{host.name}</a>' in body


def test_it_names_moved_instances_in_one_query_however_many_move(
    ops_client: Client,
    owner: User,
    image: BaseImage,
    hosts: list[Host],
    half_empty: list[App],
    django_assert_max_num_queries,  # type: ignore[no-untyped-def]
) -> None:
    with django_assert_max_num_queries(100) as before:
        ops_client.get(URL)
    # Small ones, so that h1 with three instances still empties onto h2 with four.
    for slug, host in (("cache", 0), ("queue", 0), ("mail", 1), ("cron", 1), ("search", 1)):
        _app(owner, image, slug, hosts[host], memory_mb=64, cpus="0.1")
    with django_assert_max_num_queries(len(before.captured_queries)) as after:
        response = ops_client.get(URL)

    assert len(response.context["plan"].moves) == 3
    assert len(after.captured_queries) == len(before.captured_queries)


def test_it_shows_a_scenario_as_what_if_only(ops_client: Client, hosts: list[Host]) -> None:
    scenario = consolidation.scenario_save(name="t", apps=50, instances=200, hosts=10, seed=1)
    fleet = consolidation.scenario_fleet(scenario)
    expected = planner.plan(fleet.hosts, fleet.items)

    response = ops_client.get(URL, {"scenario": scenario.pk})

    assert response.status_code == 200
    body = response.content.decode()
    assert f"{expected.hosts_before} → {expected.hosts_after}" in body
    assert expected.hosts_after < expected.hosts_before
    assert f"<dt>Moves</dt><dd>{len(expected.moves)}</dd>" in body
    assert "<dt>Instances</dt><dd>200</dd>" in body
    assert "What-if only" in body
    assert "Apply:" not in body
    assert APPLY not in body
    move = expected.moves[0]
    assert f"instance #{move.item_id} of app #{move.app_id}" in body
    assert body.count("<g>") == 10  # one column per host
    assert f'<option value="{scenario.pk}" selected>' in body


def test_it_lists_two_hundred_moves_and_counts_the_rest(ops_client: Client, hosts: list[Host]) -> None:
    scenario = consolidation.scenario_save(name="big", apps=500, instances=2000, hosts=60, seed=1)
    fleet = consolidation.scenario_fleet(scenario)
    moves = len(planner.plan(fleet.hosts, fleet.items).moves)
    assert moves > 200

    body = ops_client.get(URL, {"scenario": scenario.pk}).content.decode()

    assert f"and {moves - 200} more." in body
    assert "<td>200</td><td>instance #" in body
    assert "<td>201</td>" not in body


@pytest.mark.parametrize("wanted", ["abc", "999999", "-1", "1.5"])
def test_it_answers_404_for_a_scenario_that_does_not_exist(ops_client: Client, wanted: str) -> None:
    assert ops_client.get(URL, {"scenario": wanted}).status_code == 404


def test_it_marks_a_host_that_takes_nothing_and_empties_it(
    ops_client: Client, half_empty: list[App], hosts: list[Host]
) -> None:
    Host.objects.filter(pk=hosts[1].pk).update(checks_ok=False)

    response = ops_client.get(URL)

    assert response.context["plan"].emptied == [hosts[1].pk]
    body = response.content.decode()
    assert '<span class="badge state-unreachable">no</span>' in body
    assert re.search(r'fill="#b3261e">!✕</text>', body)


def test_it_warns_when_an_instance_fits_nowhere(
    ops_client: Client, owner: User, image: BaseImage, hosts: list[Host]
) -> None:
    _app(owner, image, "web", hosts[0], memory_mb=768)
    _app(owner, image, "api", hosts[1], memory_mb=768)
    Host.objects.filter(pk=hosts[1].pk).update(checks_ok=False)

    response = ops_client.get(URL)

    body = response.content.decode()
    assert response.context["plan"].unplaced
    assert "1 instance fit nowhere within the rules" in body
    assert "Apply:" not in body  # the host that must empty cannot: nothing to drain


def test_it_says_so_when_nothing_can_be_emptied(
    ops_client: Client, owner: User, image: BaseImage, hosts: list[Host]
) -> None:
    _app(owner, image, "web", hosts[0])

    body = ops_client.get(URL).content.decode()

    assert "1 → 1" in body
    assert "No host can be emptied" in body
    assert "Nothing to move." in body


def test_it_draws_an_empty_fleet_without_a_picture(ops_client: Client, db: None) -> None:
    response = ops_client.get(URL)

    assert response.status_code == 200
    assert "No hosts with known capacity" in response.content.decode()


def test_apply_drains_the_host_the_plan_empties(
    ops_client: Client, ops: User, half_empty: list[App], hosts: list[Host]
) -> None:
    response = ops_client.post(APPLY, follow=True)

    assert response.redirect_chain == [(URL, 302)]
    drain = Drain.objects.select_related("host").get()
    assert drain.host.state == Host.State.DRAINING
    assert drain.started_by == ops
    assert drain.total == 1
    assert Host.objects.exclude(pk=drain.host.pk).get().state == Host.State.ACTIVE
    body = response.content.decode()
    link = f'<a href="{reverse("hosts:detail", args=[drain.host.pk])}">{drain.host.name}</a>'
    assert f"Draining 1 host(s): {link}." in body


def test_apply_drains_nothing_when_the_plan_empties_nothing(
    ops_client: Client, owner: User, image: BaseImage, hosts: list[Host]
) -> None:
    _app(owner, image, "web", hosts[0])

    response = ops_client.post(APPLY, follow=True)

    assert not Drain.objects.exists()
    assert "The plan empties no host now: nothing to drain." in response.content.decode()


def test_apply_leaves_a_host_that_is_draining_already_alone(
    ops_client: Client, ops: User, half_empty: list[App], hosts: list[Host]
) -> None:
    ops_client.post(APPLY)
    drained = Drain.objects.get().host

    page = ops_client.get(URL).content.decode()
    response = ops_client.post(APPLY, follow=True)

    assert "Apply:" not in page
    assert (
        f'Draining already:\n        <a href="{reverse("hosts:detail", args=[drained.pk])}">{drained.name}</a>.'
        in page
    )
    assert Drain.objects.count() == 1
    assert "Every host the plan empties is being drained already." in response.content.decode()


def test_apply_refuses_a_plan_that_leaves_an_instance_without_a_host(
    ops_client: Client, owner: User, image: BaseImage, hosts: list[Host]
) -> None:
    # h2 and h3 fail their checks, so both must be emptied onto h1: h2's instance fits there,
    # h3's does not. The plan empties h2 and strands h3's instance: apply refuses it whole.
    h3 = Host.objects.create(
        name="h3",
        address="127.0.0.1",
        ssh_port=3,
        host_key="ssh-ed25519 AAAA",
        state=Host.State.ACTIVE,
        checks_ok=True,
        cpus=2,
        memory_mb=1024,
    )
    image.hosts.add(h3)
    _app(owner, image, "web", hosts[0], memory_mb=512)
    _app(owner, image, "api", hosts[1], memory_mb=256)
    _app(owner, image, "db", h3, memory_mb=768)
    Host.objects.filter(pk__in=[hosts[1].pk, h3.pk]).update(checks_ok=False)

    response = ops_client.post(APPLY, follow=True)

    assert not Drain.objects.exists()
    assert not Host.objects.filter(state=Host.State.DRAINING).exists()
    assert "The plan leaves 1 instance(s) without a host; nothing is drained." in response.content.decode()


def test_apply_refuses_a_developer(owner: User, half_empty: list[App]) -> None:
    client = Client()
    client.force_login(owner)

    response = client.post(APPLY)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert not Drain.objects.exists()
    assert not Host.objects.filter(state=Host.State.DRAINING).exists()


def test_it_warns_about_an_app_stacked_on_one_host_that_it_would_leave_there(
    ops_client: Client, owner: User, image: BaseImage, hosts: list[Host]
) -> None:
    """After a drain and a host taken back, an app's instances sit on one host; everything fits
    there, so the plan moves nothing, and the page says what that leaves at risk."""
    app = _app(owner, image, "web", hosts[0])
    services.app_scale(user=owner, app=app, instances=2, hosts=[hosts[0]])

    body = ops_client.get(URL).content.decode()

    assert "No host can be emptied" in body
    assert "1 app has every instance on one host (web on h1)" in " ".join(body.split())
    list_page = ops_client.get(reverse("hosts:list")).content.decode()
    assert 'data-stacked="web"' in list_page and "Move one to h2" in list_page
