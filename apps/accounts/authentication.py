"""The REST API's token authentication: `Authorization: Token <key>` (as before named tokens) or
`Authorization: Bearer <key>`. A refused key gets a 401 that says why (unknown, revoked, expired
on a date) and where to make a new one; a read-only token is refused any unsafe method with a
403 here, for every DRF view at once (streamed ones included), whatever permissions a view sets.
A token of a user who last signed in through the company directory has their groups reread, as
an open terminal does (apps.accounts.directory.token_recheck): groups that now give nothing, or a
directory unanswering past LDAP_OUTAGE_GRACE, get a 403 that says so.

Websockets take no token (the Django session only: portal/asgi.py), and pages none either."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.urls import reverse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request

from apps.accounts import directory, tokens
from apps.accounts.models import ApiToken
from apps.audit.context import client_address

KEYWORDS = (b"token", b"bearer")


def token_page(request: Request) -> str:
    return request.build_absolute_uri(reverse("token"))


class ApiTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in KEYWORDS:
            return None  # another scheme, or none: the session may still sign the request in
        if len(parts) != 2:
            said = "no key given" if len(parts) == 1 else "a key holds no spaces"
            raise exceptions.AuthenticationFailed(
                f"Invalid token header: {said}. Send `Authorization: Token <key>` (or Bearer <key>)."
            )
        try:
            key = parts[1].decode("ascii")
        except UnicodeError:
            raise exceptions.AuthenticationFailed(
                "Invalid token header: a key is letters, digits and '_' only."
            ) from None
        try:
            # Behind our proxy (USE_X_FORWARDED_FOR), the client's address as the proxy saw it.
            token = tokens.api_token_check(key, address=client_address(request.META))
        except tokens.TokenRefused as refused:
            raise exceptions.AuthenticationFailed(refused.explain(token_page(request))) from None
        if token.scope == ApiToken.Scope.READ and request.method not in SAFE_METHODS:
            raise exceptions.PermissionDenied(
                f"This token ({token.prefix}…, {token.name!r}) is read-only: it may read (GET, HEAD, "
                f"OPTIONS) but not {request.method} {request.path}. Use a read-and-write token "
                f"(make one at {token_page(request)})."
            )
        # The token is fine; its user's groups may have changed in the directory since sign-in.
        if refusal := directory.token_recheck(token.user):
            raise exceptions.PermissionDenied(refusal)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # Present, so an unauthenticated call is a 401 (not a 403).
        return 'Token realm="api"'


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """The scheme in the API docs (/api/docs/): Swagger UI's Authorize sends it as Bearer."""

    target_class = ApiTokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "A named API token, made on the portal's API tokens page (/account/token/) or with "
                "POST /api/v1/tokens/; its key is shown once. Send it as `Authorization: Token <key>` "
                "or `Authorization: Bearer <key>`. It acts as its user, with their teams and role. "
                "A read-only token may use GET, HEAD and OPTIONS only (anything else: 403); a "
                "read-and-write token everything its user may do. An unknown, revoked or expired "
                "token gets a 401 that says which. A token of a user who signs in through the "
                "company directory follows their directory groups (reread every few seconds): "
                "groups that give nothing any more get a 403."
            ),
        }
