"""Websocket routes (served by the ASGI application in portal/asgi.py, not by Django's URLconf)."""

from __future__ import annotations

from django.urls import path

from apps.console.consumers import AppLogTailConsumer, LogTailConsumer, TerminalConsumer


def terminal_path(instance_pk: int) -> str:
    return f"/ws/instances/{instance_pk}/terminal/"


websocket_urlpatterns = [
    path("ws/instances/<int:pk>/terminal/", TerminalConsumer.as_asgi()),
    path("ws/instances/<int:pk>/logs/", LogTailConsumer.as_asgi()),
    path("ws/apps/<slug:slug>/logs/", AppLogTailConsumer.as_asgi()),
]
