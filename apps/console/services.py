"""Run a command in a running instance, or open a terminal in one: checks, audit, the run.

The command is an argv list handed to Docker's exec as it is: no shell, so `$(id)` stays
literal unless the user asks for a shell in argv (["sh", "-c", "..."]). Every run and every
terminal session is an ExecSession row; what users typed goes into log lines JSON-encoded, so a
newline in it cannot forge a line of the log.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import shlex
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.accounts import permissions
from apps.applications.models import App
from apps.applications.validators import validate_argv
from apps.audit import services as audit
from apps.console.models import ExecSession, NamedCommand
from apps.hosts import gateway
from apps.hosts.transport import HostError
from apps.instances.models import Instance

log = logging.getLogger(__name__)
USER_RE = re.compile(r"^([a-z_][a-z0-9_.-]{0,31}|[0-9]{1,10})(:([a-z_][a-z0-9_.-]{0,31}|[0-9]{1,10}))?$")
CUT_MARKER = "\n[output cut at {kept} bytes; {rest} more bytes not shown]\n"


def require_member(user: Any, app: App) -> None:
    permissions.require_member(user, app.team)


def check_argv(argv: Any) -> list[str]:
    if isinstance(argv, str):
        raise ValidationError(
            {
                "argv": 'Give the command as a list of arguments, e.g. ["ls", "-l", "/srv/app"] (no shell is used).'
            }
        )
    try:
        validate_argv(argv)
    except ValidationError as exc:
        raise ValidationError({"argv": exc.messages}) from None
    if not argv:
        raise ValidationError({"argv": "Give a command to run."})
    if len(argv) > settings.EXEC_MAX_ARGS:
        raise ValidationError({"argv": f"At most {settings.EXEC_MAX_ARGS} arguments (got {len(argv)})."})
    size = sum(len(part.encode()) for part in argv)
    if size > settings.EXEC_MAX_ARGV_BYTES:
        raise ValidationError(
            {"argv": f"The command is {size} bytes; at most {settings.EXEC_MAX_ARGV_BYTES}."}
        )
    return list(argv)


# Words a shell would treat as operators: with no shell, they would reach the program as
# arguments, which is never what the person meant.
SHELL_OPERATORS = {"|", "||", "&", "&&", ";", ">", ">>", "<", "<<", "2>", "2>&1", "$(", "`"}


def argv_from_text(text: str) -> list[str]:
    """The command as typed in a page: one line is split into arguments the way a shell splits
    words (quotes and backslashes work), several lines are one argument each. No shell ever
    runs it, so pipes, redirections, variables and globs are refused with how to get them."""
    if not text.strip():
        return []
    text = text.replace("\r\n", "\n").removesuffix("\n")
    if "\n" in text:
        # One argument per line; the empty lines between arguments are empty arguments.
        return text.split("\n")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValidationError(
            {
                "argv": f"The command cannot be split into arguments ({exc}): close the quote, or give one argument per line."
            }
        ) from None
    operators = [w for w in words if w in SHELL_OPERATORS or w.startswith(("$(", "`"))]
    if operators:
        raise ValidationError(
            {
                "argv": f"No shell runs the command, so “{operators[0]}” would reach {words[0]} as an argument. "
                f"For shell features run it through a shell: sh -c {shlex.quote(text)}"
            }
        )
    return words


def check_options(timeout: Any, run_as: Any, workdir: Any) -> tuple[int, str, str]:
    errors: dict[str, str] = {}
    seconds = settings.EXEC_DEFAULT_TIMEOUT
    if timeout not in (None, ""):
        try:
            seconds = int(timeout)
        except (TypeError, ValueError):
            errors["timeout"] = f"The timeout is a whole number of seconds (got {timeout!r})."
        else:
            if not 1 <= seconds <= settings.EXEC_MAX_TIMEOUT:
                errors["timeout"] = (
                    f"The timeout is 1 to {settings.EXEC_MAX_TIMEOUT} seconds (got {seconds})."
                )
    user = str(run_as or "").strip()
    if user and not USER_RE.match(user):
        errors["user"] = (
            f"{user!r} is not a user: use a name or uid, optionally :group (e.g. www-data or 1000:1000)."
        )
    directory = str(workdir or "").strip()
    if directory:
        if "\x00" in directory:
            errors["workdir"] = "The working directory contains a NUL byte."
        elif not directory.startswith("/"):
            errors["workdir"] = f"The working directory must be an absolute path (got {directory!r})."
        else:
            clean = posixpath.normpath(directory)
            if clean == "/proc" or clean.startswith("/proc/"):
                errors["workdir"] = (
                    f"{directory} is under /proc; pick a directory of the app (e.g. /srv/app)."
                )
            directory = clean
    if errors:
        raise ValidationError(errors)
    return seconds, user, directory


def check_rate(user: Any) -> None:
    recent = ExecSession.objects.filter(
        user=user, started_at__gte=timezone.now() - timedelta(minutes=1)
    ).count()
    if recent >= settings.EXEC_RATE_PER_MINUTE:
        raise ValidationError(
            f"You ran {recent} commands or terminals in the last minute; at most {settings.EXEC_RATE_PER_MINUTE}. "
            "Wait a little."
        )


def check_running(instance: Instance) -> None:
    if instance.state != Instance.State.RUNNING or not instance.container_id:
        raise ValidationError(
            f"{instance.container_name} is {instance.get_state_display().lower()}, not running; start it first."
        )


def named_commands(app: App) -> list[tuple[str, list[str], str]]:
    """(name, argv, description) a developer may run on the app with one click."""
    out = [(c.name, list(c.argv), c.description) for c in app.named_commands.all()]
    reload = app.base_image.reload_command
    if reload and not any(name == "reload" for name, _, _ in out):
        out.insert(
            0, ("reload", list(reload), f"the {app.base_image.reference} default: reload without restart")
        )
    return out


def session_open(
    *,
    user: Any,
    instance: Instance,
    kind: str,
    argv: list[str],
    name: str = "",
    run_as: str = "",
    workdir: str = "",
) -> ExecSession:
    app = instance.app
    session = ExecSession.objects.create(
        kind=kind,
        user=user,
        username=user.username,
        app=app,
        app_slug=app.slug,
        team_id_copy=app.team_id,
        instance=instance,
        instance_name=instance.container_name,
        host_name=instance.host.name,
        argv=argv,
        name=name,
        run_as=run_as,
        workdir=workdir,
    )
    log.info(
        "exec %s by %s in %s on %s: %s",
        session.pk,
        json.dumps(user.username),
        instance.container_name,
        instance.host.name,
        json.dumps(argv) if kind != ExecSession.Kind.TERMINAL else "terminal",
    )
    terminal = kind == ExecSession.Kind.TERMINAL
    audit.record(
        "terminal.open" if terminal else "exec.run",
        f"terminal in {instance.container_name}"
        if terminal
        else f"run {shlex.join(argv)[:300]} in {instance.container_name}",
        actor=user,
        obj=instance,
        team=app.team,
        data={"session": session.pk, **({"name": name} if name else {})},
    )
    return session


def exec_prepare(
    *,
    user: Any,
    instance: Instance,
    argv: Any = None,
    name: str = "",
    timeout: Any = None,
    run_as: Any = "",
    workdir: Any = "",
) -> tuple[ExecSession, int]:
    """Check everything, then open the audit row. Returns it with the timeout to use."""
    require_member(user, instance.app)
    if name:
        known = {n: a for n, a, _ in named_commands(instance.app)}
        if name not in known:
            raise ValidationError(
                {"name": f"{instance.app.slug} has no command {name!r}; it has {sorted(known) or 'none'}."}
            )
        argv = known[name]
    words = check_argv(argv)
    seconds, user_spec, directory = check_options(timeout, run_as, workdir)
    check_running(instance)
    check_rate(user)
    kind = ExecSession.Kind.NAMED if name else ExecSession.Kind.COMMAND
    session = session_open(
        user=user, instance=instance, kind=kind, argv=words, name=name, run_as=user_spec, workdir=directory
    )
    return session, seconds


def exec_execute(session: ExecSession, seconds: int, on_output: Callable[[bytes], None]) -> ExecSession:
    """Run the prepared command (may take up to its timeout) and close the audit row."""
    assert session.instance is not None
    instance = Instance.objects.select_related("host", "app").get(pk=session.instance.pk)
    kept = 0
    head = bytearray()  # the start of the output, to explain a command that could not start

    def forward(chunk: bytes) -> None:
        nonlocal kept
        kept += len(chunk)
        if len(head) < 4096:
            head.extend(chunk[: 4096 - len(head)])
        on_output(chunk)

    try:
        result = gateway.exec_run(
            instance.host,
            instance.container_name,
            list(session.argv),
            user=session.run_as,
            workdir=session.workdir,
            timeout=seconds,
            max_output=settings.EXEC_MAX_OUTPUT,
            on_output=forward,
        )
    except HostError as exc:
        ExecSession.objects.filter(pk=session.pk).update(ended_at=timezone.now(), error=str(exc)[:2000])
        session.refresh_from_db()
        raise ValidationError(str(exc)) from exc
    if result.truncated:
        on_output(CUT_MARKER.format(kept=kept, rest=result.bytes_out - kept).encode())
    ExecSession.objects.filter(pk=session.pk).update(
        ended_at=timezone.now(),
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        truncated=result.truncated,
        bytes_out=result.bytes_out,
        error=f"killed after its timeout of {seconds} s"
        if result.timed_out
        else _not_started(session, result.exit_code, bytes(head)),
    )
    session.refresh_from_db()
    return session


def _not_started(session: ExecSession, exit_code: int | None, head: bytes) -> str:
    """Why a command never ran, in words, instead of the container runtime's own message."""
    text = head.decode(errors="replace")
    if exit_code in (126, 127) and (
        "executable file not found" in text or "no such file or directory" in text
    ):
        program = session.argv[0] if session.argv else ""
        hint = (
            " It looks like a whole command in one argument: give one argument per line, or the command on one line."
            if " " in program
            else " Check the name, or give its full path."
        )
        return f"“{program}” is not a program in the container (exit code {exit_code}).{hint}"
    return ""


def exec_run(
    *, user: Any, instance: Instance, on_output: Callable[[bytes], None], **options: Any
) -> ExecSession:
    session, seconds = exec_prepare(user=user, instance=instance, **options)
    return exec_execute(session, seconds, on_output)


def audit_visible_to(user: Any) -> QuerySet[ExecSession]:
    """Ops see every session; leads their teams'; developers their own."""
    qs = ExecSession.objects.select_related("user")
    if permissions.is_ops(user):
        return qs
    return qs.filter(Q(team_id_copy__in=permissions.teams_led_by(user)) | Q(user=user))


def can_define_commands(user: Any, app: App) -> bool:
    return permissions.leads_or_ops(user, app.team_id)


def named_command_save(*, user: Any, app: App, name: str, argv: Any, description: str = "") -> NamedCommand:
    """Define (or redefine) a one-click command for the app: ops or a lead of its team."""
    require_member(user, app)
    if not can_define_commands(user, app):
        raise PermissionDenied(f"Only a lead of team {app.team.slug} or ops define the app's commands.")
    words = check_argv(argv)
    command = NamedCommand(
        app=app, name=(name or "").strip(), argv=words, description=(description or "")[:200]
    )
    try:
        command.full_clean(exclude=["app", "created_by"], validate_unique=False)
    except ValidationError as exc:
        raise ValidationError(exc.message_dict) from None
    saved, _ = NamedCommand.objects.update_or_create(
        app=app,
        name=command.name,
        defaults={"argv": words, "description": command.description, "created_by": user},
    )
    audit.record(
        "command.save",
        f"command {saved.name} of {app.slug}: {shlex.join(words)[:300]}",
        actor=user,
        obj=saved,
        team=app.team,
    )
    return saved


def named_command_delete(*, user: Any, app: App, name: str) -> None:
    require_member(user, app)
    if not can_define_commands(user, app):
        raise PermissionDenied(f"Only a lead of team {app.team.slug} or ops define the app's commands.")
    deleted, _ = NamedCommand.objects.filter(app=app, name=name).delete()
    if not deleted:
        raise ValidationError({"name": f"{app.slug} has no command {name!r}."})
    audit.record(
        "command.delete",
        f"remove command {name} of {app.slug}",
        actor=user,
        object_type="named command",
        object_repr=f"{app.slug}: {name}",
        team=app.team,
    )
