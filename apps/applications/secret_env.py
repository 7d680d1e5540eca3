"""Secret environment variables: sealed with Fernet at rest, opened only to make a container.

An app's (and each release's) `secrets` maps a variable's name to a Fernet token made with the
first of `settings.SECRETS_KEYS`; any of the keys opens one (MultiFernet), so a new key is put
first, `manage.py rotate_secrets` seals everything again with it, and the old key can go. Pages,
API answers, release changes and logs only ever see names: the value is write-only after saving.

Values sealed with these keys outside apps and releases (the registry password, a VM move's
plan, webhooks' signing secrets) are registered with `sealed_store`, so a rotation seals them again too: their packages sit
above this one and cannot be imported from here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ValidationError
from django.views.decorators.debug import sensitive_variables

from apps.applications.validators import validate_env

# Shown in place of a value wherever a secret is listed. Sent back as a value, it is refused:
# a client that saves what it read must not overwrite the secret with the mask.
MASK = "********"


class SecretUnreadable(Exception):
    """A sealed value none of the configured keys opens (the key was removed before a rotation)."""


@functools.lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.SECRETS_KEYS))


# An error report (DEBUG off: a mail to the admins, a log) shows a frame's local variables; these
# functions hold opened values, so theirs are left out (django.views.decorators.debug).
@sensitive_variables()
def seal(value: str) -> str:
    return fernet().encrypt(value.encode()).decode()


@sensitive_variables()
def unseal(name: str, token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            f"The secret {name} cannot be opened with any key in SECRETS_KEYS: the key that sealed it "
            "was removed before `manage.py rotate_secrets` ran. Put that key back (after the new one)."
        ) from None


@sensitive_variables()
def opened(sealed: Mapping[str, str]) -> dict[str, str]:
    """Names to values, for the container's environment only."""
    return {name: unseal(name, token) for name, token in sealed.items()}


def masked(sealed: Mapping[str, str] | None) -> dict[str, str]:
    return {name: MASK for name in sorted(sealed or {})}


def is_sealed(token: Any) -> bool:
    """Whether `token` looks like what `seal` gives (a Fernet token), not a value in clear."""
    return isinstance(token, str) and token.startswith("gAAAAA")


def validate_sealed(value: Any) -> None:
    """The model's check: names as for any variable, each value a sealed token."""
    if not isinstance(value, dict):
        raise ValidationError('Secrets must be an object of NAME: "value" pairs.')
    validate_env({name: "" for name in value})
    if not all(is_sealed(token) for token in value.values()):
        raise ValidationError("Secrets hold sealed values only; set them through the app's services.")


@sensitive_variables()
def secrets_apply(
    *, sealed: Mapping[str, str], changes: Mapping[str, Any], env: Mapping[str, str]
) -> dict[str, str]:
    """The app's sealed secrets after `changes`: a string sets (or replaces) a variable, None
    deletes it; names left out stay as they are. A value given is always sealed anew, even one
    equal to what is stored: the answer (a release, its changes) is then the same whether or not
    it matched, so nobody can confirm a guessed value by saving it."""
    if not isinstance(changes, Mapping):
        raise ValidationError({"secrets": 'Secrets are an object of NAME: "value" pairs (null deletes one).'})
    errors: list[str] = []
    result = dict(sealed)
    plain: dict[str, str] = {}
    for name, value in changes.items():
        if value is None:
            if name not in result:
                errors.append(f"{name} is not a secret of this app, so it cannot be deleted.")
            result.pop(name, None)
            continue
        if not isinstance(value, str):
            errors.append(f"The value of {name} must be a string, or null to delete it.")
            continue
        if value == MASK:
            errors.append(
                f"{name}: {MASK} is the mask shown in place of the value. Send the new value, "
                "or leave the name out to keep the secret as it is."
            )
            continue
        plain[name] = value
    try:
        validate_env(plain)
    except ValidationError as exc:
        errors.extend(message.replace("Environment", "Secret") for message in exc.messages)
    if errors:
        raise ValidationError({"secrets": errors})
    for name, value in plain.items():
        result[name] = seal(value)
    both = sorted(set(result) & set(env))
    if both:
        raise ValidationError(
            {
                "secrets": f"{', '.join(both)} {'is' if len(both) == 1 else 'are'} also a plain variable: "
                "a name is either plain (env) or secret. Remove it from env, or mark it secret."
            }
        )
    try:
        validate_env({**env, **{name: "" for name in result}})
    except ValidationError as exc:
        raise ValidationError({"secrets": exc.messages}) from None
    return result


def changed_names(old: Mapping[str, str], new: Mapping[str, str]) -> tuple[list[str], list[str], list[str]]:
    """Secrets added, removed and changed between two sealed maps. Changed means sealed anew
    (replaced), whether or not the value differs: the values are never compared, so a change
    never tells whether a value typed was the one stored."""
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(name for name in set(old) & set(new) if old[name] != new[name])
    return added, removed, changed


@sensitive_variables()
def rotate(sealed: Mapping[str, str], what: str = "The secret") -> dict[str, str]:
    """Every token sealed again with the first key (MultiFernet.rotate keeps the value). `what`
    names the values in the message when one cannot be opened."""
    f = fernet()
    out = {}
    for name, token in sealed.items():
        try:
            out[name] = f.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                f"{what} {name} cannot be opened with any key in SECRETS_KEYS; nothing was rotated. "
                "Put the key that sealed it back in SECRETS_KEYS (after the new one) and run again."
            ) from None
    return out


# Other values sealed with SECRETS_KEYS: a name for people (and the audit row) and a function that
# seals them again with the first key inside the caller's transaction, returns how many, and
# raises SecretUnreadable (changing nothing) when one cannot be opened.
_STORES: dict[str, Callable[[], int]] = {}


def sealed_store(name: str, rotate: Callable[[], int]) -> None:
    """Register values sealed outside apps and releases, for `manage.py rotate_secrets`."""
    _STORES[name] = rotate


def sealed_stores() -> dict[str, Callable[[], int]]:
    return dict(_STORES)
