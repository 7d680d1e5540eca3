"""Sign-in through the company's OpenID Connect provider (mozilla-django-oidc), when
OIDC_RP_CLIENT_ID is set.

- The user is the one named by the OIDC_USERNAME_CLAIM claim (preferred_username), made at the
  first sign-in without a password of the portal's own. A name that belongs to a local account
  (one with a portal password) is refused: the provider never takes it over.
- The OIDC_GROUPS_CLAIM claim (a list of group names, from the userinfo endpoint) decides ops and
  the mapped teams' roles at each sign-in, as the directory's groups do (apps.accounts.grants).
  Someone whose groups grant nothing is refused, with a message.
- The provider is asked only at sign-in: a user's sessions, terminals and API tokens keep the
  access of their last sign-in until the next one (docs/sign-in.md). Ops cut someone off by
  deactivating them, which signs out every session, terminals included, and refuses their tokens.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import SuspiciousOperation, ValidationError
from django.db.models import QuerySet
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from apps.accounts.grants import NO_ACCESS, grants_apply, is_local_account

log = logging.getLogger(__name__)


class OIDCBackend(OIDCAuthenticationBackend):  # type: ignore[misc]  # the library has no types
    def authenticate(self, request: Any, **kwargs: Any) -> Any:
        try:
            return super().authenticate(request, **kwargs)
        except (requests.RequestException, SuspiciousOperation) as exc:
            # The provider unreachable or its answer not verifiable: said, not a 500.
            log.warning("sign-in with %s failed: %s", settings.OIDC_PROVIDER_NAME, exc)
            self._refuse(
                f"Sign-in with {settings.OIDC_PROVIDER_NAME} failed: {_reason(exc)}. Try again, or tell ops."
            )
            return None

    def get_user(self, user_id: Any) -> Any:
        # As ModelBackend does (the library's does not): a deactivated user's sessions sign nobody
        # in, pages and open terminals alike.
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None

    def _refuse(self, message: str) -> None:
        if getattr(self, "request", None) is not None:
            messages.error(self.request, message)

    def _username(self, claims: dict[str, Any]) -> str:
        value = claims.get(settings.OIDC_USERNAME_CLAIM)
        return value.strip() if isinstance(value, str) else ""

    def _groups(self, claims: dict[str, Any]) -> set[str]:
        value = claims.get(settings.OIDC_GROUPS_CLAIM, [])
        if isinstance(value, str):
            value = [value]
        return {group for group in value if isinstance(group, str)} if isinstance(value, list) else set()

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        username = self._username(claims)
        try:
            if not username or len(username) > 150:
                raise ValidationError("no name")
            UnicodeUsernameValidator()(username)
        except ValidationError:
            self._refuse(
                f"Sign-in with {settings.OIDC_PROVIDER_NAME} failed: its {settings.OIDC_USERNAME_CLAIM!r} "
                "claim is not a user name (up to 150 letters, digits and @.+-_). Tell ops."
            )
            return False
        if is_local_account(username):
            self._refuse(
                f"{username} is a local account here: sign in with its password, not with "
                f"{settings.OIDC_PROVIDER_NAME}."
            )
            return False
        mapping = settings.SIGNIN_OIDC_GROUPS
        ops, roles = mapping.grants(self._groups(claims))
        if ops or roles:
            return True
        # The groups give nothing: someone never seen is refused before a user is made; a known
        # user loses what they gave and is refused unless ops gave them a team by hand.
        user = self.filter_users_by_claims(claims).first()
        if user is not None and grants_apply(
            user=user, groups=set(), mapping=mapping, via=settings.OIDC_PROVIDER_NAME
        ):
            return True
        self._refuse(NO_ACCESS)
        return False

    def filter_users_by_claims(self, claims: dict[str, Any]) -> QuerySet[Any]:
        username = self._username(claims)
        if not username:
            return self.UserModel.objects.none()
        return self.UserModel.objects.filter(username__iexact=username)

    def create_user(self, claims: dict[str, Any]) -> Any:
        user = self.UserModel.objects.create_user(self._username(claims))  # no portal password
        return self.update_user(user, claims)

    def update_user(self, user: Any, claims: dict[str, Any]) -> Any:
        for field, claim in (("first_name", "given_name"), ("last_name", "family_name"), ("email", "email")):
            value = claims.get(claim)
            if isinstance(value, str):
                setattr(user, field, value[:150])
        grants_apply(
            user=user,
            groups=self._groups(claims),
            mapping=settings.SIGNIN_OIDC_GROUPS,
            via=settings.OIDC_PROVIDER_NAME,
        )
        return user


def _reason(exc: Exception) -> str:
    if isinstance(exc, requests.RequestException):
        return "the provider could not be reached or refused the sign-in"
    return "its answer could not be verified"
