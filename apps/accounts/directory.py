"""Sign-in through the company directory (LDAP, django-auth-ldap), and rereading a signed-in
user's groups while their terminal is open.

- Users from the directory sign in with their directory password. At each sign-in their name
  and email are copied from the directory and their groups are applied (apps.accounts.grants):
  ops, and a role in each team the mapping names. Someone whose groups grant nothing is refused,
  with a message that says so (and loses what an earlier sign-in gave them).
- A name that belongs to a local account (one with a password of the portal's own: the demo
  users, a break-glass admin) is never sent to the directory: it signs in with its local
  password only, even when the directory has a user of the same name or cannot be reached.
- `recheck` rereads the groups of a user signed in through the directory; an open terminal
  calls it at each of its checks, and `token_recheck` at each API call with a token of a user
  who last signed in through it (at most once per TERMINAL_RECHECK either way).
- A deactivated user is signed out of every session (pages, terminals), as local accounts are.
- A directory that refuses the portal's own bind (LDAP_BIND_DN and its password) is told apart
  from one that cannot be reached: the first is for ops to fix, the second may pass.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ldap
from django.conf import settings
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest
from django_auth_ldap.backend import LDAPBackend, ldap_error, populate_user

from apps.accounts.grants import NO_ACCESS, grants_apply, is_local_account
from apps.accounts.models import Membership
from portal.signin import dn_key

log = logging.getLogger(__name__)

BACKEND = "apps.accounts.directory.DirectoryBackend"
UNREACHABLE = (
    "The company directory cannot be reached, so directory accounts cannot sign in now "
    "(local accounts can). Try again in a while, or tell ops."
)
BIND_REFUSED = (
    "The company directory refused the portal's own sign-in (its service account, LDAP_BIND_DN, "
    "or that account's password), so directory accounts cannot sign in now (local accounts can). "
    "Tell ops: the portal's directory settings need fixing."
)
# What a directory answers when the portal's bind DN or password is wrong: a misconfiguration,
# not an outage (a user's own wrong password is "invalid credentials" too, but django-auth-ldap
# turns that one into a plain failed sign-in before it reaches the ldap_error signal).
REFUSED_BIND = (ldap.INVALID_CREDENTIALS, ldap.INAPPROPRIATE_AUTH)
NO_ACCESS_NOW = (
    "Your account is no longer in any of the groups that give access to Slipway (the company "
    "directory says so), so this token gives no access. Ask ops to add you to your team's group."
)
# The LDAP error of the last directory call in this thread, if any: django-auth-ldap reports
# errors through the ldap_error signal and answers "no such user", which must not be taken
# for one.
_last = threading.local()


class DirectoryBackend(LDAPBackend):
    _request: HttpRequest | None = None

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> Any:
        # A local account's password is never sent to the directory.
        if username is None or is_local_account(username.strip()):
            return None
        self._request = request
        return super().authenticate(request, username=username, password=password, **kwargs)

    def authenticate_ldap_user(self, ldap_user: Any, password: str) -> Any:
        user = super().authenticate_ldap_user(ldap_user, password)
        refusal = getattr(ldap_user, "slipway_refusal", None)
        if user is None and refusal and self._request is not None:
            self._request.signin_refusal = refusal  # type: ignore[attr-defined]  # read by SignInForm
        return user

    def get_or_build_user(self, username: str, ldap_user: Any) -> tuple[Any, bool]:
        user, built = super().get_or_build_user(username, ldap_user)
        if not built and user.has_usable_password():
            raise ldap_user.AuthenticationFailed(f"{username} is a local account")
        return user, built

    def get_user(self, user_id: int) -> Any:
        # As ModelBackend does: a deactivated user's sessions sign nobody in (pages, terminals).
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None


@receiver(populate_user, sender=DirectoryBackend)
def _apply_groups(sender: type, user: Any, ldap_user: Any, **kwargs: Any) -> None:
    """On every sign-in and every reread: the groups decide ops and the mapped teams' roles."""
    groups = {dn_key(dn) for dn in ldap_user.group_dns}
    mapping = settings.SIGNIN_LDAP_GROUPS
    ops, roles = mapping.grants(groups)
    if user.pk is None and not (ops or roles):
        # Someone never seen whom the groups give nothing: refused before a user is made.
        may_see = False
    else:
        may_see = grants_apply(user=user, groups=groups, mapping=mapping, via="the directory")
    if not may_see:
        ldap_user.slipway_refusal = NO_ACCESS
        raise ldap_user.AuthenticationFailed("in none of the mapped groups")


@receiver(ldap_error, sender=DirectoryBackend)
def _unreachable(
    sender: type, context: str, user: Any, request: HttpRequest | None, exception: Exception, **kwargs: Any
) -> None:
    _last.error = exception
    if isinstance(exception, REFUSED_BIND):
        log.error(
            "the directory refused the portal's bind as %r (%s): %s; check LDAP_BIND_DN and "
            "LDAP_BIND_PASSWORD",
            getattr(settings, "AUTH_LDAP_BIND_DN", ""),
            context,
            exception,
        )
    else:
        log.warning("the directory failed (%s): %s", context, exception)
    if request is not None:
        refusal = BIND_REFUSED if isinstance(exception, REFUSED_BIND) else UNREACHABLE
        request.signin_refusal = refusal  # type: ignore[attr-defined]  # read by SignInForm


def _down_key(user_pk: int) -> str:
    return f"signin:directory-down:{user_pk}"


def _read_key(user_pk: int) -> str:
    return f"signin:directory-read:{user_pk}"


def _since(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def rereads(user: Any, backend: str | None) -> bool:
    """Whether the directory is asked about this user after sign-in: one who signed in through it
    (`backend`) and has no password of the portal's own (a local account never is)."""
    return backend == BACKEND and bool(settings.LDAP_SERVER_URI) and not user.has_usable_password()


def recheck(
    user: Any, *, backend: str | None, every: float, closing: str = "so the terminal was closed"
) -> str | None:
    """Reread the groups of a user signed in through the directory (`backend`: the session's
    backend) and apply them, at most once per `every` seconds however many terminals and tokens
    they use (in this portal process). Returns why their access ends when the directory has not
    answered for LDAP_OUTAGE_GRACE seconds (ending with `closing`); until then the access last
    read stands. None otherwise: the caller then checks access as usual, against what was just
    applied."""
    if not rereads(user, backend):
        return None
    # (since when, whether it was the portal's own bind the directory refused)
    down: tuple[float, bool] | None = cache.get(_down_key(user.pk))
    if cache.add(_read_key(user.pk), True, timeout=every):
        _last.error = None
        found = DirectoryBackend().populate_user(user.username)
        error = _last.error
        if error is None:
            cache.delete(_down_key(user.pk))
            if found is None:
                # Gone from the directory (or in none of the mapped groups, already applied).
                grants_apply(
                    user=user, groups=set(), mapping=settings.SIGNIN_LDAP_GROUPS, via="the directory"
                )
            user.refresh_from_db()
            return None
        down = (down[0] if down is not None else time.time(), isinstance(error, REFUSED_BIND))
        cache.set(_down_key(user.pk), down, timeout=None)
    grace = float(settings.LDAP_OUTAGE_GRACE)
    if down is not None and time.time() - down[0] >= grace:
        failed = "refused the portal's service account" if down[1] else "could not be reached"
        return f"The company directory {failed} for {_since(grace)}, {closing}."
    return None


def token_recheck(user: Any) -> str | None:
    """For an API call with a token of `user` (no session: how they last signed in says whether
    the directory is theirs, LastSignIn, read with the token): reread their groups as an open
    terminal does (`recheck`, at most once per TERMINAL_RECHECK) and apply them. Returns why the
    call is refused: the directory unanswering for LDAP_OUTAGE_GRACE, or groups that now give
    nothing (not ops, in no team). None: go on, with the access just applied."""
    last = getattr(user, "last_sign_in", None)
    backend = last.backend if last is not None else None
    if not rereads(user, backend):
        return None
    outage = recheck(
        user,
        backend=backend,
        every=float(settings.TERMINAL_RECHECK),
        closing="so tokens of directory accounts are refused until it answers. Try again later, or tell ops",
    )
    if outage:
        return outage
    if user.is_staff or Membership.objects.filter(user=user).exists():
        return None
    return NO_ACCESS_NOW
