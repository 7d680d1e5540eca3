"""Moving an app from a VM: register the VM, pin its host key, install the portal's key, inspect,
plan, run, cancel. Pages and the API call these; the worker does the SSH work (runner.py).

Every refusal is a ValidationError (or PermissionDenied) whose message says what is wrong and
what is allowed."""

from __future__ import annotations

import ipaddress
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from apps.accounts import permissions
from apps.accounts.models import Team
from apps.applications.services import app_delete
from apps.audit import services as audit
from apps.hosts import gateway
from apps.hosts.transport import NOT_A_FINGERPRINT, Endpoint, HostError, fingerprint, fingerprint_in
from apps.network.models import IPAllocation
from apps.network.services import address_hold, address_release_foreign
from apps.relocations import plan as planning
from apps.relocations.models import RELOCATION_INSPECT, RELOCATION_RUN, Relocation, Step
from portal import jobs


def visible_to(user: Any) -> QuerySet[Relocation]:
    return Relocation.objects.filter(team__in=permissions.teams_of(user)).select_related(
        "team", "app", "host"
    )


def endpoint(relocation: Relocation) -> Endpoint:
    return Endpoint(relocation.address, relocation.port, relocation.ssh_user, relocation.host_key)


def host_key_file(key: str) -> str:
    """Where OpenSSH keeps a host key of this type, for people to check the fingerprint."""
    kind = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ssh-dss": "dsa"}.get(
        key.split()[0] if key else "", "ecdsa"
    )
    return f"/etc/ssh/ssh_host_{kind}_key.pub"


# --- 1. register and trust -----------------------------------------------------------------------


def relocation_register(
    *, user: Any, team: Team, name: str, address: str, port: Any = 22, ssh_user: str = "root"
) -> Relocation:
    """Record the VM and fetch the host key it offers; nothing runs on it until a person has
    compared the fingerprint with the VM's own and confirmed it."""
    permissions.require_member(user, team)
    errors: dict[str, str] = {}
    name = (name or "").strip()
    if not name or len(name) > 60:
        errors["name"] = "Give the VM a name of 1 to 60 characters."
    try:
        ip = ipaddress.ip_address((address or "").strip())
    except ValueError:
        errors["address"] = f"{address!r} is not an IP address; give the VM's IPv4 or IPv6 address."
        ip = None
    try:
        port_number = int(port)
        if not 1 <= port_number <= 65535:
            raise ValueError
    except (TypeError, ValueError):
        errors["port"] = f"The SSH port must be a number from 1 to 65535 (got {port!r})."
        port_number = 22
    user_name = (ssh_user or "").strip()
    if not user_name or len(user_name) > 32 or not all(c.isalnum() or c in "._-" for c in user_name):
        errors["ssh_user"] = "The SSH user is 1 to 32 letters, digits, '.', '_' or '-'."
    if errors:
        raise ValidationError(errors)
    try:
        offered = gateway.fetch_host_key(str(ip), port_number)
    except HostError as exc:
        raise ValidationError({"address": f"Cannot reach SSH on {ip}:{port_number}: {exc}"}) from exc
    relocation = Relocation.objects.create(
        team=team,
        name=name,
        address=str(ip),
        port=port_number,
        ssh_user=user_name,
        offered_key=offered,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    audit.record(
        "relocation.register", f"register VM {name} at {ip}:{port_number}", actor=user, obj=relocation
    )
    return relocation


def relocation_confirm_key(*, user: Any, relocation: Relocation, fingerprint_seen: str) -> Relocation:
    """Pin the key the VM offered, once the person confirms its fingerprint."""
    permissions.require_member(user, relocation.team)
    expected = fingerprint(relocation.offered_key)
    key_file = host_key_file(relocation.offered_key)
    given = fingerprint_in(fingerprint_seen)
    if given is None:
        raise ValidationError({"fingerprint": NOT_A_FINGERPRINT.format(key_file=key_file)})
    if given != expected:
        raise ValidationError(
            {
                "fingerprint": f"That is not the fingerprint the VM offered ({expected}). Compare them on the VM's "
                f"console with “ssh-keygen -lf {key_file}”: if they differ, something else may be answering "
                "in the VM's place, so pin nothing."
            }
        )
    if relocation.host_key and relocation.host_key != relocation.offered_key:
        raise ValidationError({"fingerprint": "A different key is already pinned for this VM."})
    relocation.host_key = relocation.offered_key
    relocation.key_confirmed_at = timezone.now()
    if relocation.state == Relocation.State.NEW:
        relocation.state = Relocation.State.READY
    relocation.save(update_fields=["host_key", "key_confirmed_at", "state", "updated_at"])
    return relocation


def relocation_install_key(*, user: Any, relocation: Relocation, password: str) -> Relocation:
    """Use a password once to add the portal's key to the VM user's authorized_keys."""
    permissions.require_member(user, relocation.team)
    if not relocation.key_pinned:
        raise ValidationError(
            {"password": "Confirm the VM's host key first: a password is never sent to an unconfirmed host."}
        )
    if not password:
        raise ValidationError({"password": "Give the password of the SSH user, used once and not kept."})
    try:
        gateway.vm_install_key(endpoint(relocation), password)
    except HostError as exc:
        raise ValidationError({"password": str(exc)}) from exc
    relocation.key_installed_at = timezone.now()
    relocation.save(update_fields=["key_installed_at", "updated_at"])
    return relocation


# --- 2. inspect ---------------------------------------------------------------------------------------


@transaction.atomic
def relocation_inspect(*, user: Any, relocation: Relocation) -> Relocation:
    permissions.require_member(user, relocation.team)
    relocation = Relocation.objects.select_for_update().get(pk=relocation.pk)
    if not relocation.key_pinned:
        raise ValidationError("Confirm the VM's host key before inspecting it.")
    if relocation.state in (Relocation.State.RUNNING, *Relocation.FINISHED, Relocation.State.INSPECTING):
        raise ValidationError(
            f"The relocation is {relocation.get_state_display().lower()}; it cannot be inspected now."
        )
    relocation.state = Relocation.State.INSPECTING
    relocation.error = ""
    relocation.save(update_fields=["state", "error", "updated_at"])
    jobs.start(RELOCATION_INSPECT, relocation.pk)
    return relocation


# --- 3. plan --------------------------------------------------------------------------------------------


def plan_suggestion(relocation: Relocation) -> dict[str, Any]:
    report = relocation.latest_report
    if not report:
        raise ValidationError("Inspect the VM first: the plan is suggested from what the inspection found.")
    return planning.suggest(report, relocation)


@transaction.atomic
def relocation_plan(*, user: Any, relocation: Relocation, plan: dict[str, Any]) -> Relocation:
    """Check the owner's plan like an app and keep it; hold the VM's address it keeps."""
    permissions.require_member(user, relocation.team)
    relocation = Relocation.objects.select_for_update().get(pk=relocation.pk)
    allowed = (Relocation.State.INSPECTED, Relocation.State.PLANNED, Relocation.State.ROLLED_BACK)
    if relocation.state not in allowed:
        raise ValidationError(
            f"The relocation is {relocation.get_state_display().lower()}; a plan can be set once the VM is inspected "
            "and until the move has run."
        )
    report = relocation.latest_report
    if not report:
        raise ValidationError("Inspect the VM first: the plan is checked against what the inspection found.")
    clean = planning.validate(plan, relocation, report)
    _hold_address(relocation, clean["keep_address"], user)
    relocation.plan = clean
    relocation.planned_at = timezone.now()
    relocation.state = (
        Relocation.State.PLANNED if relocation.state != Relocation.State.ROLLED_BACK else relocation.state
    )
    relocation.save(update_fields=["plan", "planned_at", "state", "kept_address", "updated_at"])
    audit.record(
        "relocation.plan",
        f"plan the move of {relocation.name} into app {clean['app_slug']}",
        actor=user,
        obj=relocation,
        data={
            "app": clean["app_slug"],
            "env_names": sorted(clean.get("env") or {}),
            "secret_names": sorted(clean.get("secrets") or {}),
        },
    )
    return relocation


def _hold_address(relocation: Relocation, address: str, user: Any) -> None:
    """Hold the kept address from now until the cutover gives it to the app; let go of an
    earlier one the plan no longer keeps. Each change is an address row of the audit trail."""
    current = relocation.kept_address
    if current is not None and current.address == address:
        return
    if current is not None and current.app_id is None:
        address_release_foreign(
            allocations=[current], user=user, why=f"the plan of {relocation.name} no longer keeps it"
        )
    relocation.kept_address = None
    if not address:
        return
    pool = planning.pool_for(relocation)
    assert pool is not None  # validate() refused a kept address without a pool
    holder = IPAllocation.objects.filter(pool=pool, address=address).first()
    if holder is not None:
        if (
            holder.app_id is None
            and holder.relocations.exclude(pk=relocation.pk)
            .filter(state__in=[s for s in Relocation.State.values if s not in Relocation.FINISHED])
            .exists()
        ):
            raise ValidationError({"keep_address": f"{address} is kept by another move in progress."})
        if holder.app_id is not None:
            raise ValidationError({"keep_address": f"{address} is already allocated to app {holder.app}."})
        # Held as foreign: the VM itself answers for it. Take it over for this move (below).
    try:
        relocation.kept_address = address_hold(
            pool=pool,
            address=address,
            held_by=f"VM {relocation.name} (moving to Slipway)",
            user=user,
        )
    except IntegrityError:
        raise ValidationError(
            {"keep_address": f"{address} was just taken; pick another or take a new one."}
        ) from None


# --- 4. run -------------------------------------------------------------------------------------------------


@transaction.atomic
def relocation_run(*, user: Any, relocation: Relocation) -> Relocation:
    permissions.require_member(user, relocation.team)
    relocation = Relocation.objects.select_for_update().get(pk=relocation.pk)
    if relocation.state not in Relocation.RUNNABLE:
        raise ValidationError(
            f"The relocation is {relocation.get_state_display().lower()}; it runs once a plan is confirmed, "
            "and again after a roll back."
        )
    relocation.attempt += 1
    relocation.state = Relocation.State.RUNNING
    relocation.error = ""
    relocation.save(update_fields=["attempt", "state", "error", "updated_at"])
    Step.objects.bulk_create(
        Step(relocation=relocation, attempt=relocation.attempt, name=name, position=i)
        for i, name in enumerate(Step.ORDER)
    )
    jobs.start(RELOCATION_RUN, relocation.pk)
    audit.record(
        "relocation.run", f"move {relocation.name} (attempt {relocation.attempt})", actor=user, obj=relocation
    )
    return relocation


@transaction.atomic
def relocation_cancel(*, user: Any, relocation: Relocation) -> Relocation:
    """Give up on the move: the VM keeps serving, the held address goes back to it, and an app
    made by an earlier run is deleted (its copied files are kept on the host for ops to purge)."""
    permissions.require_member(user, relocation.team)
    relocation = Relocation.objects.select_for_update().get(pk=relocation.pk)
    if relocation.state in (Relocation.State.RUNNING, Relocation.State.INSPECTING, *Relocation.FINISHED):
        raise ValidationError(
            f"The relocation is {relocation.get_state_display().lower()}; it cannot be cancelled now."
        )
    if relocation.kept_address is not None and relocation.kept_address.app_id is None:
        address_release_foreign(
            allocations=[relocation.kept_address],
            user=user,
            why=f"the move of {relocation.name} is cancelled",
        )
        relocation.kept_address = None
    if relocation.app is not None:
        app_delete(user=user, app=relocation.app)
    relocation.state = Relocation.State.CANCELLED
    relocation.finished_at = timezone.now()
    relocation.save(update_fields=["state", "kept_address", "finished_at", "updated_at"])
    audit.record("relocation.cancel", f"cancel the move of {relocation.name}", actor=user, obj=relocation)
    return relocation


@transaction.atomic
def relocation_rollback(*, user: Any, relocation: Relocation) -> Relocation:
    """Try again a rollback that did not finish: the VM gets back what is still changed."""
    permissions.require_member(user, relocation.team)
    relocation = Relocation.objects.select_for_update().get(pk=relocation.pk)
    if relocation.state != Relocation.State.FAILED:
        raise ValidationError(
            f"The relocation is {relocation.get_state_display().lower()}; only a rollback that did not finish is "
            "tried again."
        )
    relocation.state = Relocation.State.RUNNING
    relocation.save(update_fields=["state", "updated_at"])
    # The run picks up the rollback where it stopped (its step is not done).
    jobs.start(RELOCATION_RUN, relocation.pk)
    audit.record(
        "relocation.rollback", f"roll back the move of {relocation.name} again", actor=user, obj=relocation
    )
    return relocation


def steps_of(relocation: Relocation, attempt: int | None = None) -> list[Step]:
    wanted = relocation.attempt if attempt is None else attempt
    return list(relocation.steps.filter(attempt=wanted).order_by("position"))
