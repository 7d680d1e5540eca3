from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    """HttpRequest as seen behind django-htmx's middleware, for type checkers."""

    htmx: HtmxDetails


class AuthedHttpRequest(HttpRequest):
    """A request behind login_required: the user is a real User."""

    user: User
