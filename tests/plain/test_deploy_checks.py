"""`manage.py check --deploy` is clean with the production environment, and the lab's default
environment (plain http on 127.0.0.1) still boots. Each run is a process of its own: settings are
read from the environment once, at import."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)

# What the settings read; a developer's shell must not change what these tests see.
_OURS = {
    # Set for the browser tests' Playwright (tests/browser/conftest.py), never in deployment.
    "DJANGO_ALLOW_ASYNC_UNSAFE",
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "DEBUG",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "SITE_URL",
    "SLIPWAY_HTTPS",
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
    "SILENCED_SYSTEM_CHECKS",
    "DJANGO_SETTINGS_MODULE",
}


def _manage(var_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in _OURS}
    # Settings write the generated secret key, the static root and the SQLite file under here.
    base["SLIPWAY_VAR_DIR"] = str(var_dir)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=base | env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_production_environment_passes_the_deploy_checks(tmp_path: Path) -> None:
    result = _manage(
        tmp_path,
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="0",
        ALLOWED_HOSTS="slipway.example.com",
        CSRF_TRUSTED_ORIGINS="https://slipway.example.com",
        SLIPWAY_HTTPS="1",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="1",
        SECURE_HSTS_PRELOAD="1",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_without_https_the_deploy_checks_say_what_is_missing(tmp_path: Path) -> None:
    result = _manage(
        tmp_path,
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="0",
        ALLOWED_HOSTS="slipway.example.com",
    )
    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr, result.stderr


def test_the_lab_default_environment_still_boots(tmp_path: Path) -> None:
    result = _manage(tmp_path, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    result = _manage(
        tmp_path,
        "shell",
        "-c",
        "from django.conf import settings as s; "
        "print(s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SECURE_HSTS_SECONDS, s.ALLOWED_HOSTS)",
    )
    assert result.returncode == 0, result.stderr
    # Plain http on 127.0.0.1, as `make up` serves it: no redirect, no secure-only cookies.
    assert (
        result.stdout.split("\n")[-2] == "False False False False 0 ['127.0.0.1', 'localhost', 'testserver']"
    )
