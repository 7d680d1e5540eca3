"""Releases without hosts: what a release records and says it changed, what is refused and why
(nothing half-made), the deploy's rows, retention's choice, the Releases tab and the API. The
deploy itself on the lab fleet: tests/docker/test_releases_on_lab.py."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone

from apps.accounts.models import Team
from apps.applications import releases, services
from apps.applications.models import App, BaseImage, Release
from apps.instances import retention
from apps.instances.models import Instance, Operation
from tests.helpers import api_client, archive


@pytest.fixture
def web(owner: User, alpha: Team, image: BaseImage) -> App:
    app = services.app_create(user=owner, team=alpha, slug="web", base_image=image, port=8080)
    services.app_scale(user=owner, app=app, instances=2)
    return app


def _done() -> None:
    """The deploys queued so far ended (no worker runs here)."""
    Operation.objects.filter(kind=Operation.Kind.RELEASE).update(status=Operation.Status.SUCCEEDED)


def _ship(
    user: User, app: App, files: dict[str, bytes], **kwargs: object
) -> tuple[Release, Operation | None]:
    data = archive(files)
    return releases.release_create(user=user, app=app, fileobj=data, size=len(data.getvalue()), **kwargs)  # type: ignore[arg-type]


def test_an_app_starts_at_release_1_with_its_configuration_and_no_files(owner: User, web: App) -> None:
    release = web.releases.get()
    assert (release.number, release.source, release.code_number, release.note) == (1, "empty", 1, "created")
    assert release.changes == ["no files yet"]
    assert (release.port, release.base_image_id) == (8080, web.base_image_id)
    assert set(Instance.objects.filter(app=web).values_list("release", flat=True)) == {release.pk}


def test_an_edit_is_a_release_that_says_what_changed_without_the_values(owner: User, web: App) -> None:
    services.app_update(user=owner, app=web, env={"SECRET": "hunter2", "MODE": "a"}, note="two vars")
    _done()
    services.app_update(user=owner, app=web, env={"MODE": "b", "NEW": "1"}, port=9090, health_check="none")
    web.refresh_from_db()
    release = web.release
    assert release is not None and release.number == 3
    assert release.changes == [
        "port 8080 → 9090",
        "env added: NEW",
        "env removed: SECRET",
        "env changed: MODE",
        "health check TCP within 30 s → none",
    ]
    assert "hunter2" not in str(Release.objects.get(app=web, number=2).changes)
    # Its files are those of the release before (none here): nothing to copy.
    assert (release.code_number, release.source) == (1, "empty")
    # No worker ran release 2's deploy here: the instances are still on release 1, and say so.
    deploy = Operation.objects.get(app=web, kind=Operation.Kind.RELEASE, params__number=3)
    assert [(r["from"], r["state"]) for r in deploy.params["instances"]] == [(1, "waiting"), (1, "waiting")]


def test_a_deploy_while_another_runs_is_refused_and_changes_nothing(owner: User, web: App) -> None:
    _ship(owner, web, {"index.html": b"a"})
    running = Operation.objects.get(kind=Operation.Kind.RELEASE)
    with pytest.raises(releases.DeployRunning) as caught:
        services.app_update(user=owner, app=web, env={"A": "1"})
    assert caught.value.operation == running
    assert f"Release 2 of web is being deployed (operation {running.pk}, queued, started by owner" in str(
        caught.value
    )
    web.refresh_from_db()
    assert web.env == {} and web.releases.count() == 2


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"batch": 0}, "batch", "The batch size is 1 to 50 instances at a time (got 0)."),
        ({"batch": "x"}, "batch", "The batch size is a whole number of instances (got 'x')."),
        ({"note": "n" * 501}, "note", "A note has at most 500 characters (got 501)."),
    ],
)
def test_bad_batches_and_notes_are_refused_with_what_is_allowed(
    owner: User, web: App, kwargs: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _ship(owner, web, {"index.html": b"a"}, **kwargs)
    assert caught.value.message_dict[field] == [message]
    assert web.releases.count() == 1 and not Operation.objects.filter(kind=Operation.Kind.RELEASE).exists()


def test_rollbacks_that_cannot_be_are_refused_with_the_reason(
    owner: User, outsider: User, web: App, beta: Team, image: BaseImage
) -> None:
    with pytest.raises(ValidationError, match="web has no earlier kept release to roll back to"):
        releases.release_rollback(user=owner, app=web)
    for page in (b"a", b"b", b"c"):
        _ship(owner, web, {"index.html": page})
        _done()
    with pytest.raises(ValidationError, match=r"web has no release 9 \(its releases are numbered 1 to 4\)"):
        releases.release_rollback(user=owner, app=web, number=9)
    with pytest.raises(ValidationError, match="Release 4 is the one web runs"):
        releases.release_rollback(user=owner, app=web, number=4)
    Release.objects.filter(app=web, number=2).update(pruned_at=timezone.now())
    with pytest.raises(ValidationError, match=r"Release 2 was pruned .* Kept releases: 1, 3, 4"):
        releases.release_rollback(user=owner, app=web, number=2)
    other = services.app_create(user=outsider, team=beta, slug="other", base_image=image)
    with pytest.raises(ValidationError, match="Release 1 belongs to other, not web"):
        releases.release_create(user=owner, app=web, restore=other.releases.get())
    with pytest.raises(PermissionDenied):
        releases.release_rollback(user=outsider, app=web, number=3)
    restored, op = releases.release_rollback(user=owner, app=web)  # the kept release before 4
    assert (restored.number, restored.restored_from, restored.code_number) == (5, 3, 3)
    assert restored.changes == ["rollback to release 3"] and restored.note == "rollback to release 3"
    assert op is not None and op.summary == "deploy release 5: rollback to release 3"


def test_retention_keeps_the_newest_the_running_one_the_one_before_and_what_instances_run(
    owner: User, web: App
) -> None:
    with override_settings(RELEASES_KEEP=2):
        for page in (b"a", b"b", b"c", b"d"):
            _ship(owner, web, {"index.html": page})
            _done()
        # (No worker here: the instances are put on releases by hand, one of them left behind.)
        Instance.objects.filter(app=web, slot=0).update(release=Release.objects.get(app=web, number=5))
        Instance.objects.filter(app=web, slot=1).update(release=Release.objects.get(app=web, number=2))
        assert retention.kept_numbers(web) == {2, 4, 5}
        # Rolled back to 2: 2 is running, and what ran before it (5) and the newest two stay.
        releases.release_rollback(user=owner, app=web, number=2)
        _done()
        assert retention.kept_numbers(App.objects.get(pk=web.pk)) == {2, 5, 6}


def test_seeded_apps_start_at_release_1_like_made_ones(db: None) -> None:
    call_command("seed_apps", team="seeded", apps=3, instances=5, verbosity=0)
    for app in App.objects.filter(team__slug="seeded"):
        assert app.release is not None and app.release.number == 1
        assert set(app.instance_set.values_list("release", flat=True)) <= {app.release.pk}


def test_the_releases_tab_lists_deploys_and_rolls_back(owner: User, outsider: User, web: App) -> None:
    _ship(owner, web, {"index.html": b"a"}, note="first page")
    client = Client()
    client.force_login(owner)
    page = client.get("/apps/web/").content.decode()
    assert 'data-tab="releases"' in page and 'id="release-form"' in page
    assert 'hx-include="#release-form [name=batch]"' in page  # a rollback takes the batch size too
    assert 'data-release="2"' in page and "first page" in page and re.search(r"1 file, \d+\xa0bytes", page)
    # While release 2 is being deployed, the list polls, and a rollback is refused with why.
    live = client.get("/apps/web/releases/", HTTP_HX_REQUEST="true")
    assert live.status_code == 200 and 'hx-trigger="every 1s"' in live.content.decode()
    refused = client.post("/apps/web/releases/1/rollback/", HTTP_HX_REQUEST="true")
    assert refused.status_code == 422
    assert "Rollback refused: Release 2 of web is being deployed" in refused.content.decode()
    _done()
    live = client.get("/apps/web/releases/", HTTP_HX_REQUEST="true")
    assert live.status_code == 286  # nothing deploying: polling stops
    response = client.post("/apps/web/releases/1/rollback/", {"batch": "2"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert Operation.objects.get(params__number=3).params["batch"] == 2
    text = response.content.decode()
    assert "Deploy of release 3 (from 2)" in text and "rollback to release 1" in text
    # The Overview's instances and current release come along, out of band.
    assert 'id="live" hx-swap-oob="true"' in text and 'id="current-release" hx-swap-oob="true"' in text
    bad = client.post(
        "/apps/web/releases/",
        {"file": io.BytesIO(b"no tar"), "note": "x"},
        HTTP_HX_REQUEST="true",
    )
    assert bad.status_code == 422 and "Release refused" in bad.content.decode()
    other = Client()
    other.force_login(outsider)
    assert other.post("/apps/web/releases/1/rollback/").status_code == 404


def test_the_api_lists_releases_and_rolls_back_with_clear_errors(owner: User, web: App) -> None:
    api = api_client(owner)
    _ship(owner, web, {"index.html": b"a"})
    _done()
    listed = api.get("/api/v1/apps/web/releases/").json()["results"]
    assert [(r["number"], r["current"], r["kept"], r["code_from"]) for r in listed] == [
        (2, True, True, 2),
        (1, False, True, 1),
    ]
    assert listed[0]["archive"]["files"] == 1 and listed[1]["archive"] is None
    assert api.get("/api/v1/apps/web/").json()["release"] == 2
    missing = api.post("/api/v1/apps/web/rollback/", {"release": 7}, format="json")
    assert missing.status_code == 400 and "web has no release 7" in str(missing.json()["release"])
    done = api.post("/api/v1/apps/web/rollback/", {"note": "back"}, format="json")
    assert done.status_code == 202, done.content
    body = done.json()
    assert (body["release"]["number"], body["release"]["restored_from"], body["release"]["note"]) == (
        3,
        1,
        "back",
    )
    assert body["operation"]["kind"] == "release" and body["operation"]["params"]["number"] == 3
    again = api.post("/api/v1/apps/web/rollback/", {}, format="json")
    assert again.status_code == 409 and again.json()["operation"] == body["operation"]["id"]


def test_the_edit_page_makes_a_release_with_its_note_and_says_why_it_cannot(owner: User, web: App) -> None:
    client = Client()
    client.force_login(owner)
    form = {
        "base_image": web.base_image_id,
        "command": "",
        "port": "8080",
        "env": "MODE=fast",
        "state_paths": "logs\ndata/uploads",
        "health_check": "tcp",
        "health_path": "/",
        "health_timeout": "30",
        "note": "faster",
    }
    response = client.post("/apps/web/edit/", form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    web.refresh_from_db()
    assert web.release is not None
    assert (web.release.number, web.release.note, web.state_paths) == (2, "faster", ["logs", "data/uploads"])
    assert web.release.changes == ["env added: MODE", "persistent paths none → logs, data/uploads"]
    # While that deploys, another edit is refused on the form with the deploy it waits for.
    refused = client.post("/apps/web/edit/", {**form, "env": "MODE=slow"})
    assert refused.status_code == 400
    assert "Release 2 of web is being deployed" in refused.content.decode()
    _done()
    bad = client.post("/apps/web/edit/", {**form, "state_paths": "../etc"})
    assert (
        bad.status_code == 400
        and "a persistent path is relative to the app&#x27;s files" in bad.content.decode()
    )
    assert web.releases.count() == 2
