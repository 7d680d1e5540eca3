"""The home page says the right thing to each kind of user."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client


def test_ops_outside_any_team_are_not_told_to_ask_ops(ops: User) -> None:
    client = Client()
    client.force_login(ops)
    page = client.get("/").content.decode()
    assert "Ask ops to add you" not in page
    assert "You are ops" in page


def test_a_user_outside_any_team_is_told_whom_to_ask(db: None) -> None:
    loner = User.objects.create_user("loner", "loner@example.invalid", "pw-loner")
    client = Client()
    client.force_login(loner)
    assert "Ask ops to add you" in client.get("/").content.decode()
