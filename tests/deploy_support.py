"""The production files in deploy/ as the tests use them: the nginx site rendered for a test's
ports and paths, the units' command lines with this checkout's venv, the env file example read.

Every replacement names the exact text it replaces in deploy/, and fails if that text is gone, so
a change there cannot leave the tests serving something else than what ops install."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
SITE = DEPLOY / "nginx" / "slipway.conf"
ENV_EXAMPLE = DEPLOY / "slipway.env.example"
# Where the units expect the checkout and its venv on a production machine.
INSTALL_ROOT = "/srv/slipway"
NGINX = "/usr/sbin/nginx"


def _replace(text: str, replacements: dict[str, str], where: Path) -> str:
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(
                f"{where.relative_to(ROOT)} no longer says {old!r}: update tests/deploy_support.py"
            )
        text = text.replace(old, new)
    return text


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made with the openssl CLI: the
    certificate's and the key's paths."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "2", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def render_site(
    *, http_port: int, https_port: int, upstream_port: int, cert: Path, key: Path, static_root: Path
) -> str:
    """deploy/nginx/slipway.conf listening on 127.0.0.1 only, with the test's certificate,
    static files and daphne."""
    return _replace(
        SITE.read_text(),
        {
            "    listen [::]:80;\n": "",
            "    listen [::]:443 ssl http2;\n": "",
            "listen 80;": f"listen 127.0.0.1:{http_port};",
            "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_port};",
            "/etc/slipway/tls/fullchain.pem": str(cert),
            "/etc/slipway/tls/privkey.pem": str(key),
            "alias /var/lib/slipway/static/;": f"alias {static_root}/;",
        },
        SITE,
    )


def nginx_conf(prefix: Path, site: Path) -> str:
    """A main nginx.conf as Debian's, cut to what a child process under `prefix` needs: the
    site is included in its http block, as sites-enabled is."""
    return f"""
# The tests' processes run as root and their files sit in private temporary directories.
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log stderr info;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""


def unit_command(unit: str, **replacements: str) -> list[str]:
    """The ExecStart of deploy/`unit`, with this checkout's venv for /srv/slipway/.venv and the
    given replacements (exact text, e.g. the port) applied first."""
    path = DEPLOY / unit
    lines = [line for line in path.read_text().splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, f"{unit}: expected one ExecStart line"
    command = _replace(lines[0].removeprefix("ExecStart="), replacements, path)
    venv_bin = f"{INSTALL_ROOT}/.venv/bin/"
    argv = shlex.split(command)
    assert argv[0].startswith(venv_bin), f"{unit}: runs {argv[0]}, not a program of {venv_bin}"
    program = argv[0].removeprefix(venv_bin)
    here = Path(sys.executable).parent
    return [sys.executable if program == "python" else str(here / program), *argv[1:]]


def env_example(*, commented: bool = False) -> dict[str, str]:
    """The NAME=value lines of deploy/slipway.env.example; with `commented`, also the optional
    ones left commented out (`#NAME=value`)."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        body = line.removeprefix("#") if commented else line
        name, sep, value = body.partition("=")
        if sep and name.replace("_", "").isalnum() and name.isupper():
            values[name] = value
    return values
