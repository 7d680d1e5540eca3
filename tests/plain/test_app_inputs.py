"""Bad input to apps gets a clear error that says what is allowed, and nothing is left half-made."""

from __future__ import annotations

import io
import tarfile
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError

from apps.accounts.models import Team
from apps.applications import releases, services
from apps.applications.forms import CommandField
from apps.applications.models import App, BaseImage
from apps.applications.validators import parse_env_text, validate_argv, validate_env
from apps.hosts.models import Host
from apps.instances.models import Instance, Operation


def _create(owner: User, alpha: Team, image: BaseImage, **kwargs: object) -> App:
    params: dict[str, object] = {"slug": "web", "memory_mb": 64, "cpus": "0.25"}
    params.update(kwargs)
    return services.app_create(user=owner, team=alpha, base_image=image, **params)  # type: ignore[arg-type]


def _messages(exc: ValidationError) -> str:
    return " ".join(exc.messages)


@pytest.mark.parametrize(
    ("slug", "message"),
    [
        ("Web", "lowercase letters"),
        ("a", "2-40 characters"),
        ("1web", "starting with a letter"),
        ("web_app", "lowercase letters"),
        ("x" * 41, ""),
    ],
)
def test_it_refuses_a_bad_slug(owner: User, alpha: Team, image: BaseImage, slug: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _create(owner, alpha, image, slug=slug)
    assert "slug" in caught.value.message_dict
    assert message in _messages(caught.value)
    assert not App.objects.exists()


def test_it_refuses_a_duplicate_slug(owner: User, alpha: Team, image: BaseImage) -> None:
    _create(owner, alpha, image)
    with pytest.raises(ValidationError, match="already exists"):
        _create(owner, alpha, image)
    assert App.objects.count() == 1


def test_it_refuses_a_deprecated_base_image(owner: User, alpha: Team, image: BaseImage) -> None:
    image.deprecated = True
    image.save()
    with pytest.raises(ValidationError, match="deprecated and takes no new apps"):
        _create(owner, alpha, image)


@pytest.mark.parametrize(
    ("memory", "cpus", "field", "message"),
    [
        (5, "0.25", "memory_mb", "at least 6 MiB (got 5)"),
        (4096, "0.25", "memory_mb", "more than the largest host has (1024 MiB)"),
        ("lots", "0.25", "memory_mb", "whole number of MiB"),
        (64, "0", "cpus", "more than 0 cores"),
        (64, "-1", "cpus", "more than 0 cores"),
        (64, "3", "cpus", "more than the largest host's 2 cores"),
        (64, "0.125", "cpus", "at most two decimals"),
        (64, "NaN", "cpus", "number of cores"),
        (64, "many", "cpus", "number of cores"),
    ],
)
def test_it_refuses_limits_outside_what_hosts_offer(
    owner: User, alpha: Team, image: BaseImage, memory: object, cpus: str, field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _create(owner, alpha, image, memory_mb=memory, cpus=cpus)
    assert message in " ".join(caught.value.message_dict[field])
    assert not App.objects.exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"1BAD": "x"}, "not allowed: use letters, digits and '_'"),
        ({"A-B": "x"}, "not allowed"),
        ({"A": "x\x00y"}, "NUL byte"),
        ({"SLIPWAY_APP": "x"}, "set by Slipway"),
        ({"A": 1}, "must be a string"),
        ({"A": "x" * 5000}, "at most 4096"),
    ],
)
def test_it_refuses_env_docker_would_refuse(
    owner: User, alpha: Team, image: BaseImage, env: dict, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _create(owner, alpha, image, env=env)
    assert message in _messages(caught.value)


def test_env_text_is_parsed_and_checked() -> None:
    assert parse_env_text("A=1\n# comment\n\nB= spaced = value\n") == {"A": "1", "B": " spaced = value"}
    with pytest.raises(ValidationError, match="Line 1: expected NAME=value"):
        parse_env_text("justaword")
    with pytest.raises(ValidationError, match="A is set twice"):
        parse_env_text("A=1\nA=2")


def test_commands_are_argv_and_stay_literal() -> None:
    field = CommandField(required=False)
    assert field.clean("echo '$(id)' \"a b\"") == ["echo", "$(id)", "a b"]
    with pytest.raises(ValidationError, match="check the quotes"):
        field.clean("echo 'unterminated")
    with pytest.raises(ValidationError, match="NUL byte"):
        validate_argv(["a\x00b"])
    with pytest.raises(ValidationError, match="list of strings"):
        validate_argv("echo hi")
    with pytest.raises(ValidationError, match="at most 64 arguments"):
        validate_argv(["x"] * 65)
    validate_env({})


def test_a_non_member_cannot_create_an_app_for_a_team(outsider: User, alpha: Team, image: BaseImage) -> None:
    with pytest.raises(PermissionDenied, match="not a member of team alpha"):
        _create(outsider, alpha, image)


def test_scale_refuses_negative_and_non_numbers_and_too_many(
    owner: User, alpha: Team, image: BaseImage
) -> None:
    app = _create(owner, alpha, image)
    for value, message in [(-1, "cannot be negative"), ("two", "whole number"), (51, "At most 50 instances")]:
        with pytest.raises(ValidationError) as caught:
            services.app_scale(user=owner, app=app, instances=value)
        assert message in _messages(caught.value)
    assert not Instance.objects.exists()
    assert not Operation.objects.exists()


def test_scale_beyond_free_capacity_says_how_much_is_free(owner: User, alpha: Team, image: BaseImage) -> None:
    app = _create(owner, alpha, image, memory_mb=300, cpus="0.5")
    services.app_scale(user=owner, app=app, instances=4)  # 2 per host: 600 of 1024 MiB each
    with pytest.raises(ValidationError) as caught:
        services.app_scale(user=owner, app=app, instances=10)
    message = _messages(caught.value)
    assert "Not enough free capacity for 6 more instance(s) of 300 MiB and 0.50 CPU" in message
    assert "848 MiB and 2.00 CPU free, room for 2 more" in message
    assert Instance.objects.filter(app=app).count() == 4
    app.refresh_from_db()
    assert app.instances == 4


def test_placement_spreads_an_app_over_hosts(
    owner: User, alpha: Team, image: BaseImage, hosts: list[Host]
) -> None:
    app = _create(owner, alpha, image)
    services.app_scale(user=owner, app=app, instances=4)
    per_host = {h.name: Instance.objects.filter(app=app, host=h).count() for h in hosts}
    assert per_host == {"h1": 2, "h2": 2}
    assert sorted(Instance.objects.filter(app=app).values_list("slot", flat=True)) == [0, 1, 2, 3]


def test_placement_skips_hosts_without_the_image_or_not_active(
    owner: User, alpha: Team, image: BaseImage, hosts: list[Host]
) -> None:
    image.hosts.set([hosts[0]])
    hosts[1].state = Host.State.UNREACHABLE
    hosts[1].save()
    app = _create(owner, alpha, image)
    services.app_scale(user=owner, app=app, instances=2)
    assert set(Instance.objects.filter(app=app).values_list("host__name", flat=True)) == {"h1"}
    hosts[0].state = Host.State.DRAINING
    hosts[0].save()
    with pytest.raises(
        ValidationError, match="No active host that passes its checks has the image slipway/busybox:1"
    ):
        services.app_scale(user=owner, app=app, instances=3)


def test_scaling_down_marks_the_highest_slots(owner: User, alpha: Team, image: BaseImage) -> None:
    app = _create(owner, alpha, image)
    services.app_scale(user=owner, app=app, instances=3)
    op = services.app_scale(user=owner, app=app, instances=1)
    assert op.params == {"from": 3, "to": 1}
    desired = dict(Instance.objects.filter(app=app).values_list("slot", "desired_state"))
    assert desired == {0: "running", 1: "removed", 2: "removed"}


def test_removing_an_instance_lowers_the_desired_count(owner: User, alpha: Team, image: BaseImage) -> None:
    app = _create(owner, alpha, image)
    services.app_scale(user=owner, app=app, instances=2)
    instance = Instance.objects.get(app=app, slot=0)
    services.instance_action(user=owner, instance=instance, action="remove")
    app.refresh_from_db()
    assert app.instances == 1
    with pytest.raises(ValidationError, match="is being removed"):
        services.instance_action(user=owner, instance=instance, action="start")
    with pytest.raises(ValidationError, match="Unknown action 'explode'"):
        services.instance_action(user=owner, instance=Instance.objects.get(app=app, slot=1), action="explode")


def test_editing_refuses_limits_and_unknown_fields(owner: User, alpha: Team, image: BaseImage) -> None:
    app = _create(owner, alpha, image)
    with pytest.raises(ValidationError, match="Memory and CPU change through a resource request"):
        services.app_update(user=owner, app=app, memory_mb=128)


def _tar(*members: tarfile.TarInfo, data: bytes = b"hi") -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member in members:
            if member.isfile():
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    buffer.seek(0)
    return buffer


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_member("/etc/passwd"), "absolute paths and '..' are not allowed"),
        (_member("a/../../etc/passwd"), "absolute paths and '..' are not allowed"),
        (_member("evil", tarfile.SYMTYPE, "/run/docker.sock"), "links must point inside the archive"),
        (_member("d/evil", tarfile.SYMTYPE, "../../etc"), "links must point inside the archive"),
        (_member("hard", tarfile.LNKTYPE, "../x"), "links must point inside the archive"),
        (_member("dev", tarfile.CHRTYPE), "devices and fifos are not allowed"),
    ],
)
def test_an_upload_that_could_escape_the_volume_is_refused(
    owner: User, alpha: Team, image: BaseImage, member: tarfile.TarInfo, message: str
) -> None:
    app = _create(owner, alpha, image)
    tarball = _tar(member)
    with pytest.raises(ValidationError, match=message):
        releases.release_create(user=owner, app=app, fileobj=tarball, size=len(tarball.getvalue()))
    # Nothing half-made: release 1 (made with the app) is all there is.
    assert list(app.releases.values_list("number", flat=True)) == [1]
    assert not Operation.objects.exists()


def test_an_upload_that_is_not_a_tarball_is_refused(owner: User, alpha: Team, image: BaseImage) -> None:
    app = _create(owner, alpha, image)
    with pytest.raises(ValidationError, match="Not a readable tar archive"):
        releases.release_create(user=owner, app=app, fileobj=io.BytesIO(b"hello"), size=5)


def test_an_archive_that_would_hide_or_block_a_persistent_path_is_refused(
    owner: User, alpha: Team, image: BaseImage
) -> None:
    app = _create(owner, alpha, image)
    services.app_update(user=owner, app=app, state_paths=["logs"])
    under = _tar(_member("logs/old.log"))
    with pytest.raises(ValidationError, match="under the persistent path logs"):
        releases.release_create(user=owner, app=app, fileobj=under, size=len(under.getvalue()))
    blocking = _tar(_member("logs"))
    with pytest.raises(ValidationError, match="not a directory, but the persistent path logs is bound there"):
        releases.release_create(user=owner, app=app, fileobj=blocking, size=len(blocking.getvalue()))


def test_a_good_upload_is_kept_with_its_checksum_as_the_next_release(
    owner: User, alpha: Team, image: BaseImage, settings: object
) -> None:
    app = _create(owner, alpha, image)
    tarball = _tar(_member("index.html"), _member("d/link", tarfile.SYMTYPE, "../index.html"))
    release, op = releases.release_create(user=owner, app=app, fileobj=tarball, size=len(tarball.getvalue()))
    assert op is None  # no instances: new ones start on it
    assert release.number == 2
    assert release.files == 1
    assert len(release.sha256) == 64
    assert release.source == "archive" and release.code_number == 2
    assert release.archive.read() == tarball.getvalue()
    assert release.changes == [
        f"files: 1 file, {len(tarball.getvalue())} bytes (sha256 {release.sha256[:12]})"
    ]
    app.refresh_from_db()
    assert app.release == release
    assert Decimal(app.cpus) == Decimal("0.25")
