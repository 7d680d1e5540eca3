from __future__ import annotations

from pathlib import Path

import pytest

from portal.env import envbool, envfloat, envint, envlist, envstr


def test_envbool_accepts_the_usual_spellings(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw, expected in [("1", True), ("yes", True), ("On", True), ("0", False), ("false", False)]:
        monkeypatch.setenv("X_FLAG", raw)
        assert envbool("X_FLAG", not expected) is expected
    monkeypatch.delenv("X_FLAG")
    assert envbool("X_FLAG", True) is True


def test_envbool_refuses_anything_else_and_says_what_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ValueError, match="expected one of 1/0"):
        envbool("X_FLAG", False)


def test_envint_and_envfloat_name_the_variable_on_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_NUM", "ten")
    with pytest.raises(ValueError, match="X_NUM='ten': expected an integer"):
        envint("X_NUM", 1)
    with pytest.raises(ValueError, match="expected a number"):
        envfloat("X_NUM", 1.0)
    monkeypatch.setenv("X_NUM", "2.5")
    assert envfloat("X_NUM", 1.0) == 2.5


def test_a_file_variant_wins_for_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.setenv("X_SECRET", "from-env")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert envstr("X_SECRET", "default") == "from-file"


def test_envlist_splits_on_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert envlist("X_LIST", []) == ["a", "b", "c"]
