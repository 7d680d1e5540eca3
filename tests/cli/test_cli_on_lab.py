"""`slipway` on the lab fleet: commands in instances, logs read and followed, releases deployed,
listed and rolled back, each through the portal under daphne with a real Celery worker."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from apps.accounts.models import Team
from apps.applications import services
from apps.applications.models import App, BaseImage
from apps.instances.models import Instance, Operation
from apps.lab import fleet
from apps.network.models import IPPool
from tests.cli.conftest import Slipway
from tests.helpers import app_prints

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("transactional_db")]


def test_exec_prints_the_output_and_exits_with_the_commands_code(
    deploy: Callable[..., App], owner: User, as_user: Callable[[User], str], slipway: Slipway
) -> None:
    app = deploy("cli-exec", instances=2)
    as_user(owner)
    ran = slipway("exec", app.slug, "--", "sh", "-c", "echo out [red]x; echo err >&2; exit 7")
    assert ran.code == 7, ran.err
    assert "out [red]x\n" in ran.out and "err\n" in ran.out
    second = Instance.objects.get(app=app, slot=1)
    ran = slipway("exec", f"{app.slug}/1", "--", "hostname")
    assert ran.code == 0 and ran.out.strip() in (second.container_name, second.container_id[:12])
    ran = slipway("exec", "--json", app.slug, "--", "echo", "$(id)")
    assert ran.code == 0 and json.loads(ran.out)["output"] == "$(id)\n"  # no shell unless asked
    ran = slipway("exec", "--timeout", "1", app.slug, "--", "sleep", "30")
    assert ran.code == 124 and "timeout" in ran.err
    ran = slipway("exec", app.slug, "--", "no-such-program")
    assert ran.code in (126, 127) and "is not a program in the container" in ran.err
    ran = slipway("exec", f"{app.slug}/5", "--", "true")
    assert ran.code == 1 and "no instance in slot 5" in ran.err


def test_logs_of_the_app_and_of_one_instance_then_followed(
    deploy: Callable[..., App],
    owner: User,
    lab: list[fleet.LabHost],
    as_user: Callable[[User], str],
    slipway: Slipway,
    cli_env: dict[str, str],
) -> None:
    app = deploy("cli-logs", instances=2)
    zero, one = Instance.objects.select_related("host", "app").filter(app=app).order_by("slot")
    app_prints(lab, zero, "echo zero [bold]says hi")
    app_prints(lab, one, "echo one says hi")
    as_user(owner)
    ran = slipway("logs", app.slug, "--tail", "50")
    assert ran.code == 0, ran.err
    assert f"{zero.container_name} zero [bold]says hi\n" in ran.out
    assert f"{one.container_name} one says hi\n" in ran.out
    ran = slipway("logs", app.slug, "--instance", "1", "--tail", "50")
    assert "one says hi\n" in ran.out and "zero" not in ran.out
    lines = [
        json.loads(line) for line in slipway("logs", app.slug, "--json", "--tail", "50").out.splitlines()
    ]
    assert {"instance": zero.container_name, "text": "zero [bold]says hi"}.items() <= next(
        line for line in lines if "zero" in line["text"]
    ).items()
    ran = slipway("logs", app.slug, "--tail", "nope")
    assert ran.code == 1 and ran.err.startswith("error: tail: ")

    follower = subprocess.Popen(
        [sys.executable, "-m", "slipway_cli", "logs", app.slug, "-f", "--instance", "0", "--tail", "1"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "zero [bold]says hi\n"
        app_prints(lab, zero, "echo while followed")
        assert follower.stdout.readline() == "while followed\n"
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=20) == 130
        assert "Traceback" not in (follower.stderr.read() if follower.stderr else "")
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()


def _release_dir(root: Path, text: str) -> Path:
    root.mkdir()
    (root / "index.html").write_text(text)
    (root / "assets").mkdir()
    (root / "assets" / "style.css").write_text("body {}\n")
    (root / "home.html").symlink_to("index.html")
    return root


def _in_instance(slipway: Slipway, target: str, path: str) -> str:
    ran = slipway("exec", target, "--", "cat", path)
    assert ran.code == 0, ran.err
    return ran.out


def test_deploy_a_directory_follow_it_and_roll_back(
    deploy: Callable[..., App],
    owner: User,
    as_user: Callable[[User], str],
    slipway: Slipway,
    worker: None,
    tmp_path: Path,
) -> None:
    app = deploy("cli-rel", instances=2)
    as_user(owner)
    ran = slipway("deploy", app.slug, str(_release_dir(tmp_path / "v1", "version one\n")), "--note", "first")
    assert ran.code == 0, ran.err
    assert "Packed " in ran.out and ": 2 files" in ran.out  # the link is kept, not counted
    for slot in (0, 1):  # each instance's progress, each state once
        states = [line for line in ran.out.splitlines() if line.startswith(f"  slw-cli-rel-{slot} ")]
        assert states and len(states) == len(set(states)), ran.out
    first = json.loads(slipway("releases", app.slug, "--json").out)[0]
    assert (first["current"], first["note"], first["archive"]["files"]) == (True, "first", 2)
    assert _in_instance(slipway, f"{app.slug}/0", "/srv/app/home.html") == "version one\n"
    assert _in_instance(slipway, f"{app.slug}/1", "/srv/app/assets/style.css") == "body {}\n"

    ran = slipway(
        "deploy", app.slug, str(_release_dir(tmp_path / "v2", "version two\n")), "--batch", "2", "--json"
    )
    assert ran.code == 0, ran.err
    second = json.loads(ran.out)
    assert second["release"]["number"] == first["number"] + 1
    assert second["operation"]["status"] == "succeeded"
    assert "slw-cli-rel-0" in ran.err  # progress on stderr, stdout only JSON
    assert _in_instance(slipway, app.slug, "/srv/app/index.html") == "version two\n"

    table = slipway("releases", app.slug).out
    assert "first" in table and f"{second['release']['number']}" in table

    ran = slipway("rollback", app.slug, "--note", "two is bad")
    assert ran.code == 0, ran.err
    newest = json.loads(slipway("releases", app.slug, "--json").out)[0]
    assert (newest["restored_from"], newest["current"], newest["note"]) == (
        first["number"],
        True,
        "two is bad",
    )
    assert _in_instance(slipway, f"{app.slug}/1", "/srv/app/index.html") == "version one\n"
    ran = slipway("rollback", app.slug, "999")
    assert ran.code == 1 and ran.err.startswith("error: ")


def test_a_deploy_that_fails_exits_1_with_the_operations_error(
    owner: User,
    alpha: Team,
    busybox: BaseImage,
    lab_pool: IPPool,
    lab: list[fleet.LabHost],
    remove_apps: list[str],
    as_user: Callable[[User], str],
    slipway: Slipway,
    worker: None,
    tmp_path: Path,
) -> None:
    slug = "cli-fails"
    remove_apps.append(slug)
    for lab_host in lab:
        shutil.rmtree(lab_host.volume_root / slug, ignore_errors=True)
    services.app_create(
        user=owner,
        team=alpha,
        slug=slug,
        base_image=busybox,
        memory_mb=32,
        cpus="0.1",
        port=8080,
        health_check="http",
        health_path="/ok.txt",
        health_timeout=3,
    )
    as_user(owner)
    good = _release_dir(tmp_path / "good", "fine\n")
    (good / "ok.txt").write_text("ok\n")
    ran = slipway("deploy", slug, str(good))
    assert ran.code == 0 and "has no instances" in ran.out, ran.err
    ran = slipway("scale", slug, "1", "--wait")
    assert ran.code == 0, ran.err
    assert _in_instance(slipway, slug, "/srv/app/ok.txt") == "ok\n"

    ran = slipway("deploy", slug, str(_release_dir(tmp_path / "bad", "no ok.txt\n")))
    assert ran.code == 1
    error = Operation.objects.filter(app__slug=slug).order_by("-pk").first()
    assert error is not None and error.status == Operation.Status.FAILED and error.error
    assert (
        ran.err.startswith(f"error: operation {error.pk} failed: ") and error.error.splitlines()[0] in ran.err
    )
    assert _in_instance(slipway, slug, "/srv/app/ok.txt") == "ok\n"  # put back on the release that worked
    for lab_host in lab:
        shutil.rmtree(lab_host.volume_root / slug, ignore_errors=True)


def test_a_deploy_while_another_runs_is_refused_or_waits_with_wait(
    deploy: Callable[..., App],
    owner: User,
    as_user: Callable[[User], str],
    slipway: Slipway,
    cli_env: dict[str, str],
    worker: None,
    tmp_path: Path,
) -> None:
    app = deploy("cli-queue", instances=3)
    as_user(owner)
    one, two = _release_dir(tmp_path / "one", "one\n"), _release_dir(tmp_path / "two", "two\n")
    first = subprocess.Popen(
        [sys.executable, "-m", "slipway_cli", "deploy", app.slug, str(one)],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None
        started = next(line for line in first.stdout if line.startswith("Deploying release"))
        running = int(started.rsplit("operation ", 1)[1])
        ran = slipway("deploy", app.slug, str(two))
        assert ran.code == 1 and f"(operation {running}; --wait waits for it)" in ran.err
        ran = slipway("deploy", app.slug, str(two), "--wait")
        assert ran.code == 0, ran.err
        assert f"waiting for operation {running} to end" in ran.out
        assert first.wait(timeout=120) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert Operation.objects.get(pk=running).status == Operation.Status.SUCCEEDED
    assert _in_instance(slipway, f"{app.slug}/2", "/srv/app/index.html") == "two\n"
