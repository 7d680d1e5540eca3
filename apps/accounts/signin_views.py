"""The sign-in page (local and directory accounts, and a "Sign in with ..." button when OIDC is
configured) and the OIDC round trip's two URLs, which answer 404 while OIDC is off."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView


class SignInForm(AuthenticationForm):
    def get_invalid_login_error(self) -> ValidationError:
        # The directory's reason (in no mapped group, cannot be reached) rather than "wrong
        # password" when it gave one; it gives none for a wrong password or an unknown name.
        refusal = getattr(self.request, "signin_refusal", None)
        if refusal:
            return ValidationError(refusal, code="refused")
        return super().get_invalid_login_error()


class SignInView(LoginView):
    form_class = SignInForm
    authentication_form = SignInForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["oidc_provider"] = settings.OIDC_PROVIDER_NAME if settings.OIDC_RP_CLIENT_ID else ""
        return context


def _oidc_on() -> None:
    if not settings.OIDC_RP_CLIENT_ID:
        raise Http404("Sign-in with an OpenID Connect provider is not configured (OIDC_RP_CLIENT_ID).")


def oidc_start(request: HttpRequest) -> HttpResponse:
    """Off to the provider, with state, nonce and PKCE kept in the session."""
    _oidc_on()
    response: HttpResponse = OIDCAuthenticationRequestView.as_view()(request)
    return response


def oidc_callback(request: HttpRequest) -> HttpResponse:
    """Back from the provider: signed in, or back to the sign-in page with a message."""
    _oidc_on()
    response: HttpResponse = OIDCAuthenticationCallbackView.as_view()(request)
    return response
