"""The resize pages: the Resources card of the app page refuses with the service's own messages,
leads decide in their inbox through htmx, nobody decides their own request, and the nav's badge
counts what waits for the user."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from apps.accounts.models import Membership, Team
from apps.applications import services as catalog
from apps.applications.models import App, BaseImage
from apps.instances.models import Instance, Operation
from apps.metrics.models import Sample
from apps.resources import services
from apps.resources.models import ResourceRequest

HTMX = {"HX-Request": "true"}
MiB = 1024 * 1024


@pytest.fixture
def app(owner: User, alpha: Team, image: BaseImage) -> App:
    return catalog.app_create(user=owner, team=alpha, slug="web", base_image=image, instances=1)


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _file(user: User, app: App, data: dict[str, str] | None = None, *, htmx: bool = True) -> Any:
    body = {"memory_mb": "128", "cpus": "0.25", "reason": "the cache grew"} | (data or {})
    return _client(user).post(
        reverse("resources:request", args=[app.slug]), body, headers=HTMX if htmx else {}
    )


def _text(response: Any) -> str:
    # The messages are HTML-escaped in the page; compare them as a reader sees them.
    return html.unescape(response.content.decode())


# --- the request form -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"memory_mb": "5"}, "Memory must be at least 6 MiB (got 5)."),
        ({"memory_mb": "lots"}, "Memory must be a whole number of MiB (got 'lots')."),
        ({"memory_mb": ""}, "Memory must be a whole number of MiB (got '')."),
        ({"cpus": "0"}, "CPU must be more than 0 cores (got 0)."),
        ({"cpus": "0.125"}, "CPU has at most two decimals, e.g. 0.25 (got 0.125)."),
        ({"cpus": "many"}, "CPU must be a number of cores, e.g. 0.5 (got 'many')."),
        ({"reason": "  "}, "Say why the app needs the change (it goes to the lead)."),
        ({"memory_mb": "64"}, "web already has 64 MiB and 0.25 CPU per instance; nothing to change."),
        ({"memory_mb": "4096"}, "has 960 MiB free; 1 instance(s) at 4096 MiB need 4032 MiB more"),
    ],
)
def test_it_refuses_a_bad_request_with_the_services_message(
    owner: User, app: App, data: dict[str, str], message: str
) -> None:
    response = _file(owner, app, data)
    assert response.status_code == 422
    assert message in _text(response)
    assert 'role="alert"' in _text(response) or 'class="errorlist' in _text(response)
    assert not ResourceRequest.objects.exists()


def test_it_shows_both_field_refusals_at_once_and_keeps_what_was_typed(owner: User, app: App) -> None:
    response = _file(owner, app, {"memory_mb": "5", "cpus": "many"})
    text = _text(response)
    assert "Memory must be at least 6 MiB (got 5)." in text
    assert "CPU must be a number of cores, e.g. 0.5 (got 'many')." in text
    assert 'value="5"' in text
    assert 'value="many"' in text


def test_it_refuses_a_request_over_the_team_quota_with_the_figures(
    owner: User, alpha: Team, app: App
) -> None:
    alpha.quota_memory_mb = 100
    alpha.save()
    response = _file(owner, app, {"memory_mb": "128"})
    assert response.status_code == 422
    assert (
        "Quota exceeded: memory: 128 MiB after resizing web to 128 MiB and 0.25 CPU, over team alpha's "
        "quota of 100 MiB by 28 MiB. Ask ops to raise the quota, or free some."
    ) in _text(response)


def test_it_refuses_a_second_open_request(owner: User, app: App) -> None:
    assert _file(owner, app).status_code == 200
    response = _file(owner, app, {"memory_mb": "256"})
    assert response.status_code == 422
    assert (
        "web already has an open request (memory 64 → 128 MiB, Waiting for a lead); wait for it, "
        "or cancel it first."
    ) in _text(response)
    assert ResourceRequest.objects.count() == 1


def test_without_htmx_a_refusal_is_a_page_that_keeps_the_form(owner: User, app: App) -> None:
    response = _file(owner, app, {"memory_mb": "5"}, htmx=False)
    assert response.status_code == 422
    text = _text(response)
    assert "<title>Resources of web" in text
    assert "Memory must be at least 6 MiB (got 5)." in text
    assert 'value="5"' in text


def test_a_filed_request_waits_for_a_lead_and_shows_on_the_card(owner: User, app: App) -> None:
    response = _file(owner, app)
    assert response.status_code == 200
    text = _text(response)
    assert "waits for a lead of team alpha or ops" in text
    assert 'id="open-request" data-state="pending"' in text
    assert "Cancel request" in text
    assert 'id="resize-form"' not in text  # one request at a time
    request = ResourceRequest.objects.get()
    assert (request.state, request.memory_mb, request.requested_by) == ("pending", 128, owner)
    app.refresh_from_db()
    assert app.memory_mb == 64  # nothing changes before a lead approves


def test_without_htmx_filing_goes_back_to_the_app_page(owner: User, app: App) -> None:
    response = _file(owner, app, htmx=False)
    assert response.status_code == 302
    assert response["Location"] == reverse("catalog:detail", args=["web"])


def test_a_change_within_the_auto_approve_step_applies_at_once(owner: User, alpha: Team, app: App) -> None:
    alpha.auto_approve_memory_mb = 64
    alpha.save()
    response = _file(owner, app)
    assert "within team alpha's quota and auto-approve step" in _text(response)
    assert ResourceRequest.objects.get().state == "approved"
    assert Operation.objects.filter(app=app, kind=Operation.Kind.RESIZE).exists()
    assert "128 MiB and 0.25 CPU per instance" in _text(response)  # the card shows the new limits


def test_the_requester_cancels_and_a_lead_may_not(owner: User, lead: User, app: App) -> None:
    _file(owner, app)
    request = ResourceRequest.objects.get()
    refused = _client(lead).post(reverse("resources:cancel", args=[request.pk]), headers=HTMX)
    assert refused.status_code == 403
    assert "Only who filed the request, or ops, can cancel it." in _text(refused)
    done = _client(owner).post(reverse("resources:cancel", args=[request.pk]), headers=HTMX)
    assert done.status_code == 200
    assert "Request cancelled." in _text(done)
    assert 'id="resize-form"' in _text(done)  # a new request can be filed
    request.refresh_from_db()
    assert request.state == "cancelled"


def test_only_a_partially_applied_request_is_retried(owner: User, app: App) -> None:
    _file(owner, app)
    request = ResourceRequest.objects.get()
    response = _client(owner).post(reverse("resources:retry", args=[request.pk]), headers=HTMX)
    assert response.status_code == 422
    assert (
        "Only a partially applied request, or one whose apply failed, can be retried; this one is waiting for a lead."
        in _text(response)
    )


# --- the app page ---------------------------------------------------------------------------------


def test_the_app_page_shows_usage_limits_quota_room_and_history(
    owner: User, lead: User, alpha: Team, app: App
) -> None:
    alpha.quota_memory_mb = 1000
    alpha.save()
    instance = Instance.objects.select_related("host").get(app=app)
    Sample.objects.create(
        app=app,
        slot=0,
        host=instance.host,
        container_id="c0",
        t=timezone.now() - timedelta(seconds=5),
        cpu_limit=0.25,
        cpu_ns=0,
        memory_usage=50 * MiB,
        memory_limit=64 * MiB,
        working_set=40 * MiB,
    )
    request = services.request_create(user=owner, app=app, memory_mb=128, cpus="0.25", reason="cache")
    services.request_decide(user=lead, request=request, approve=False, comment="use less cache")

    text = _text(_client(owner).get(reverse("catalog:detail", args=["web"])))
    card = text[text.index('id="resources"') :]
    assert "64 MiB and 0.25 CPU per instance" in card
    assert re.search(r"<td>40 MiB <span class=\"muted\">\(sample from [\d:]+ UTC\)</span></td>", card)
    assert "memory: 64 of 1000 MiB reserved, 936 MiB free" in card
    assert "CPU: no quota" in card
    assert f"{instance.host.name}: 960 MiB and 1.75 CPU free" in card
    assert "owner <strong>requested</strong>: cache" in card
    assert "lead <strong>rejected</strong>: use less cache" in card
    assert 'id="resize-form"' in card  # rejected: a new request can be filed


# --- the approvals inbox --------------------------------------------------------------------------


@pytest.fixture
def three_requests(
    owner: User, lead: User, outsider: User, alpha: Team, beta: Team, image: BaseImage
) -> dict:
    """Pending: the owner's (alpha), the lead's own (alpha) and the outsider's (team beta)."""
    web = catalog.app_create(user=owner, team=alpha, slug="web", base_image=image, instances=1)
    api = catalog.app_create(user=lead, team=alpha, slug="api", base_image=image, instances=1)
    shop = catalog.app_create(user=outsider, team=beta, slug="shop", base_image=image, instances=1)
    return {
        name: services.request_create(user=user, app=app, memory_mb=128, cpus="0.25", reason=f"{name} grows")
        for name, user, app in (("owner", owner, web), ("lead", lead, api), ("outsider", outsider, shop))
    }


def _pending_ids(text: str) -> set[int]:
    return {
        int(pk) for pk in re.findall(r'<article class="card" id="request-(\d+)" data-state="pending"', text)
    }


def test_the_inbox_lists_only_what_the_user_may_decide(
    owner: User, lead: User, ops: User, three_requests: dict
) -> None:
    lead_text = _text(_client(lead).get(reverse("resources:approvals")))
    assert _pending_ids(lead_text) == {three_requests["owner"].pk}  # not their own, not team beta's
    assert "owner grows" in lead_text
    assert "Fits now</dt><dd>yes" in lead_text

    ops_text = _text(_client(ops).get(reverse("resources:approvals")))
    assert _pending_ids(ops_text) == {r.pk for r in three_requests.values()}

    owner_text = _text(_client(owner).get(reverse("resources:approvals")))
    assert _pending_ids(owner_text) == set()
    assert "Only team leads and ops decide resource requests" in owner_text


def test_the_inbox_says_when_approving_would_be_refused(
    lead: User, alpha: Team, three_requests: dict
) -> None:
    alpha.quota_memory_mb = 150  # web and api reserve 128 now; web at 128 would make 192
    alpha.save()
    text = _text(_client(lead).get(reverse("resources:approvals")))
    assert "no: Quota exceeded: memory: 192 MiB after resizing web" in text


def test_the_badge_counts_what_waits_for_the_user(
    owner: User, lead: User, ops: User, three_requests: dict
) -> None:
    def badge(user: User) -> str | None:
        text = _client(user).get(reverse("home")).content.decode()
        if 'id="nav-approvals"' not in text:
            return None
        found = re.search(
            r'id="nav-approvals">Approvals<span id="approvals-badge">(?: <span class="badge[^>]*>(\d+)</span>)?</span></a>',
            text,
        )
        assert found, text
        return found.group(1) or ""

    assert badge(lead) == "1"
    assert badge(ops) == "3"
    assert badge(owner) is None  # a developer gets no Approvals link
    services.request_decide(user=ops, request=three_requests["owner"], approve=False)
    assert badge(lead) == ""  # the link stays, without a badge


def test_a_lead_approves_through_htmx_and_the_item_shows_the_decision(
    owner: User, lead: User, three_requests: dict
) -> None:
    request = three_requests["owner"]
    response = _client(lead).post(
        reverse("resources:approve", args=[request.pk]), {"comment": "go ahead"}, headers=HTMX
    )
    assert response.status_code == 200
    text = _text(response)
    # A line saying what became of it, not a card still waiting for a decision.
    assert text.lstrip().startswith(
        f'<p class="notice" role="status" id="request-{request.pk}" data-state="approved"'
    )
    assert "Approved, applying" in text
    assert "by lead: “go ahead”" in text
    # "Decided lately" follows, out of band, with the request in it.
    assert '<section class="card" id="decided" hx-swap-oob="true">' in text
    assert f'<tr data-request="{request.pk}">' in text
    # The nav's badge follows, out of band: nothing waits for the lead any more.
    assert '<span id="approvals-badge" hx-swap-oob="true"></span>' in text
    request.refresh_from_db()
    assert (request.state, request.decided_by, request.comment) == ("approved", lead, "go ahead")
    assert Operation.objects.filter(app=request.app, kind=Operation.Kind.RESIZE, status="queued").exists()
    assert [e.action for e in request.events.all()] == ["requested", "approved"]
    # Decided: off the inbox, on the list below.
    inbox = _text(_client(lead).get(reverse("resources:approvals")))
    assert _pending_ids(inbox) == set()
    assert f'<tr data-request="{request.pk}">' in inbox


def test_a_lead_rejects_with_a_comment(owner: User, lead: User, three_requests: dict) -> None:
    request = three_requests["owner"]
    response = _client(lead).post(
        reverse("resources:reject", args=[request.pk]), {"comment": "trim the cache"}, headers=HTMX
    )
    assert response.status_code == 200
    assert "Rejected" in _text(response)
    request.refresh_from_db()
    assert (request.state, request.comment) == ("rejected", "trim the cache")
    assert not Operation.objects.filter(kind=Operation.Kind.RESIZE).exists()


def test_nobody_approves_their_own_request(lead: User, three_requests: dict) -> None:
    request = three_requests["lead"]
    response = _client(lead).post(reverse("resources:approve", args=[request.pk]), headers=HTMX)
    assert response.status_code == 403
    assert "You filed this request; another lead of the team or ops must decide it." in _text(response)
    without_htmx = _client(lead).post(reverse("resources:approve", args=[request.pk]))
    assert without_htmx.status_code == 403
    assert "You filed this request" in _text(without_htmx)
    request.refresh_from_db()
    assert request.state == "pending"


def test_a_developer_may_not_decide(owner: User, alpha: Team, three_requests: dict) -> None:
    other = User.objects.create_user("dev2", password="pw")
    Membership.objects.create(team=alpha, user=other, role=Membership.Role.DEVELOPER)
    response = _client(other).post(
        reverse("resources:approve", args=[three_requests["owner"].pk]), headers=HTMX
    )
    assert response.status_code == 403
    assert "Only a lead of team alpha or ops decide resource requests." in _text(response)


def test_a_decided_request_cannot_be_decided_again(lead: User, ops: User, three_requests: dict) -> None:
    request = three_requests["owner"]
    _client(lead).post(reverse("resources:reject", args=[request.pk]), headers=HTMX)
    response = _client(ops).post(reverse("resources:approve", args=[request.pk]), headers=HTMX)
    assert response.status_code == 422
    text = _text(response)
    assert "This request is already rejected (by lead)." in text
    assert 'data-state="rejected"' in text


def test_an_outsider_cannot_see_or_decide_another_teams_request(outsider: User, three_requests: dict) -> None:
    pk = three_requests["owner"].pk
    assert _client(outsider).post(reverse("resources:approve", args=[pk]), headers=HTMX).status_code == 404
    assert _client(outsider).post(reverse("resources:cancel", args=[pk]), headers=HTMX).status_code == 404
