"""Resource requests: refusals with their figures, policy, who decides, one winner, quotas, API.

Applying on real containers is in tests/docker/test_resize_on_lab.py; here the hosts are rows.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from rest_framework.test import APIClient

from apps.accounts.models import Membership, Team
from apps.applications import services as catalog
from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.instances.models import Operation
from apps.metrics.models import Sample
from apps.resources import services
from apps.resources.models import ResourceRequest

MiB = 1024 * 1024


@pytest.fixture
def web(owner: User, alpha: Team, image: BaseImage, hosts: list[Host]) -> App:
    owner.email = "owner@example.invalid"
    owner.save()
    return catalog.app_create(
        user=owner, team=alpha, slug="web", base_image=image, memory_mb=64, cpus="0.5", instances=2
    )


def _ask(
    user: User, app: App, memory: object = 128, cpus: object = "0.5", reason: str = "more traffic"
) -> ResourceRequest:
    return services.request_create(user=user, app=app, memory_mb=memory, cpus=cpus, reason=reason)


@pytest.mark.parametrize(
    ("memory", "cpus", "reason", "message"),
    [
        ("lots", "0.5", "x", "Memory must be a whole number of MiB (got 'lots')."),
        (4, "0.5", "x", "Memory must be at least 6 MiB (got 4)."),
        (128, "0", "x", "CPU must be more than 0 cores (got 0)."),
        (128, "0.125", "x", "CPU has at most two decimals"),
        (128, "many", "x", "CPU must be a number of cores"),
        (128, "0.5", "  ", "Say why the app needs the change"),
        (64, "0.5", "x", "already has 64 MiB and 0.5 CPU per instance; nothing to change."),
        (2048, "0.5", "x", "h1 has 960 MiB free; 1 instance(s) at 2048 MiB need 1984 MiB more"),
        (64, "3", "x", "3 CPU is more than h1's 2 cores"),
    ],
)
def test_bad_requests_are_refused_with_what_is_allowed(
    web: App, owner: User, memory: object, cpus: object, reason: str, message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        _ask(owner, web, memory, cpus, reason)
    assert message in " ".join(refused.value.messages)
    assert not ResourceRequest.objects.exists()


def test_memory_below_what_an_instance_uses_is_refused_with_the_figures(web: App, owner: User) -> None:
    # The hosts here are rows (nothing answers over SSH), so the last sweep's samples count.
    for slot, working_set in ((0, 20), (1, 50)):
        Sample.objects.create(
            app=web, slot=slot, container_id="c", t="2026-11-27T10:00:00Z", cpu_limit=0.5, cpu_ns=0,
            memory_usage=working_set * MiB, memory_limit=64 * MiB, working_set=working_set * MiB,
        )  # fmt: skip
    with pytest.raises(
        ValidationError, match=r"48 MiB is below what slw-web-1 uses now \(50 MiB working set"
    ):
        _ask(owner, web, memory=48)
    # The app lets go of memory; the next sweep says so, and a decrease applies at once.
    Sample.objects.create(
        app=web, slot=1, container_id="c", t="2026-11-27T10:00:10Z", cpu_limit=0.5, cpu_ns=0,
        memory_usage=20 * MiB, memory_limit=64 * MiB, working_set=20 * MiB,
    )  # fmt: skip
    assert _ask(owner, web, memory=40).state == ResourceRequest.State.APPROVED


def test_quota_exceeded_says_by_how_much_for_resize_and_scale(web: App, owner: User, alpha: Team) -> None:
    alpha.quota_memory_mb = 200
    alpha.quota_cpus = Decimal("1.5")
    alpha.save()
    with pytest.raises(
        ValidationError,
        match=r"memory: 256 MiB after resizing web .* over team alpha's quota of 200 MiB by 56 MiB",
    ):
        _ask(owner, web, memory=128)
    with pytest.raises(
        ValidationError,
        match=r"CPU: 2\.00 cores after scaling web to 4, over team alpha's quota of 1\.50 by 0\.50",
    ):
        catalog.app_scale(user=owner, app=web, instances=4)
    assert _ask(owner, web, memory=100).state == ResourceRequest.State.PENDING  # 200 MiB: within


def test_within_quota_and_step_applies_at_once_otherwise_waits_for_a_lead(
    web: App, owner: User, alpha: Team
) -> None:
    alpha.auto_approve_memory_mb = 64
    alpha.save()
    quick = _ask(owner, web, memory=128)
    assert quick.state == ResourceRequest.State.APPROVED and quick.auto_approved
    assert Operation.objects.filter(
        app=web, kind=Operation.Kind.RESIZE, params={"request": quick.pk}
    ).exists()
    web.refresh_from_db()
    assert web.memory_mb == 128  # new instances get the new limits from now on
    ResourceRequest.objects.filter(pk=quick.pk).update(state=ResourceRequest.State.APPLIED)
    slow = _ask(owner, web, memory=256)
    assert slow.state == ResourceRequest.State.PENDING and not slow.auto_approved
    assert [e.action for e in slow.events.all()] == ["requested"]


def test_one_open_request_per_app(web: App, owner: User) -> None:
    _ask(owner, web, memory=128)
    with pytest.raises(ValidationError, match="already has an open request"):
        _ask(owner, web, memory=256)


def test_who_may_decide(
    web: App, owner: User, lead: User, outsider: User, ops: User, alpha: Team, beta: Team
) -> None:
    request = _ask(lead, web, memory=128)  # filed by a lead
    other_lead = User.objects.create_user("beta-lead")
    Membership.objects.create(team=beta, user=other_lead, role=Membership.Role.LEAD)
    refusals = {
        lead: "You filed this request; another lead of the team or ops must decide it.",
        owner: "Only a lead of team alpha or ops decide resource requests.",
        other_lead: "Only a lead of team alpha or ops decide resource requests.",
        outsider: "Only a lead of team alpha or ops decide resource requests.",
    }
    for user, message in refusals.items():
        with pytest.raises(PermissionDenied, match=message):
            services.request_decide(user=user, request=request, approve=True)
    decided = services.request_decide(user=ops, request=request, approve=False, comment="not this week")
    assert decided.state == ResourceRequest.State.REJECTED and decided.decided_by == ops
    with pytest.raises(ValidationError, match="already rejected"):
        services.request_decide(user=ops, request=request, approve=True)


def test_a_lead_approves_and_the_requester_gets_mail(web: App, owner: User, lead: User) -> None:
    request = _ask(owner, web, memory=128)
    with pytest.MonkeyPatch.context() as patch:
        # on_commit callbacks run at once here: the test's transaction never commits.
        patch.setattr("django.db.transaction.on_commit", lambda fn, using=None, robust=False: fn())
        services.request_decide(user=lead, request=request, approve=True, comment="go")
    request.refresh_from_db()
    assert request.state == ResourceRequest.State.APPROVED
    assert [e.action for e in request.events.all()] == ["requested", "approved"]
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["owner@example.invalid"]
    assert "was approved by lead" in mail.outbox[0].body and "Comment: go" in mail.outbox[0].body


@pytest.mark.django_db(transaction=True)
def test_two_approvals_at_the_same_moment_make_one_apply(
    owner: User, lead: User, ops: User, alpha: Team, image: BaseImage, hosts: list[Host]
) -> None:
    app = catalog.app_create(user=owner, team=alpha, slug="race", base_image=image, instances=1)
    request = _ask(owner, app, memory=128)
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def approve(user: User) -> None:
        start.wait()
        try:
            services.request_decide(
                user=user, request=ResourceRequest.objects.get(pk=request.pk), approve=True
            )
            outcomes.append("won")
        except ValidationError as exc:
            outcomes.append(exc.messages[0])
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(u,)) for u in (lead, ops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes)[-1] == "won" and outcomes.count("won") == 1, outcomes
    assert Operation.objects.filter(app=app, kind=Operation.Kind.RESIZE).count() == 1


def test_api_files_lists_and_decides(web: App, owner: User, lead: User, outsider: User) -> None:
    client = APIClient()
    client.force_authenticate(owner)
    bad = client.post(
        f"/api/v1/apps/{web.slug}/resource-requests/", {"memory_mb": 4, "reason": "x"}, format="json"
    )
    assert bad.status_code == 400 and "at least 6 MiB" in bad.json()["memory_mb"][0]
    made = client.post(
        f"/api/v1/apps/{web.slug}/resource-requests/",
        {"memory_mb": 128, "cpus": "1", "reason": "launch"},
        format="json",
    )
    assert made.status_code == 201, made.json()
    body = made.json()
    assert (body["state"], body["old_memory_mb"], body["memory_mb"], body["cpus"]) == (
        "pending",
        64,
        128,
        "1.00",
    )
    assert client.get("/api/v1/resource-requests/", {"state": "nonsense"}).status_code == 400
    assert client.post(f"/api/v1/resource-requests/{body['id']}/approve/").status_code == 403
    client.force_authenticate(outsider)
    assert client.get(f"/api/v1/resource-requests/{body['id']}/").status_code == 404
    client.force_authenticate(lead)
    assert [
        r["id"] for r in client.get("/api/v1/resource-requests/", {"state": "pending"}).json()["results"]
    ] == [body["id"]]
    done = client.post(
        f"/api/v1/resource-requests/{body['id']}/reject/", {"comment": "too much"}, format="json"
    )
    assert done.status_code == 200 and done.json()["state"] == "rejected"
    assert [e["action"] for e in done.json()["events"]] == ["requested", "rejected"]


def test_a_request_whose_apply_failed_outright_can_be_retried_once(web: App, owner: User, lead: User) -> None:
    request = _ask(owner, web, memory=128)
    services.request_decide(user=lead, request=request, approve=True)
    with pytest.raises(ValidationError, match="Only a partially applied request, or one whose apply failed"):
        services.request_retry(user=owner, request=request)  # still being applied
    Operation.objects.filter(app=web, kind=Operation.Kind.RESIZE).update(
        status=Operation.Status.FAILED, error="hosts away"
    )
    services.request_retry(user=owner, request=request)
    assert Operation.objects.filter(app=web, kind=Operation.Kind.RESIZE).count() == 2
    with pytest.raises(ValidationError, match="can be retried; this one is approved, applying"):
        services.request_retry(user=owner, request=request)  # the new apply is queued
    with pytest.raises(ValidationError, match=r"already approved, applying \(by lead\)"):
        services.request_decide(user=lead, request=request, approve=False)
