"""API tokens: a user's named keys for the REST API and the CLI, each with a scope (read only, or
read and write) and an expiry. Services (`api_token_create`, `api_token_revoke`) and selectors
(`api_tokens_of`), plus the check each API call makes (`api_token_check`): every path (the page,
the API, the admin, the authentication class) goes through here, so an audit trail hooks in at
one place.

Only a key's SHA-256 is stored, with its first characters to tell tokens apart. A key is 40
random letters and digits after `slw_` (about 238 bits), so a plain hash is enough: there is
nothing to guess that a slow hash would protect."""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateformat import format as date_format

from apps.accounts import permissions
from apps.accounts.models import ApiToken
from apps.audit import services as audit

KEY_START = "slw_"
KEY_ALPHABET = string.ascii_letters + string.digits
KEY_RANDOM = 40
SHOWN = len(KEY_START) + 8  # "slw_" and 8 random characters: enough to tell tokens apart
LEGACY_SHOWN = 8  # of a 40-hex-digit key from before named tokens
NAME_MAX = 80
# Offered on the page (those within API_TOKEN_MAX_DAYS); the API takes any whole number of days.
EXPIRY_DAYS = (7, 30, 90, 365)
# Last use is written at most this often per token: a busy script does not write on every call.
LAST_USE_EVERY = timedelta(minutes=1)
LEGACY_NAME = "token from before named tokens"
MOMENT = "Y-m-d H:i T"  # as pages show moments (portal/display.py)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def moment(value: datetime) -> str:
    return date_format(timezone.localtime(value), MOMENT)


@dataclass(frozen=True)
class Created:
    """A new token and its key: the only moment the key exists outside the client."""

    token: ApiToken
    key: str


class TokenRefused(Exception):
    """A key that opens nothing; `reason` is "unknown", "revoked", "expired" or "inactive"."""

    def __init__(self, reason: str, token: ApiToken | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.token = token

    def explain(self, where: str) -> str:
        """What went wrong, and where to make a new token (`where`: the token page's URL)."""
        token = self.token
        if self.reason == "inactive":
            return "User inactive or deleted."
        if token is None:
            return f"Invalid token: no token has this key (mistyped, or never made). Make one at {where}"
        if self.reason == "revoked":
            assert token.revoked_at is not None
            said = f"was revoked on {moment(token.revoked_at)}"
        else:
            said = f"expired on {moment(token.expires_at)}"
        return (
            f"Invalid token: this token ({token.prefix}…, {token.name!r}) {said}. Make a new one at {where}"
        )


# --- expiry -------------------------------------------------------------------------------------


def expiry_choices() -> list[int]:
    """The day counts the page offers: those within API_TOKEN_MAX_DAYS (and that maximum)."""
    top = settings.API_TOKEN_MAX_DAYS
    offered = [days for days in EXPIRY_DAYS if days <= top]
    return offered if top in offered else [*offered, top]


def expires_after(days: Any, now: datetime | None = None) -> datetime:
    """The moment `days` whole days from now; a ValidationError says what is allowed."""
    top = settings.API_TOKEN_MAX_DAYS
    if isinstance(days, bool) or not isinstance(days, int | str):
        raise ValidationError(f"Give a whole number of days from 1 to {top}.")
    try:
        count = int(days)
    except ValueError:
        raise ValidationError(f"{str(days)[:20]!r} is not a number of days: give 1 to {top}.") from None
    if not 1 <= count <= top:
        raise ValidationError(f"{count} days is not allowed: give 1 to {top} (API_TOKEN_MAX_DAYS).")
    return (now or timezone.now()) + timedelta(days=count)


def expires_on(day: date) -> datetime:
    """A token "until" a date stops working at 00:00 on it, in the portal's time zone (TIME_ZONE)."""
    return timezone.make_aware(datetime.combine(day, time.min))


# --- services -----------------------------------------------------------------------------------


def _name_errors(name: str) -> list[str]:
    if not name:
        return ["Give the token a name: what or who uses it, e.g. 'laptop' or 'ci deploy'."]
    if len(name) > NAME_MAX:
        return [f"At most {NAME_MAX} characters (this one has {len(name)})."]
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return ["A name holds no control characters (tabs, newlines)."]
    return []


@transaction.atomic
def api_token_create(
    *, user: User, name: str, scope: str, expires_at: datetime | None, made_with: ApiToken | None = None
) -> Created:
    """A new token for `user`. `made_with`: the token the request came with, if any; a token
    cannot make one that outlives it (a stolen key cannot give itself a longer life)."""
    now = timezone.now()
    name = (name or "").strip()
    errors: dict[str, list[str]] = {}
    if name_errors := _name_errors(name):
        errors["name"] = name_errors
    if scope not in ApiToken.Scope.values:
        shown = str(scope)[:20]
        errors["scope"] = [f"{shown!r} is not a scope: give read (read only) or write (read and write)."]
    top = settings.API_TOKEN_MAX_DAYS
    if expires_at is None:
        errors["expires_at"] = [f"Give an expiry: a number of days (1 to {top}) or a date."]
    elif expires_at <= now:
        errors["expires_at"] = [f"{moment(expires_at)} has passed: give a moment in the future."]
    elif expires_at > now + timedelta(days=top):
        errors["expires_at"] = [
            f"At most {top} days from now (API_TOKEN_MAX_DAYS), that is until {moment(now + timedelta(days=top))}."
        ]
    elif made_with is not None and expires_at > made_with.expires_at:
        errors["expires_at"] = [
            f"A token cannot make a token that outlives it: the one this request came with expires on "
            f"{moment(made_with.expires_at)}. Choose that or earlier, or make the token on the API tokens page."
        ]
    # One creation per user at a time, so two requests cannot both take a free name.
    User.objects.select_for_update().filter(pk=user.pk).first()
    if "name" not in errors and api_tokens_of(user).filter(_live(now), name__iexact=name).exists():
        errors["name"] = [
            f"You already have a live token named {name!r}: choose another name, or revoke that one."
        ]
    if errors or expires_at is None:
        raise ValidationError(errors)
    key = KEY_START + "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_RANDOM))
    token = ApiToken(
        user=user,
        name=name,
        scope=scope,
        prefix=key[:SHOWN],
        key_hash=hash_key(key),
        created_at=now,
        expires_at=expires_at,
    )
    token.full_clean()
    token.save()
    audit.record(
        "token.create",
        f"API token {name!r} ({token.get_scope_display()}, until {moment(expires_at)}) for {user.get_username()}",
        actor=user,
        obj=token,
        object_repr=f"{user.get_username()}: {name} ({token.prefix}…)",
    )
    return Created(token, key)


@transaction.atomic
def api_token_revoke(*, user: Any, token: ApiToken) -> ApiToken:
    """Revoke a token at once: its owner, or ops (in the admin)."""
    if token.user_id != getattr(user, "pk", None) and not permissions.is_ops(user):
        raise PermissionDenied("Only the token's owner (or ops) revokes it.")
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is not None:
        raise ValidationError(f"Token {token.name!r} was already revoked on {moment(token.revoked_at)}.")
    token.revoked_at = timezone.now()
    token.revoked_by = user
    token.save(update_fields=["revoked_at", "revoked_by"])
    audit.record(
        "token.revoke",
        f"revoke API token {token.name!r} of {token.user.get_username()}",
        actor=user,
        obj=token,
        object_repr=f"{token.user.get_username()}: {token.name} ({token.prefix}…)",
    )
    return token


def api_token_check(key: str, *, address: str | None) -> ApiToken:
    """The live token with this key, its last use noted (at most once per LAST_USE_EVERY);
    TokenRefused says why not."""
    # With how the user last signed in: whether the directory rereads their groups (no query more).
    token = ApiToken.objects.select_related("user__last_sign_in").filter(key_hash=hash_key(key)).first()
    now = timezone.now()
    if token is None:
        raise TokenRefused("unknown")
    if token.revoked_at is not None:
        raise TokenRefused("revoked", token)
    if token.expires_at <= now:
        raise TokenRefused("expired", token)
    if not token.user.is_active:
        raise TokenRefused("inactive", token)
    if token.last_used_at is None or now - token.last_used_at >= LAST_USE_EVERY:
        # Conditional: of several requests at once, one writes.
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USE_EVERY)
        ).update(last_used_at=now, last_used_from=address)
        token.last_used_at, token.last_used_from = now, address
    return token


# --- selectors ----------------------------------------------------------------------------------


def _live(now: datetime) -> Q:
    return Q(revoked_at__isnull=True, expires_at__gt=now)


def api_tokens_of(user: Any) -> QuerySet[ApiToken]:
    """The user's own tokens, newest first (ops see others' in the admin only)."""
    if not getattr(user, "is_authenticated", False):
        return ApiToken.objects.none()
    return ApiToken.objects.filter(user=user)


def api_tokens_live(user: Any) -> QuerySet[ApiToken]:
    return api_tokens_of(user).filter(_live(timezone.now()))
