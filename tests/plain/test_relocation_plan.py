"""The plan for moving a VM's app: suggested from an inspection report, and every field the
owner can get wrong refused with a message that says what is allowed. No SSH here: the report
is the shape the inspection produces."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError

from apps.accounts.models import Team
from apps.applications import secret_env
from apps.applications import services as catalog
from apps.applications.models import App, BaseImage
from apps.hosts.models import Host
from apps.network.models import IPAllocation, IPPool
from apps.relocations import runner, services
from apps.relocations.models import Inspection, Relocation

REPORT: dict[str, Any] = {
    "os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)", "id": "debian", "version_id": "12"},
    "cpu": {"count": 2, "used_percent": 3.0},
    "memory": {"total_mb": 2048, "available_mb": 1500, "used_mb": 548},
    "addresses": [
        {"address": "10.50.0.18", "prefixlen": 24, "dev": "eth0", "mac": "02:00:00:00:00:18", "ssh": False},
        {"address": "10.50.0.19", "prefixlen": 24, "dev": "eth0", "mac": "02:00:00:00:00:18", "ssh": True},
    ],
    "listening": [
        {
            "port": 8080,
            "address": "0.0.0.0",
            "pid": 40,
            "process": "python3",
            "argv": ["python3", "/srv/notes/server.py", "--port", "8080"],
            "cwd": "/srv/notes",
            "user": "root",
            "rss_mb": 70.0,
            "cpu_percent": 30.0,
            "runtime": "python",
            "env": {"NOTES_TITLE": "Ops notes", "DB_PASSWORD": "********", "PATH": "/usr/bin"},
        }
    ],
    "runtime": {"kind": "python", "evidence": "python3 /srv/notes/server.py", "pid": 40},
    "candidates": [{"path": "/srv/notes", "size_bytes": 3_200_000, "files": 25, "reason": "cwd"}],
    "env": {"NOTES_TITLE": "Ops notes", "DB_PASSWORD": "********", "PATH": "/usr/bin"},
    "services": [
        {
            "name": "notes",
            "kind": "sysv",
            "path": "/etc/init.d/notes",
            "start": ["/etc/init.d/notes", "start"],
            "stop": ["/etc/init.d/notes", "stop"],
        }
    ],
    "main_pid": 40,
    "errors": [],
}


@pytest.fixture
def pool(hosts: list[Host]) -> IPPool:
    pool = IPPool.objects.create(
        name="public",
        network="10.50.0.0/24",
        gateway="10.50.0.1",
        range_start="10.50.0.10",
        range_end="10.50.0.30",
    )
    pool.hosts.set(hosts)
    return pool


@pytest.fixture
def python_image(hosts: list[Host]) -> BaseImage:
    image = BaseImage.objects.create(name="slipway/debian-python", tag="1", runtime="python")
    image.hosts.set(hosts)
    return image


@pytest.fixture
def relocation(owner: User, alpha: Team, pool: IPPool, python_image: BaseImage) -> Relocation:
    relocation = Relocation.objects.create(
        team=alpha,
        name="notes",
        address="10.50.0.19",
        offered_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZWQgb25seSBpbiB0ZXN0cyBrZXkga2V5IGtleQ==",
        host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZWQgb25seSBpbiB0ZXN0cyBrZXkga2V5IGtleQ==",
        state=Relocation.State.INSPECTED,
        created_by=owner,
    )
    Inspection.objects.create(relocation=relocation, report=REPORT)
    return relocation


def _plan(relocation: Relocation, **changes: Any) -> dict[str, Any]:
    plan = services.plan_suggestion(relocation)
    plan["secrets"]["DB_PASSWORD"] = "s3cret"
    plan.update(changes)
    return plan


def _refused(relocation: Relocation, owner: User, field: str, **changes: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        services.relocation_plan(user=owner, relocation=relocation, plan=_plan(relocation, **changes))
    assert field in caught.value.message_dict, caught.value.message_dict
    return " ".join(caught.value.message_dict[field])


def test_the_suggestion_follows_the_inspection(relocation: Relocation, python_image: BaseImage) -> None:
    plan = services.plan_suggestion(relocation)
    assert plan["app_slug"] == "notes"
    assert plan["base_image"] == python_image.pk
    assert plan["app_dir"] == "/srv/notes"
    assert plan["command"] == ["python3", "/srv/notes/server.py", "--port", "8080"]
    assert plan["workdir"] == "/srv/notes"
    assert plan["port"] == 8080
    # 70 MB used, with headroom, in 32 MB steps; CPU from the use seen, at least a quarter.
    assert plan["memory_mb"] == 128
    assert plan["cpus"] == "0.50"
    # The init's own variables are not copied; a masked one is a secret whose value is to type.
    assert plan["env"] == {"NOTES_TITLE": "Ops notes"}
    assert plan["secrets"] == {"DB_PASSWORD": "********"}
    # The address the VM serves on is kept; the one the portal reaches it on is not offered.
    assert plan["keep_address"] == "10.50.0.18"
    assert plan["stop_command"] == ["/etc/init.d/notes", "stop"]
    assert plan["verify_paths"] == ["/"]


def test_a_valid_plan_is_kept_and_its_address_held(relocation: Relocation, owner: User, pool: IPPool) -> None:
    saved = services.relocation_plan(user=owner, relocation=relocation, plan=_plan(relocation))
    assert saved.state == Relocation.State.PLANNED
    assert saved.plan["env"] == {"NOTES_TITLE": "Ops notes"}
    assert secret_env.opened(saved.plan["secrets"]) == {"DB_PASSWORD": "s3cret"}
    held = IPAllocation.objects.get(pool=pool, address="10.50.0.18")
    assert held.app is None and "notes" in held.held_by
    assert saved.kept_address == held
    # Taking a new address instead lets the held one go.
    again = services.relocation_plan(user=owner, relocation=saved, plan=_plan(saved, keep_address=""))
    assert again.kept_address is None
    assert not IPAllocation.objects.filter(address="10.50.0.18").exists()


@pytest.mark.parametrize(
    ("app_dir", "says"),
    [
        ("/etc", "system directory"),
        ("/srv/notes/../../etc", "plain form"),
        ("/srv/other", "not one of the app directories"),
        ("relative/dir", "absolute path"),
        ("/", "system directory"),
    ],
)
def test_an_app_directory_outside_the_vms_app_directory_is_refused(
    relocation: Relocation, owner: User, app_dir: str, says: str
) -> None:
    assert says in _refused(relocation, owner, "app_dir", app_dir=app_dir)


def test_a_directory_inside_the_found_one_is_allowed(relocation: Relocation, owner: User) -> None:
    saved = services.relocation_plan(
        user=owner, relocation=relocation, plan=_plan(relocation, app_dir="/srv/notes/data")
    )
    assert saved.plan["app_dir"] == "/srv/notes/data"


@pytest.mark.parametrize("item", ["../secrets", "/etc/passwd", "logs/../../x"])
def test_exclusions_must_stay_inside_the_app_directory(
    relocation: Relocation, owner: User, item: str
) -> None:
    assert "outside the app directory" in _refused(relocation, owner, "exclude", exclude=[item])


def test_exclusions_given_with_the_full_path_become_relative(relocation: Relocation, owner: User) -> None:
    saved = services.relocation_plan(
        user=owner, relocation=relocation, plan=_plan(relocation, exclude=["/srv/notes/logs", "tmp"])
    )
    assert saved.plan["exclude"] == ["logs", "tmp"]


def test_addresses_that_cannot_be_kept(relocation: Relocation, owner: User, pool: IPPool) -> None:
    assert "over SSH" in _refused(relocation, owner, "keep_address", keep_address="10.50.0.19")
    assert "not an address of the VM" in _refused(
        relocation, owner, "keep_address", keep_address="10.50.0.25"
    )
    other = catalog.app_create(
        user=owner, team=relocation.team, slug="other", base_image=BaseImage.objects.get(runtime="python")
    )
    IPAllocation.objects.create(pool=pool, address="10.50.0.18", app=other, slot=0)
    assert "already allocated" in _refused(relocation, owner, "keep_address")


def test_app_fields_are_checked_like_an_app(relocation: Relocation, owner: User) -> None:
    assert "lowercase" in _refused(relocation, owner, "app_slug", app_slug="Not A Slug").lower()
    assert "65535" in _refused(relocation, owner, "port", port=70000)
    assert "base image" in _refused(relocation, owner, "base_image", base_image=999999)
    assert "real values" in _refused(relocation, owner, "env", env={"DB_PASSWORD": "********"})
    assert "list of arguments" in _refused(relocation, owner, "stop_command", stop_command=[])
    assert "memory" in _refused(relocation, owner, "memory_mb", memory_mb="lots").lower()
    catalog.app_create(
        user=owner, team=relocation.team, slug="notes", base_image=BaseImage.objects.get(runtime="python")
    )
    assert "exists already" in _refused(relocation, owner, "app_slug")


def test_unknown_fields_and_non_members_are_refused(
    relocation: Relocation, owner: User, outsider: User
) -> None:
    with pytest.raises(ValidationError, match="Unknown plan fields: privileged"):
        services.relocation_plan(
            user=owner, relocation=relocation, plan={**_plan(relocation), "privileged": True}
        )
    with pytest.raises(PermissionDenied):
        services.relocation_plan(user=outsider, relocation=relocation, plan=_plan(relocation))


def test_nothing_runs_before_a_plan_and_a_pinned_key(relocation: Relocation, owner: User) -> None:
    with pytest.raises(ValidationError, match="runs once a plan is confirmed"):
        services.relocation_run(user=owner, relocation=relocation)
    relocation.host_key = ""
    relocation.save()
    with pytest.raises(ValidationError, match="Confirm the VM's host key"):
        services.relocation_inspect(user=owner, relocation=relocation)
    with pytest.raises(ValidationError) as caught:
        services.relocation_install_key(user=owner, relocation=relocation, password="pw")
    assert "never sent to an unconfirmed host" in caught.value.message_dict["password"][0]


def test_the_fingerprint_must_be_the_offered_one(relocation: Relocation, owner: User) -> None:
    from apps.hosts.transport import fingerprint

    relocation.host_key = ""
    relocation.state = Relocation.State.NEW
    relocation.save()
    with pytest.raises(ValidationError, match="That is not a SHA256 fingerprint"):
        services.relocation_confirm_key(user=owner, relocation=relocation, fingerprint_seen="SHA256:nope")
    other = fingerprint("ssh-ed25519 " + base64.b64encode(b"another key").decode())
    with pytest.raises(ValidationError, match="not the fingerprint the VM offered"):
        services.relocation_confirm_key(user=owner, relocation=relocation, fingerprint_seen=other)
    # The whole line `ssh-keygen -lf` prints is what people paste.
    line = f"256 {fingerprint(relocation.offered_key)} root@vm (ED25519)"
    pinned = services.relocation_confirm_key(user=owner, relocation=relocation, fingerprint_seen=line)
    assert pinned.host_key == pinned.offered_key and pinned.state == Relocation.State.READY


def test_registration_checks_its_fields_before_any_network(alpha: Team, owner: User) -> None:
    with pytest.raises(ValidationError) as caught:
        services.relocation_register(
            user=owner, team=alpha, name="", address="vm.example", port=0, ssh_user="a b"
        )
    assert set(caught.value.message_dict) == {"name", "address", "port", "ssh_user"}
    assert "not an IP address" in caught.value.message_dict["address"][0]


def test_a_run_killed_between_making_the_app_and_linking_it_leaves_nothing_the_next_run_trips_on(
    relocation: Relocation, owner: User
) -> None:
    """A worker killed right after the app is made (the copy step's first act) must not leave an
    app the relocation does not know: the next run would be refused its own name for ever."""
    saved = services.relocation_plan(user=owner, relocation=relocation, plan=_plan(relocation))

    def killed(app: App) -> None:
        raise SystemExit("worker killed")

    ctx = runner.Context(relocation=saved, plan=saved.plan, hooks={"app_made": killed})
    with pytest.raises(SystemExit):
        runner._ensure_app(ctx)
    assert not App.objects.filter(slug="notes").exists()
    again = Relocation.objects.get(pk=saved.pk)
    app = runner._ensure_app(runner.Context(relocation=again, plan=again.plan))
    assert Relocation.objects.get(pk=saved.pk).app == app
    # A run after that one finds the same app, not a second.
    assert runner._ensure_app(runner.Context(relocation=again, plan=again.plan)) == app
    assert App.objects.filter(slug="notes").count() == 1
