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
  calls it at each of its checks.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest
from django_auth_ldap.backend import LDAPBackend, ldap_error, populate_user

from apps.accounts.grants import NO_ACCESS, grants_apply, is_local_account
from portal.signin import dn_key

log = logging.getLogger(__name__)

BACKEND = "apps.accounts.directory.DirectoryBackend"
UNREACHABLE = (
    "The company directory cannot be reached, so directory accounts cannot sign in now "
    "(local accounts can). Try again in a while, or tell ops."
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
    log.warning("the directory failed (%s): %s", context, exception)
    if request is not None:
        request.signin_refusal = UNREACHABLE  # type: ignore[attr-defined]  # read by SignInForm


def _down_key(user_pk: int) -> str:
    return f"signin:directory-down:{user_pk}"


def _read_key(user_pk: int) -> str:
    return f"signin:directory-read:{user_pk}"


def _since(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def recheck(user: Any, *, backend: str | None, every: float) -> str | None:
    """Reread the groups of a user signed in through the directory (`backend`: the session's
    backend) and apply them, at most once per `every` seconds however many terminals they have
    open. Returns why their access ends when the directory has not answered for
    LDAP_OUTAGE_GRACE seconds; until then the access last read stands. None otherwise: the
    caller then checks access as usual, against what was just applied."""
    if backend != BACKEND or not settings.LDAP_SERVER_URI or user.has_usable_password():
        return None
    down_since = cache.get(_down_key(user.pk))
    if cache.add(_read_key(user.pk), True, timeout=every):
        _last.error = None
        found = DirectoryBackend().populate_user(user.username)
        if _last.error is None:
            cache.delete(_down_key(user.pk))
            if found is None:
                # Gone from the directory (or in none of the mapped groups, already applied).
                grants_apply(
                    user=user, groups=set(), mapping=settings.SIGNIN_LDAP_GROUPS, via="the directory"
                )
            user.refresh_from_db()
            return None
        if down_since is None:
            down_since = time.time()
            cache.set(_down_key(user.pk), down_since, timeout=None)
    grace = float(settings.LDAP_OUTAGE_GRACE)
    if down_since is not None and time.time() - down_since >= grace:
        return f"The company directory could not be reached for {_since(grace)}, so the terminal was closed."
    return None
