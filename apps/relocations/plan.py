"""The plan for moving a VM's app: suggested from the inspection report, edited by the owner,
and checked like an app (the same validators) plus what only a move has: the app directory,
the address kept, and the commands that stop and start the service on the VM."""

from __future__ import annotations

import math
import posixpath
import re
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from apps.applications import secret_env
from apps.applications.models import App, BaseImage, RetainedVolume
from apps.applications.services import parse_limits
from apps.applications.validators import (
    validate_argv,
    validate_container_path,
    validate_env,
    validate_state_paths,
)
from apps.network.models import IPPool
from apps.network.services import default_pool
from apps.relocations.models import Relocation
from apps.relocations.parsers import SECRET_NAME

# Directories an app directory may never be (the VM's own system).
SYSTEM_DIRS = (
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",  # noqa: S108 - a directory on the VM that is refused, not a file used here
    "/usr",
    "/var",
    "/var/lib",
    "/var/log",
    "/home",
)
# Environment a login or init gives every process; not the app's own.
SYSTEM_ENV = {
    "PATH",
    "HOME",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "_",
    "TERM",
    "USER",
    "LOGNAME",
    "SHELL",
    "HOSTNAME",
    "MAIL",
    "INVOCATION_ID",
    "JOURNAL_STREAM",
    "SYSTEMD_EXEC_PID",
    "LANG",
    "LC_ALL",
    "RUNLEVEL",
    "PREVLEVEL",
    "CONSOLE",
    "INIT_VERSION",
    "previous",
    "runlevel",
}
MASK = secret_env.MASK
FIELDS = (
    "app_slug",
    "base_image",
    "app_dir",
    "exclude",
    "state_paths",
    "command",
    "workdir",
    "env",
    "secrets",
    "port",
    "memory_mb",
    "cpus",
    "keep_address",
    "stop_command",
    "start_command",
    "health_path",
    "verify_paths",
)
RUNTIME_IMAGES = {
    "python": ["python"],
    "tomcat": ["tomcat", "jvm", "java"],
    "jvm": ["jvm", "java"],
    "node": ["node"],
    "static": ["static", "httpd", "nginx"],
}


def pool_for(relocation: Relocation) -> IPPool | None:
    return default_pool()


def _main(report: dict[str, Any]) -> dict[str, Any]:
    listening = report.get("listening") or []
    pid = report.get("main_pid")
    return next((entry for entry in listening if entry.get("pid") == pid), listening[0] if listening else {})


def _image_for(runtime: str) -> BaseImage | None:
    usable = BaseImage.objects.filter(deprecated=False, withdrawn=False).order_by("-created_at")
    for wanted in RUNTIME_IMAGES.get(runtime, []):
        image = usable.filter(runtime__iexact=wanted).first()
        if image is not None:
            return image
    return usable.exclude(runtime__iexact="busybox").first() or usable.first()


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return (slug if slug[:1].isalpha() else f"app-{slug}")[:40].rstrip("-") or "app"


def suggest(report: dict[str, Any], relocation: Relocation) -> dict[str, Any]:
    main = _main(report)
    runtime = (report.get("runtime") or {}).get("kind") or main.get("runtime") or "other"
    candidates = report.get("candidates") or []
    app_dir = candidates[0]["path"] if candidates else (main.get("cwd") or "")
    image = _image_for(runtime)
    headroom = settings.RELOCATION_HEADROOM
    rss = float(main.get("rss_mb") or 0)
    memory = max(64, math.ceil(rss * headroom / 32.0) * 32)
    used_cpus = float(main.get("cpu_percent") or 0) / 100.0
    cpus = max(Decimal("0.25"), Decimal(math.ceil(used_cpus * headroom * 4)) / 4)
    seen = {
        name: value
        for name, value in (report.get("env") or main.get("env") or {}).items()
        if name not in SYSTEM_ENV
    }
    # What looks secret (its name, or a password the inspection masked inside a URL) is marked
    # secret; the inspection never copied its value, so the owner types it (or moves it to env).
    secrets = {name: MASK for name, value in seen.items() if looks_secret(name, value)}
    env = {name: value for name, value in seen.items() if name not in secrets}
    pool = pool_for(relocation)
    keep = ""
    for entry in report.get("addresses") or []:
        if not entry.get("ssh") and pool is not None and not pool.why_not(entry["address"]):
            keep = entry["address"]
            break
    service = (report.get("services") or [{}])[0]
    cwd = main.get("cwd") or ""
    http = runtime in ("python", "node", "jvm", "tomcat", "static")
    return {
        "app_slug": _slug(relocation.name),
        "base_image": image.pk if image is not None else None,
        "app_dir": app_dir,
        "exclude": [],
        "state_paths": [],
        "command": list(main.get("argv") or []),
        "workdir": cwd if cwd and cwd != "/" else "",
        "env": env,
        "secrets": secrets,
        "port": main.get("port"),
        "memory_mb": memory,
        "cpus": str(cpus.quantize(Decimal("0.01"))),
        "keep_address": keep,
        "stop_command": list(service.get("stop") or []),
        "start_command": list(service.get("start") or []),
        "health_path": "/" if http else "",
        "verify_paths": ["/"] if http else [],
    }


def looks_secret(name: str, value: str = "") -> bool:
    return bool(SECRET_NAME.search(name)) or MASK in value


def shown(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan as pages and API answers show it: secrets by name, their values masked."""
    if not plan:
        return plan
    return {**plan, "secrets": secret_env.masked(plan.get("secrets"))}


def _secrets(data: Any, env: Any, saved: dict[str, str], errors: dict[str, str]) -> dict[str, str]:
    """The plan's secrets sealed: a value given is sealed anew; the mask keeps the value saved
    with the plan before (the API gives the plan back masked); every name also checked like an
    app's (secret_env.secrets_apply)."""
    given = data.get("secrets") or {}
    if not isinstance(given, dict):
        errors["secrets"] = (
            f'Secrets are an object of NAME: "value" pairs ({MASK} keeps the value saved with the plan).'
        )
        return {}
    plain = env if isinstance(env, dict) else {}
    both = sorted(set(given) & set(plain))
    if both:
        errors["secrets"] = (
            f"{', '.join(both)} {'is' if len(both) == 1 else 'are'} both a plain variable and a secret: a name is "
            "one or the other. Remove it from the environment, or leave it out of the secrets."
        )
        return {}
    wrong = sorted(str(name) for name, value in given.items() if not isinstance(value, str))
    if wrong:
        errors["secrets"] = (
            f"The value of {', '.join(wrong)} must be a string ({MASK} keeps the value saved with the plan)."
        )
        return {}
    kept = {name: saved[name] for name, value in given.items() if value == MASK and name in saved}
    missing = sorted(name for name, value in given.items() if value == MASK and name not in saved)
    if missing:
        errors["secrets"] = (
            f"Type the values of {', '.join(missing)}: the inspection does not copy secrets. "
            "Leave out the ones the app does not need."
        )
        return {}
    changes = {name: value for name, value in given.items() if name not in kept}
    try:
        return secret_env.secrets_apply(sealed=kept, changes=changes, env=plain)
    except ValidationError as exc:
        errors["secrets"] = " ".join(exc.messages)
        return {}


def _argv(value: Any, field: str, errors: dict[str, str], *, required: bool) -> list[str]:
    if value in (None, "", []):
        if required:
            errors[field] = 'Give the command as a list of arguments, e.g. ["/etc/init.d/notes", "stop"].'
        return []
    try:
        validate_argv(value)
    except ValidationError as exc:
        errors[field] = " ".join(exc.messages)
        return []
    return list(value)


def _url_path(value: Any) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or len(value) > 500
        or any(c in value for c in " \r\n\t#")
    ):
        raise ValueError(
            f"{value!r}: give a path that starts with '/', without spaces or '#' (at most 500 characters)."
        )
    return value


def validate(data: Any, relocation: Relocation, report: dict[str, Any]) -> dict[str, Any]:
    """The cleaned plan, or a ValidationError per field saying what is wrong and what is allowed."""
    if not isinstance(data, dict):
        raise ValidationError("The plan is an object with the fields " + ", ".join(FIELDS) + ".")
    unknown = set(data) - set(FIELDS)
    if unknown:
        raise ValidationError(
            f"Unknown plan fields: {', '.join(sorted(unknown))}; the plan has {', '.join(FIELDS)}."
        )
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}

    # The app it becomes, checked by the App model's own validators.
    slug = str(data.get("app_slug") or "")
    image_id = str(data.get("base_image") or "")
    image = (
        BaseImage.objects.filter(pk=int(image_id)).first()
        if image_id.isascii() and image_id.isdigit()
        else None
    )
    if image is None:
        errors["base_image"] = f"{data.get('base_image')!r} is not a base image; pick one from the catalog."
    elif image.withdrawn:
        errors["base_image"] = (
            f"{image.reference} is withdrawn and takes no new instances; pick another version."
        )
    elif image.deprecated:
        errors["base_image"] = (
            f"{image.reference} is deprecated and takes no new apps; pick another base image."
        )
    try:
        memory, cpus = parse_limits(data.get("memory_mb"), data.get("cpus"))
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors[field] = " ".join(messages)
        memory, cpus = 64, Decimal("0.25")
    port: int | None
    try:
        port = int(data.get("port"))  # type: ignore[arg-type]
        if not 1 <= port <= 65535:
            raise ValueError
    except (TypeError, ValueError):
        errors["port"] = f"The app's port must be a number from 1 to 65535 (got {data.get('port')!r})."
        port = None
    command = _argv(data.get("command"), "command", errors, required=False)
    env = data.get("env") or {}
    try:
        validate_env(env)
    except ValidationError as exc:
        errors["env"] = " ".join(exc.messages)
    masked = [name for name, value in env.items() if value == MASK] if isinstance(env, dict) else []
    if masked:
        errors["env"] = f"Set the real values of {', '.join(masked)}: the inspection does not copy secrets."
    secrets = _secrets(data, env, (relocation.plan or {}).get("secrets") or {}, errors)
    own_app = relocation.app
    if "\x00" in slug:
        errors["app_slug"] = "An app name never holds a NUL byte: lowercase letters, digits and '-'."
    elif own_app is not None and slug != own_app.slug:
        errors["app_slug"] = (
            f"An earlier run made app {own_app.slug}; the plan keeps that name (cancel to start over)."
        )
    elif own_app is None:
        if App.objects.filter(slug=slug).exists():
            errors["app_slug"] = f"App {slug!r} exists already; pick another name."
        elif RetainedVolume.objects.filter(app_slug=slug, purged_at=None).exists():
            errors["app_slug"] = (
                f"{slug} belonged to a deleted app whose volume data is still kept; pick another name."
            )
    if "app_slug" not in errors:
        probe = App(
            slug=slug,
            team=relocation.team,
            base_image=image or BaseImage(),
            command=command,
            port=port,
            env=env if isinstance(env, dict) else {},
            memory_mb=memory,
            cpus=cpus,
        )
        try:
            probe.clean_fields(
                exclude=["team", "base_image", "ip_pool", "created_by", "volume_mount", "workdir"]
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                key = "app_slug" if field == "slug" else field
                errors.setdefault(key, " ".join(messages))

    # The app directory: one the inspection found, or inside one; never a system directory.
    app_dir = data.get("app_dir")
    candidates = [c["path"] for c in report.get("candidates") or [] if c.get("path")]
    if not isinstance(app_dir, str) or not app_dir.startswith("/") or posixpath.normpath(app_dir) != app_dir:
        errors["app_dir"] = (
            f"{app_dir!r}: give the app's directory on the VM as an absolute path in plain form (no '..')."
        )
    elif app_dir in SYSTEM_DIRS:
        errors["app_dir"] = f"{app_dir} is a system directory of the VM; give the app's own directory."
    elif not any(app_dir == c or app_dir.startswith(c.rstrip("/") + "/") for c in candidates):
        errors["app_dir"] = (
            f"{app_dir} is not one of the app directories the inspection found ({', '.join(candidates) or 'none'}) "
            "nor inside one; inspect again if the app has moved."
        )
    else:
        try:
            validate_container_path(app_dir)
        except ValidationError as exc:
            errors["app_dir"] = (
                f"The app directory is bound into the container at the same path: {' '.join(exc.messages)}"
            )
    excludes = data.get("exclude") or []
    clean_excludes: list[str] = []
    if not isinstance(excludes, list) or not all(isinstance(x, str) for x in excludes):
        errors["exclude"] = "Exclusions are a list of paths inside the app directory."
    else:
        for item in excludes:
            rel = (
                item[len(app_dir) + 1 :]
                if isinstance(app_dir, str) and item.startswith(app_dir.rstrip("/") + "/")
                else item
            )
            if not rel or rel.startswith("/") or posixpath.normpath(rel) != rel or rel.split("/")[0] == "..":
                errors["exclude"] = (
                    f"{item!r} is outside the app directory {app_dir}; exclusions are paths inside it (like logs or tmp)."
                )
                break
            clean_excludes.append(rel)
    state_paths = data.get("state_paths") or []
    clean_state: list[str] = []
    if not isinstance(state_paths, list) or not all(isinstance(x, str) for x in state_paths):
        errors["state_paths"] = "Persistent paths are a list of paths inside the app directory."
    else:
        # Given as on the VM (/srv/shop/logs) or relative to the app directory (logs).
        prefix = app_dir.rstrip("/") + "/" if isinstance(app_dir, str) else "\0"
        clean_state = [item[len(prefix) :] if item.startswith(prefix) else item for item in state_paths]
        try:
            validate_state_paths(clean_state)
        except ValidationError as exc:
            errors["state_paths"] = " ".join(exc.messages)
        else:
            both = sorted(set(clean_state) & set(clean_excludes))
            if both:
                errors["state_paths"] = (
                    f"{', '.join(both)} is both left out and persistent; it can only be one of them."
                )
    workdir = data.get("workdir") or ""
    try:
        validate_container_path(workdir)
    except ValidationError as exc:
        errors["workdir"] = " ".join(exc.messages)

    # The service on the VM and how to tell the app answers.
    stop = _argv(data.get("stop_command"), "stop_command", errors, required=True)
    start = _argv(data.get("start_command"), "start_command", errors, required=True)
    health = data.get("health_path") or ""
    if health:
        try:
            _url_path(health)
        except ValueError as exc:
            errors["health_path"] = str(exc)
    verify = data.get("verify_paths") or []
    if not isinstance(verify, list) or len(verify) > 20:
        errors["verify_paths"] = "Give up to 20 paths whose answers must be the same after the move."
    else:
        for item in verify:
            try:
                _url_path(item)
            except ValueError as exc:
                errors["verify_paths"] = str(exc)
                break

    # The address: the VM's own, in the pool, not the one the portal reaches it on.
    keep = str(data.get("keep_address") or "").strip()
    if keep:
        vm_addresses = {a.get("address"): a for a in report.get("addresses") or []}
        pool = pool_for(relocation)
        if keep not in vm_addresses:
            errors["keep_address"] = (
                f"{keep} is not an address of the VM (it has {', '.join(vm_addresses) or 'none found'}); "
                "leave it empty to take a new address."
            )
        elif keep == relocation.address or vm_addresses[keep].get("ssh"):
            errors["keep_address"] = (
                f"{keep} is the address the portal reaches the VM on over SSH; the VM would be cut off when it "
                "gives it up. Register the VM by another address of it, or take a new address."
            )
        elif pool is None:
            errors["keep_address"] = (
                "No IP pool serves new apps (ask ops to set one up), so no address can be kept."
            )
        elif pool.why_not(keep):
            errors["keep_address"] = (
                f"{pool.why_not(keep)} Only addresses in the pool can be kept; leave it empty for a new one."
            )
    if errors:
        raise ValidationError(errors)
    assert image is not None and port is not None and isinstance(app_dir, str)
    clean.update(
        app_slug=slug,
        base_image=image.pk,
        app_dir=app_dir,
        exclude=clean_excludes,
        state_paths=clean_state,
        command=command,
        workdir=workdir,
        env=dict(env),
        secrets=secrets,
        port=port,
        memory_mb=memory,
        cpus=str(cpus),
        keep_address=keep,
        stop_command=stop,
        start_command=start,
        health_path=health,
        verify_paths=list(verify),
    )
    return clean


def plans_rotate() -> int:
    """The secrets of every saved plan sealed again with the first of SECRETS_KEYS (in the
    caller's transaction: `manage.py rotate_secrets`); how many values."""
    values = 0
    for row in Relocation.objects.select_for_update().only("pk", "name", "plan").order_by("pk"):
        sealed = (row.plan or {}).get("secrets")
        if sealed:
            what = f"The secret of the move of {row.name} (relocation {row.pk})"
            Relocation.objects.filter(pk=row.pk).update(
                plan={**row.plan, "secrets": secret_env.rotate(sealed, what=what)}
            )
            values += len(sealed)
    return values


secret_env.sealed_store("VM moves' plans", plans_rotate)
