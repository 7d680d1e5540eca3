"""The "Move a VM" wizard in the browser: who sees what, trusting the VM's key, the plan form
(prefilled from the inspection, refusals next to their fields), the progress fragment that polls
while the move runs, and the inspection report. No SSH: rows are made directly."""

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

from apps.accounts.models import Team
from apps.applications import secret_env
from apps.applications import services as catalog
from apps.applications.models import BaseImage
from apps.hosts.models import Host
from apps.hosts.transport import fingerprint
from apps.network.models import IPAllocation, IPPool
from apps.relocations import services
from apps.relocations.models import Inspection, Relocation, Step

HTMX = {"HX-Request": "true"}
# An ed25519 public key as a VM offers it: "<type> <base64>".
OFFERED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBnXmNkpgxW4gB8KXW2Jb0f6bjXXh3bH3YkQnVnYkq7W"

# What inspect.inspect_vm reports for a small Python app behind gunicorn on Debian.
REPORT: dict[str, Any] = {
    "os": {
        "pretty_name": "Debian GNU/Linux 11 (bullseye)",
        "id": "debian",
        "version_id": "11",
        "kernel": "5.10.0-28-amd64",
        "hostname": "notes-vm",
    },
    "cpu": {"count": 2, "used_percent": 3.5},
    "memory": {"total_mb": 1987, "available_mb": 1500, "used_mb": 487},
    "addresses": [
        {"address": "10.213.7.20", "prefixlen": 24, "dev": "eth0", "mac": "52:54:00:12:34:56", "ssh": True},
        {"address": "10.213.7.21", "prefixlen": 24, "dev": "eth1", "mac": "52:54:00:12:34:57", "ssh": False},
    ],
    "listening": [
        {
            "port": 8000,
            "address": "0.0.0.0",
            "pid": 412,
            "process": "gunicorn",
            "argv": [
                "/srv/notes/venv/bin/python3",
                "/srv/notes/venv/bin/gunicorn",
                "--bind",
                "0.0.0.0:8000",
                "notes.wsgi",
            ],
            "cwd": "/srv/notes",
            "exe": "/usr/bin/python3.9",
            "user": "notes",
            "rss_mb": 61.3,
            "cpu_percent": 1.2,
            "runtime": "python",
            "env": {"NOTES_DB": "/srv/notes/data/notes.db", "DB_PASSWORD": "********"},
            "config_files": ["/srv/notes/settings.ini"],
        },
        {
            "port": 9100,
            "address": "10.213.7.20",
            "pid": 377,
            "process": "node_exporter",
            "argv": ["/usr/local/bin/node_exporter"],
            "cwd": "/",
            "exe": "/usr/local/bin/node_exporter",
            "user": "prometheus",
            "rss_mb": 14.0,
            "cpu_percent": 0.1,
            "runtime": "other",
            "env": {},
            "config_files": [],
        },
    ],
    "runtime": {"kind": "python", "evidence": "python3 runs gunicorn", "pid": 412},
    "candidates": [
        {
            "path": "/srv/notes",
            "size_bytes": 12_345_678,
            "files": 1432,
            "reason": "working directory of gunicorn (pid 412)",
        },
        {"path": "/opt/tools", "size_bytes": 2048, "files": 3, "reason": "directory under /opt"},
    ],
    "config_files": ["/srv/notes/settings.ini", "/etc/notes.conf"],
    "env": {"NOTES_DB": "/srv/notes/data/notes.db", "DB_PASSWORD": "********", "PATH": "/usr/bin:/bin"},
    "cron": [
        {
            "source": "/etc/cron.d/notes",
            "line": "*/5 * * * * notes /srv/notes/venv/bin/python manage.py clearsessions",
        }
    ],
    "services": [
        {
            "name": "notes",
            "kind": "systemd",
            "path": "/etc/systemd/system/notes.service",
            "start": ["systemctl", "start", "notes.service"],
            "stop": ["systemctl", "stop", "notes.service"],
        }
    ],
    "main_pid": 412,
    "errors": ["cron: grep: /var/spool/cron/crontabs: Permission denied"],
    "duration_s": 2.41,
}


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _text(response: Any) -> str:
    return html.unescape(response.content.decode())


def _words(response: Any) -> str:
    """The page as a reader sees it: no tags, single spaces."""
    return " ".join(re.sub(r"<[^>]+>", " ", _text(response)).split()).replace(" .", ".").replace(" ,", ",")


def _field(response: Any, name: str) -> str:
    """The paragraph of one form field: its input, help and errors."""
    match = re.search(rf'<p id="field-{name}">(.*?)</p>', response.content.decode(), re.S)
    assert match, f"no field {name}"
    return html.unescape(match.group(1))


@pytest.fixture
def pool(hosts: list[Host]) -> IPPool:
    pool = IPPool.objects.create(
        name="public",
        network="10.213.7.0/24",
        gateway="10.213.7.1",
        range_start="10.213.7.10",
        range_end="10.213.7.50",
    )
    pool.hosts.set(hosts)
    return pool


@pytest.fixture
def python_image(hosts: list[Host]) -> BaseImage:
    image = BaseImage.objects.create(
        name="slipway/python", tag="3.11", runtime="python", default_command=["python3"]
    )
    image.hosts.set(hosts)
    return image


def _relocation(
    team: Team, user: User, *, state: str = Relocation.State.NEW, name: str = "Notes VM"
) -> Relocation:
    pinned = state != Relocation.State.NEW
    return Relocation.objects.create(
        team=team,
        name=name,
        address="10.213.7.20",
        offered_key=OFFERED,
        host_key=OFFERED if pinned else "",
        key_confirmed_at=timezone.now() if pinned else None,
        state=state,
        created_by=user,
    )


@pytest.fixture
def relocation(alpha: Team, owner: User) -> Relocation:
    return _relocation(alpha, owner)


@pytest.fixture
def inspected(alpha: Team, owner: User, pool: IPPool, python_image: BaseImage) -> Relocation:
    relocation = _relocation(alpha, owner, state=Relocation.State.INSPECTED)
    Inspection.objects.create(relocation=relocation, report=REPORT)
    return relocation


def _suggested(relocation: Relocation) -> dict[str, Any]:
    """The suggestion with the value of the secret the inspection could not copy typed in."""
    plan = services.plan_suggestion(relocation)
    plan["secrets"] = {"DB_PASSWORD": "s3cret"}
    return plan


def _as_form(plan: dict[str, Any]) -> dict[str, str]:
    """A plan as the browser posts the form: lists one item a line, env NAME=value lines, a
    secret's value typed in its row (a masked one left empty)."""
    out: dict[str, str] = {}
    for name, value in plan.items():
        if name == "secrets":
            out |= {f"secret_value__{k}": v for k, v in value.items() if v != "********"}
        elif isinstance(value, list):
            out[name] = "\n".join(value)
        elif isinstance(value, dict):
            out[name] = "\n".join(f"{k}={v}" for k, v in value.items())
        else:
            out[name] = "" if value is None else str(value)
    return out


# --- who sees what --------------------------------------------------------------------------------


def test_the_list_shows_only_the_relocations_of_the_users_teams(
    alpha: Team, beta: Team, owner: User, outsider: User, ops: User
) -> None:
    _relocation(alpha, owner, name="alpha-vm")
    _relocation(beta, outsider, name="beta-vm")
    page = _text(_client(owner).get(reverse("relocations:list")))
    assert "alpha-vm" in page and "beta-vm" not in page
    assert reverse("relocations:create") in page
    everything = _text(_client(ops).get(reverse("relocations:list")))
    assert "alpha-vm" in everything and "beta-vm" in everything


def test_an_outsider_gets_404_on_every_page_of_someone_elses_move(
    inspected: Relocation, outsider: User
) -> None:
    client = _client(outsider)
    inspection = inspected.inspections.get()
    assert client.get(reverse("relocations:detail", args=[inspected.pk])).status_code == 404
    assert (
        client.get(reverse("relocations:inspection", args=[inspected.pk, inspection.pk])).status_code == 404
    )
    assert client.post(reverse("relocations:cancel", args=[inspected.pk])).status_code == 404
    inspected.refresh_from_db()
    assert inspected.state == Relocation.State.INSPECTED


def test_the_nav_links_to_the_wizard(owner: User) -> None:
    page = _text(_client(owner).get(reverse("catalog:list")))
    assert f'href="{reverse("relocations:list")}">Move a VM' in page


# --- register -------------------------------------------------------------------------------------


def test_registering_a_bad_address_shows_the_field_error_and_reaches_nothing(
    alpha: Team, owner: User
) -> None:
    response = _client(owner).post(
        reverse("relocations:create"),
        {"team": alpha.pk, "name": "notes", "address": "not-an-ip", "port": "22", "ssh_user": "root"},
    )
    assert response.status_code == 400
    assert "'not-an-ip' is not an IP address; give the VM's IPv4 or IPv6 address." in _field(
        response, "address"
    )
    assert 'value="notes"' in _field(response, "name")  # what was typed stays
    assert not Relocation.objects.exists()


def test_registering_shows_every_field_refusal_at_once(alpha: Team, owner: User) -> None:
    response = _client(owner).post(
        reverse("relocations:create"),
        {"team": alpha.pk, "name": "", "address": "10.0.0.1", "port": "70000", "ssh_user": "bad user"},
    )
    assert response.status_code == 400
    assert "Give the VM a name of 1 to 60 characters." in _field(response, "name")
    assert "The SSH port must be a number from 1 to 65535 (got '70000')." in _field(response, "port")
    assert "The SSH user is 1 to 32 letters" in _field(response, "ssh_user")


def test_the_register_form_offers_only_the_users_teams(alpha: Team, beta: Team, owner: User) -> None:
    page = _text(_client(owner).get(reverse("relocations:create")))
    assert "Alpha" in page and "Beta" not in page
    response = _client(owner).post(
        reverse("relocations:create"), {"team": beta.pk, "name": "x", "address": "not-an-ip"}
    )
    assert response.status_code == 400
    assert "Select a valid choice" in _field(response, "team")


# --- trust ----------------------------------------------------------------------------------------


def test_the_offered_fingerprint_is_shown_but_the_field_is_not_prefilled(
    relocation: Relocation, owner: User
) -> None:
    response = _client(owner).get(reverse("relocations:detail", args=[relocation.pk]))
    page = _text(response)
    assert fingerprint(OFFERED) in page
    assert "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub" in page
    assert "value=" not in _field(response, "fingerprint")


def test_a_wrong_fingerprint_is_refused_and_pins_nothing(relocation: Relocation, owner: User) -> None:
    response = _client(owner).post(
        reverse("relocations:confirm-key", args=[relocation.pk]),
        {"fingerprint": "256 SHA256:" + "A" * 43 + " root@vm (ED25519)"},
    )
    assert response.status_code == 400
    assert f"That is not the fingerprint the VM offered ({fingerprint(OFFERED)})" in _field(
        response, "fingerprint"
    )
    relocation.refresh_from_db()
    assert relocation.host_key == "" and relocation.key_confirmed_at is None
    assert relocation.state == Relocation.State.NEW


def test_the_right_fingerprint_pins_the_key(relocation: Relocation, owner: User) -> None:
    client = _client(owner)
    response = client.post(
        reverse("relocations:confirm-key", args=[relocation.pk]),
        {"fingerprint": f"  {fingerprint(OFFERED)} "},
    )
    assert response.status_code == 302
    relocation.refresh_from_db()
    assert relocation.host_key == OFFERED and relocation.state == Relocation.State.READY
    response = client.get(response["Location"])
    assert f"Key pinned {fingerprint(OFFERED)} at" in _words(response)
    page = _text(response)
    assert 'id="confirm-key-form"' not in page
    # Now the password form is offered, and the VM can be inspected.
    assert 'type="password"' in page and 'autocomplete="off"' in page
    assert reverse("relocations:inspect", args=[relocation.pk]) in page


def test_a_password_is_never_asked_for_before_the_key_is_pinned(relocation: Relocation, owner: User) -> None:
    client = _client(owner)
    assert 'type="password"' not in _text(client.get(reverse("relocations:detail", args=[relocation.pk])))
    response = client.post(reverse("relocations:install-key", args=[relocation.pk]), {"password": "hunter2"})
    assert response.status_code == 400
    assert "Confirm the VM's host key first: a password is never sent to an unconfirmed host." in _text(
        response
    )
    assert 'type="password"' not in _text(response)
    assert "hunter2" not in _text(response)
    relocation.refresh_from_db()
    assert relocation.key_installed_at is None


def test_inspecting_an_unpinned_vm_is_refused_with_the_services_message(
    relocation: Relocation, owner: User
) -> None:
    client = _client(owner)
    response = client.post(reverse("relocations:inspect", args=[relocation.pk]), follow=True)
    assert "Confirm the VM&#x27;s host key before inspecting it." in response.content.decode()
    relocation.refresh_from_db()
    assert relocation.state == Relocation.State.NEW


# --- inspect --------------------------------------------------------------------------------------


def test_the_inspection_fragment_polls_while_inspecting_and_stops_after(
    inspected: Relocation, owner: User
) -> None:
    client = _client(owner)
    url = reverse("relocations:detail", args=[inspected.pk])
    Relocation.objects.filter(pk=inspected.pk).update(state=Relocation.State.INSPECTING)
    response = client.get(url, headers=HTMX)
    assert response.status_code == 200
    assert 'hx-trigger="every 1s"' in response.content.decode() and "inspecting…" in _text(response)
    assert "<html" not in response.content.decode()  # the fragment only

    Relocation.objects.filter(pk=inspected.pk).update(state=Relocation.State.INSPECTED)
    response = client.get(url, headers=HTMX)
    assert response.status_code == 286
    assert "hx-trigger" not in response.content.decode()
    assert reverse("relocations:inspection", args=[inspected.pk, inspected.inspections.get().pk]) in _text(
        response
    )
    assert 'id="plan-form"' in response.content.decode()  # the outcome: the plan can be set now


def test_a_failed_inspection_shows_why(alpha: Team, owner: User) -> None:
    relocation = _relocation(alpha, owner, state=Relocation.State.READY)
    message = "authentication failed. Install the portal's key on the VM first"
    Inspection.objects.create(relocation=relocation, error=message)
    Relocation.objects.filter(pk=relocation.pk).update(error=message)
    page = _text(_client(owner).get(reverse("relocations:detail", args=[relocation.pk])))
    assert message in page
    assert "Inspect the VM first: the plan is suggested from what the inspection found." in page


# --- plan -----------------------------------------------------------------------------------------


def test_the_plan_form_is_prefilled_from_the_suggestion(
    inspected: Relocation, owner: User, python_image: BaseImage
) -> None:
    response = _client(owner).get(reverse("relocations:detail", args=[inspected.pk]))
    assert response.status_code == 200
    assert 'value="notes-vm"' in _field(response, "app_slug")
    assert f'<option value="{python_image.pk}" selected>' in _field(response, "base_image")
    assert 'value="/srv/notes"' in _field(response, "app_dir")
    assert (
        "/srv/notes/venv/bin/python3\n/srv/notes/venv/bin/gunicorn\n--bind\n0.0.0.0:8000\nnotes.wsgi"
        in _field(response, "command")
    )
    assert "NOTES_DB=/srv/notes/data/notes.db" in _field(response, "env")
    assert "DB_PASSWORD" not in _field(response, "env")  # a secret: a row of its own, value to type
    assert "PATH=" not in _field(response, "env")
    assert 'value="8000"' in _field(response, "port")
    assert '<option value="10.213.7.21" selected>' in _field(response, "keep_address")
    assert "10.213.7.20" not in _field(response, "keep_address")  # the SSH address is never offered
    assert "systemctl\nstop\nnotes.service" in _field(response, "stop_command")
    page = response.content.decode()
    assert '<option value="/srv/notes">11.8' in page  # the datalist of candidates: size and files
    assert "1432 files" in page


def test_the_plan_form_shows_the_saved_plan_once_there_is_one(inspected: Relocation, owner: User) -> None:
    plan = _suggested(inspected)
    services.relocation_plan(user=owner, relocation=inspected, plan=plan | {"app_slug": "notes-app"})
    response = _client(owner).get(reverse("relocations:detail", args=[inspected.pk]))
    assert 'value="notes-app"' in _field(response, "app_slug")


def test_a_plan_with_a_system_directory_shows_the_error_next_to_the_field(
    inspected: Relocation, owner: User
) -> None:
    plan = services.plan_suggestion(inspected) | {"app_dir": "/etc"}
    response = _client(owner).post(reverse("relocations:plan", args=[inspected.pk]), _as_form(plan))
    assert response.status_code == 400
    assert "/etc is a system directory of the VM; give the app's own directory." in _field(
        response, "app_dir"
    )
    assert 'value="/etc"' in _field(response, "app_dir")  # what was typed stays
    inspected.refresh_from_db()
    assert inspected.state == Relocation.State.INSPECTED and inspected.plan == {}


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"base_image": "nope"}, "base_image", "'nope' is not a base image; pick one from the catalog."),
        ({"port": "lots"}, "port", "The app's port must be a number from 1 to 65535 (got 'lots')."),
        ({"memory_mb": ""}, "memory_mb", "Memory must be a whole number of MiB (got '')."),
        ({"env": "no equals sign"}, "env", "Line 1: expected NAME=value"),
        ({"stop_command": ""}, "stop_command", "Give the command as a list of arguments"),
        ({"exclude": "/etc/passwd"}, "exclude", "is outside the app directory /srv/notes"),
        ({"keep_address": "10.213.7.20"}, "keep_address", "is the address the portal reaches the VM on"),
        ({"verify_paths": "no-slash"}, "verify_paths", "give a path that starts with '/'"),
    ],
)
def test_bad_plan_input_is_refused_next_to_its_field(
    inspected: Relocation, owner: User, changes: dict[str, str], field: str, message: str
) -> None:
    data = _as_form(services.plan_suggestion(inspected)) | changes
    response = _client(owner).post(reverse("relocations:plan", args=[inspected.pk]), data)
    assert response.status_code == 400
    assert message in _field(response, field)
    inspected.refresh_from_db()
    assert inspected.plan == {}


def test_a_plan_outside_the_plannable_states_is_refused_at_the_top(alpha: Team, owner: User) -> None:
    relocation = _relocation(alpha, owner, state=Relocation.State.READY)
    response = _client(owner).post(reverse("relocations:plan", args=[relocation.pk]), {"app_slug": "x"})
    assert response.status_code == 400
    assert "a plan can be set once the VM is inspected" in _text(response)


def test_a_valid_plan_is_saved_and_the_relocation_is_planned(
    inspected: Relocation, owner: User, python_image: BaseImage, pool: IPPool
) -> None:
    data = _as_form(services.plan_suggestion(inspected)) | {
        "command": "/srv/notes/venv/bin/gunicorn\n--bind\n0.0.0.0:8000\n--access-logfile\n/srv/notes/log/access log\n",
        "env": "NOTES_DB=/srv/notes/data/notes.db",
        "secret_value__DB_PASSWORD": "s3cret",
        "exclude": "log\n\n/srv/notes/tmp\n",
        "verify_paths": "/\n/static/app.css",
    }
    client = _client(owner)
    response = client.post(reverse("relocations:plan", args=[inspected.pk]), data)
    assert response.status_code == 302
    inspected.refresh_from_db()
    assert inspected.state == Relocation.State.PLANNED and inspected.planned_at is not None
    plan = inspected.plan
    # One argument a line: the one with a space stays whole; the trailing newline adds nothing.
    assert plan["command"] == [
        "/srv/notes/venv/bin/gunicorn",
        "--bind",
        "0.0.0.0:8000",
        "--access-logfile",
        "/srv/notes/log/access log",
    ]
    assert plan["env"] == {"NOTES_DB": "/srv/notes/data/notes.db"}
    assert secret_env.opened(plan["secrets"]) == {"DB_PASSWORD": "s3cret"}
    assert plan["exclude"] == ["log", "tmp"]
    assert plan["verify_paths"] == ["/", "/static/app.css"]
    assert plan["base_image"] == python_image.pk and plan["port"] == 8000
    assert plan["stop_command"] == ["systemctl", "stop", "notes.service"]
    held = IPAllocation.objects.get(pool=pool, address="10.213.7.21")
    assert inspected.kept_address == held and held.app is None
    page = _text(client.get(response["Location"]))
    assert "Plan saved." in page
    assert reverse("relocations:run", args=[inspected.pk]) in page and "Move it" in page


# --- run ------------------------------------------------------------------------------------------


def _running(relocation: Relocation, attempt: int = 1) -> None:
    now = timezone.now()
    Relocation.objects.filter(pk=relocation.pk).update(
        state=Relocation.State.RUNNING, attempt=attempt, plan={"keep_address": "10.213.7.21", "port": 8000}
    )
    for position, name in enumerate(Step.ORDER):
        Step.objects.create(relocation=relocation, attempt=attempt, name=name, position=position)
    Step.objects.filter(relocation=relocation, attempt=attempt, name=Step.Name.COPY).update(
        state=Step.State.RUNNING, done=25_000_000, total=100_000_000, started_at=now - timedelta(seconds=4)
    )


def test_the_progress_fragment_shows_each_step_and_polls_while_running(
    inspected: Relocation, owner: User
) -> None:
    _running(inspected)
    response = _client(owner).get(reverse("relocations:detail", args=[inspected.pk]), headers=HTMX)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'hx-trigger="every 1s"' in page
    copy = re.search(r'<tr data-step="copy".*?</tr>', page, re.S)
    assert copy is not None
    assert '<progress value="25" max="100"' in copy.group(0) and "25%" in copy.group(0)
    assert "23.8\xa0MB of 95.4\xa0MB" in copy.group(0)  # copied of all
    for name in ("create", "health", "cutover", "verify"):
        assert f'data-step="{name}" data-state="pending"' in page
    # The plan cannot change now: it is shown, not offered as a form.
    assert 'id="plan-form"' not in page and 'id="plan-summary"' in page and "keeps 10.213.7.21" in page


def test_the_progress_fragment_stops_polling_and_shows_the_rollback(
    inspected: Relocation, owner: User
) -> None:
    _running(inspected)
    Step.objects.filter(relocation=inspected, name=Step.Name.COPY).update(
        state=Step.State.DONE, finished_at=timezone.now()
    )
    Step.objects.filter(relocation=inspected, name=Step.Name.CREATE).update(
        state=Step.State.FAILED, detail="the instance did not start"
    )
    Step.objects.create(
        relocation=inspected,
        attempt=1,
        name=Step.Name.ROLLBACK,
        position=len(Step.ORDER),
        state=Step.State.DONE,
        detail="instance removed, service started on the VM",
    )
    Relocation.objects.filter(pk=inspected.pk).update(
        state=Relocation.State.ROLLED_BACK, error="Create and start the instance: the instance did not start"
    )
    response = _client(owner).get(reverse("relocations:detail", args=[inspected.pk]), headers=HTMX)
    assert response.status_code == 286
    page = _text(response)
    assert "hx-trigger" not in page
    assert "Create and start the instance: the instance did not start" in page
    assert "Rolled back: instance removed, service started on the VM" in page
    assert "Move it again" in page and "the copy sends only what is missing" in page
    assert '<progress value="100" max="100"' in page  # the copy is done


def test_a_finished_move_links_to_the_app_and_lists_earlier_attempts(
    inspected: Relocation, owner: User, alpha: Team, python_image: BaseImage
) -> None:
    app = catalog.app_create(user=owner, team=alpha, slug="notes-vm", base_image=python_image, instances=0)
    _running(inspected, attempt=1)
    _running(inspected, attempt=2)
    Step.objects.filter(relocation=inspected, attempt=2).update(state=Step.State.DONE)
    Relocation.objects.filter(pk=inspected.pk).update(state=Relocation.State.DONE, app=app)
    response = _client(owner).get(reverse("relocations:detail", args=[inspected.pk]))
    page = _text(response)
    assert reverse("catalog:detail", args=["notes-vm"]) in page
    assert "The app runs as notes-vm, answering on 10.213.7.21:8000." in _words(response)
    assert re.search(r"<details>\s*<summary>Attempt 1</summary>", page)
    assert reverse("relocations:run", args=[inspected.pk]) not in page


def test_moving_is_refused_without_a_plan(inspected: Relocation, owner: User) -> None:
    response = _client(owner).post(reverse("relocations:run", args=[inspected.pk]), follow=True)
    assert "it runs once a plan is confirmed" in _text(response)
    inspected.refresh_from_db()
    assert inspected.state == Relocation.State.INSPECTED and inspected.attempt == 0


def test_cancelling_through_the_confirm_dialog_reloads_the_wizard(
    inspected: Relocation, owner: User, pool: IPPool
) -> None:
    services.relocation_plan(user=owner, relocation=inspected, plan=_suggested(inspected))
    assert IPAllocation.objects.filter(address="10.213.7.21").exists()
    client = _client(owner)
    response = client.post(reverse("relocations:cancel", args=[inspected.pk]), headers=HTMX)
    assert response["HX-Redirect"] == reverse("relocations:detail", args=[inspected.pk])
    inspected.refresh_from_db()
    assert inspected.state == Relocation.State.CANCELLED
    assert not IPAllocation.objects.filter(address="10.213.7.21").exists()
    page = _text(client.get(reverse("relocations:detail", args=[inspected.pk])))
    assert "the VM keeps serving" in page
    assert 'id="cancel-form"' not in page


# --- the report -----------------------------------------------------------------------------------


def test_the_report_page_shows_every_section(inspected: Relocation, owner: User) -> None:
    inspection = inspected.inspections.get()
    older = Inspection.objects.create(relocation=inspected, error="the VM did not answer")
    response = _client(owner).get(reverse("relocations:inspection", args=[inspected.pk, inspection.pk]))
    assert response.status_code == 200
    page = _text(response)
    for section in (
        "system",
        "addresses",
        "listening",
        "candidates",
        "config-files",
        "environment",
        "cron",
        "services",
        "problems",
        "inspections",
    ):
        assert f'id="{section}"' in page, section
    assert "Debian GNU/Linux 11 (bullseye)" in page and "5.10.0-28-amd64" in page
    assert "2 CPUs, 3.5% in use" in page and "1987 MiB" in page
    ssh_row = re.search(r'<tr data-address="10.213.7.20">.*?</tr>', page, re.S)
    assert ssh_row is not None and "SSH" in ssh_row.group(0)
    port = re.search(r'<tr data-port="8000">.*?</tr>', page, re.S)
    assert port is not None
    for value in ("gunicorn", "412", "notes", "61.3 MiB", "python", "0.0.0.0"):
        assert value in port.group(0)
    assert "/srv/notes" in page and "11.8\xa0MB" in page and "1432" in page
    assert "/etc/notes.conf" in page
    assert "DB_PASSWORD" in page and "********" in page
    assert "clearsessions" in page and "systemctl stop notes.service" in page
    assert "Permission denied" in page
    assert reverse("relocations:inspection", args=[inspected.pk, older.pk]) in page
    # The failed one shows its error.
    failed = _text(_client(owner).get(reverse("relocations:inspection", args=[inspected.pk, older.pk])))
    assert "the VM did not answer" in failed


def test_an_inspection_of_another_relocation_is_not_found_under_this_one(
    inspected: Relocation, alpha: Team, owner: User
) -> None:
    other = _relocation(alpha, owner, name="other")
    foreign = Inspection.objects.create(relocation=other, report=REPORT)
    response = _client(owner).get(reverse("relocations:inspection", args=[inspected.pk, foreign.pk]))
    assert response.status_code == 404
