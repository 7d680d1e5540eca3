"""Commands in running instances on the lab: argv as given, output cut, timeouts that kill,
refusals, permissions, named commands, the streamed page and the audit."""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import AsyncClient, override_settings
from rest_framework.test import APIClient

from apps.accounts.models import Team
from apps.applications import services as catalog
from apps.applications.models import App, BaseImage
from apps.console import services
from apps.console.models import ExecSession
from apps.instances import executor
from apps.instances.models import Instance, Operation
from apps.lab import fleet


@pytest.fixture
def shell(owner: User, alpha: Team, busybox: BaseImage, lab_hosts: list, remove_apps: list[str]) -> Instance:
    remove_apps.append("shell")
    app = catalog.app_create(
        user=owner, team=alpha, slug="shell", base_image=busybox, memory_mb=48, instances=1
    )
    executor.run_operation(Operation.objects.get(app=app).pk)
    instance = Instance.objects.select_related("app", "host").get(app=app)
    assert instance.state == Instance.State.RUNNING, instance.last_error
    return instance


def _run(user: User, instance: Instance, **options: object) -> tuple[ExecSession, str]:
    out = bytearray()
    session = services.exec_run(user=user, instance=instance, on_output=out.extend, **options)
    return session, out.decode()


def test_argv_is_passed_as_is_and_a_shell_only_when_asked(shell: Instance, owner: User) -> None:
    session, text = _run(owner, shell, argv=["echo", "$(id)", "a b", "*"])
    assert text == "$(id) a b *\n" and session.exit_code == 0
    session, text = _run(owner, shell, argv=["sh", "-c", "echo $((6*7)); exit 3"])
    assert text == "42\n" and session.exit_code == 3
    session, text = _run(owner, shell, argv=["id", "-u"], run_as="nobody", workdir="/tmp")
    assert text.strip() == "65534" and (session.run_as, session.workdir) == ("nobody", "/tmp")
    assert session.kind == ExecSession.Kind.COMMAND and session.host_name == shell.host.name
    assert session.ended_at is not None and session.bytes_out == len(text)


@override_settings(EXEC_RATE_PER_MINUTE=1000)
def test_a_short_command_never_loses_its_output(shell: Instance, owner: User) -> None:
    # Docker's answer and a quick command's whole output often arrive in one read: the output
    # must come from the reader's buffer too, not only from the connection (docker-py#3332).
    texts = [_run(owner, shell, argv=["echo", f"line {n}"]) for n in range(40)]
    assert [(text, session.exit_code) for session, text in texts] == [(f"line {n}\n", 0) for n in range(40)]


@override_settings(EXEC_MAX_OUTPUT=1000)
def test_output_past_the_limit_is_cut_with_a_marker(shell: Instance, owner: User) -> None:
    session, text = _run(owner, shell, argv=["sh", "-c", "yes slipway | head -c 300000"])
    assert text.startswith("slipway\nslipway\n")
    assert text.endswith("\n[output cut at 1000 bytes; 299000 more bytes not shown]\n")
    assert session.truncated and session.bytes_out == 300000 and session.exit_code == 0


def test_a_command_past_its_timeout_is_killed_in_the_container(
    shell: Instance, owner: User, lab: list[fleet.LabHost]
) -> None:
    session, text = _run(owner, shell, argv=["sh", "-c", "echo started; sleep 300"], timeout=2)
    assert text == "started\n"
    assert session.timed_out and session.exit_code != 0
    assert session.error == "killed after its timeout of 2 s"
    lab_host = next(h for h in lab if h.name == shell.host.name)
    assert "sleep 300" not in fleet.docker(lab_host, "top", shell.container_name).stdout


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"argv": "ls -l"}, "argv", "Give the command as a list of arguments"),
        ({"argv": []}, "argv", "Give a command to run."),
        ({"argv": ["echo", "a\x00b"]}, "argv", "contains a NUL byte"),
        ({"argv": ["echo", "x" * 70000]}, "argv", "at most"),
        ({"argv": ["ls"], "workdir": "/srv/../proc/1"}, "workdir", "is under /proc"),
        ({"argv": ["ls"], "workdir": "relative"}, "workdir", "must be an absolute path"),
        ({"argv": ["ls"], "timeout": 0}, "timeout", "The timeout is 1 to 600 seconds (got 0)."),
        ({"argv": ["ls"], "run_as": "root; rm"}, "user", "is not a user"),
        ({"name": "nope"}, "name", "has no command 'nope'"),
    ],
)
def test_bad_input_is_refused_with_what_is_allowed(
    shell: Instance, owner: User, options: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        _run(owner, shell, **options)
    assert message in " ".join(refused.value.message_dict[field])
    assert not ExecSession.objects.exists()


def test_not_running_rate_limit_and_other_teams(shell: Instance, owner: User, outsider: User) -> None:
    with pytest.raises(PermissionDenied):
        _run(outsider, shell, argv=["id"])
    with override_settings(EXEC_RATE_PER_MINUTE=2):
        _run(owner, shell, argv=["true"])
        _run(owner, shell, argv=["true"])
        with pytest.raises(
            ValidationError, match="You ran 2 commands or terminals in the last minute; at most 2"
        ):
            _run(owner, shell, argv=["true"])
    Instance.objects.filter(pk=shell.pk).update(state=Instance.State.STOPPED)
    shell.refresh_from_db()
    with pytest.raises(ValidationError, match=r"slw-shell-0 is stopped, not running; start it first\."):
        _run(owner, shell, argv=["id"])


def test_named_commands_by_leads_run_by_developers(
    shell: Instance, owner: User, lead: User, busybox: BaseImage
) -> None:
    with pytest.raises(PermissionDenied, match="Only a lead of team alpha or ops define"):
        services.named_command_save(user=owner, app=shell.app, name="hello", argv=["echo", "hi"])
    services.named_command_save(
        user=lead, app=shell.app, name="hello", argv=["echo", "hi"], description="says hi"
    )
    busybox.reload_command = ["sh", "-c", "echo reloaded"]
    busybox.save()
    app = App.objects.get(pk=shell.app_id)
    assert [name for name, _, _ in services.named_commands(app)] == ["reload", "hello"]
    shell.app = app
    session, text = _run(owner, shell, name="hello")
    assert text == "hi\n" and session.kind == ExecSession.Kind.NAMED and session.name == "hello"
    assert _run(owner, shell, name="reload")[1] == "reloaded\n"


def test_the_api_runs_and_answers_with_the_output(shell: Instance, owner: User, outsider: User) -> None:
    client = APIClient()
    client.force_authenticate(owner)
    done = client.post(
        f"/api/v1/instances/{shell.pk}/exec/", {"argv": ["echo", "$(id)"], "timeout": 5}, format="json"
    )
    assert done.status_code == 200, done.json()
    body = done.json()
    assert (body["output"], body["exit_code"], body["timed_out"]) == ("$(id)\n", 0, False)
    bad = client.post(f"/api/v1/instances/{shell.pk}/exec/", {"argv": "id"}, format="json")
    assert bad.status_code == 400 and "list of arguments" in bad.json()["argv"][0]
    assert client.get("/api/v1/exec-sessions/").json()["count"] == 1
    client.force_authenticate(outsider)
    assert (
        client.post(f"/api/v1/instances/{shell.pk}/exec/", {"argv": ["id"]}, format="json").status_code == 404
    )
    assert client.get("/api/v1/exec-sessions/").json()["count"] == 0


@pytest.mark.django_db(transaction=True)
def test_the_page_streams_the_output_then_the_result(
    shell: Instance, owner: User, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> tuple[int, list[bytes]]:
        client = AsyncClient()
        await client.aforce_login(owner)
        response = await client.post(
            "/apps/shell/instances/0/exec/",
            {"argv": "sh\n-c\necho one; sleep 1; echo two\n", "timeout": "10"},
        )
        chunks = [chunk async for chunk in response.streaming_content]  # type: ignore[attr-defined]
        return response.status_code, chunks

    # A loop of its own in a thread of its own: the browser tests' Playwright keeps an event
    # loop in this thread for the whole session.
    with caplog.at_level(logging.INFO, logger="apps.console.services"), ThreadPoolExecutor(1) as thread:
        status, chunks = thread.submit(asyncio.run, run()).result()
    assert status == 200
    # Streamed: "one" arrives on its own, a second before "two" is printed.
    assert chunks[0] == b"one\n"
    text, _, trailer = b"".join(chunks).decode().partition("\x1e")
    assert text == "one\ntwo\n"
    result = json.loads(trailer)
    assert result["exit_code"] == 0 and result["duration"] >= 1, result
    # What the user typed is JSON-encoded in the log: its newlines cannot start a new line.
    line = next(r.getMessage() for r in caplog.records if "exec" in r.getMessage())
    assert "\n" not in line and '"echo one; sleep 1; echo two"' in line


def test_the_page_refuses_with_the_messages(shell: Instance, owner: User) -> None:
    from django.test import Client

    client = Client()
    client.force_login(owner)
    refused = client.post("/apps/shell/instances/0/exec/", {"argv": "", "timeout": "9999"})
    assert refused.status_code == 422
    errors = refused.json()["errors"]
    assert errors["argv"] == ["Give a command to run."] or "timeout" in errors
    page = client.get("/apps/shell/instances/0/")
    assert page.status_code == 200 and b"Run a command" in page.content
