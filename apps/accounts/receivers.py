"""Each sign-in notes how it was made (LastSignIn), for the requests that come without a session:
API tokens (apps.accounts.directory.token_recheck)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import LastSignIn


@receiver(user_logged_in, dispatch_uid="accounts_last_sign_in")
def note_sign_in(sender: type, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    # django.contrib.auth.login has put the backend in the session before it sends the signal.
    session = getattr(request, "session", None)
    backend = session.get(BACKEND_SESSION_KEY) if session is not None else getattr(user, "backend", None)
    if backend:
        LastSignIn.objects.update_or_create(user=user, defaults={"backend": backend, "at": timezone.now()})
