"""The production files in deploy/ hold together: the env file example names only settings the
portal reads and passes Django's deploy checks, nginx takes uploads as large as the portal does
and its configuration loads, systemd finds nothing wrong with the units, every queue work is
sent to has a unit that takes it, and the builder's sandbox sets nothing that would turn
NoNewPrivileges back on. (They serve the portal for real in
tests/browser/test_production_browser.py; tests/builds/test_builder.py builds within the
builder's sandbox.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from apps.images import publish
from portal import jobs
from tests.deploy_support import (
    DEPLOY,
    NGINX,
    ROOT,
    env_example,
    nginx_conf,
    render_site,
    self_signed,
    unit_command,
)
from tests.plain.test_docs_settings import settings_read

UNITS = [
    "slipway-web.service",
    "slipway-worker@.service",
    "slipway-builder.service",
    "slipway-beat.service",
    "slipway-events.service",
]


def _settings_name(name: str) -> str:
    return name.removesuffix("_FILE")


def test_the_env_example_sets_only_settings_the_portal_reads() -> None:
    names = {_settings_name(name) for name in env_example(commented=True)}
    assert {
        "SECRET_KEY",
        "DATABASE_URL",
        "SLIPWAY_HTTPS",
        "SECURE_PROXY_SSL_HEADER",
        "ALLOWED_HOSTS",
    } <= names
    unknown = sorted(names - settings_read())
    assert not unknown, f"deploy/slipway.env.example sets variables portal/settings.py never reads: {unknown}"


def _deploy_check(tmp_path: Path, **override: str) -> subprocess.CompletedProcess[str]:
    """`manage.py check --deploy` with the example's settings, its secret files made here."""
    (tmp_path / "secret_key").write_text("x" * 60 + "-a-long-random-production-key\n")
    (tmp_path / "database_url").write_text("postgres://slipway:pw@127.0.0.1:5432/slipway\n")
    (tmp_path / "secrets_keys").write_text(Fernet.generate_key().decode() + "\n")
    env = env_example()
    env.update(
        SECRET_KEY_FILE=str(tmp_path / "secret_key"),
        SECRETS_KEYS_FILE=str(tmp_path / "secrets_keys"),
        DATABASE_URL_FILE=str(tmp_path / "database_url"),
        SLIPWAY_VAR_DIR=str(tmp_path / "var"),
        **override,
    )
    env = {k: v for k, v in env.items() if v != "-"}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_env_example_passes_djangos_deploy_checks(tmp_path: Path) -> None:
    result = _deploy_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_without_https_the_same_settings_fail_the_deploy_checks(tmp_path: Path) -> None:
    result = _deploy_check(tmp_path, SLIPWAY_HTTPS="-", SECURE_HSTS_SECONDS="-")
    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr, result.stderr


def test_nginx_takes_an_upload_as_large_as_the_portal_allows() -> None:
    site = (DEPLOY / "nginx" / "slipway.conf").read_text()
    [limit] = re.findall(r"^\s*client_max_body_size (\d+)m;", site, re.MULTILINE)
    allowed = int(env_example()["MAX_UPLOAD_MB"])
    # The archive, plus the form around it; not far past it either.
    assert allowed < int(limit) <= allowed + 16


def test_the_nginx_site_loads_in_debians_nginx(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    site = tmp_path / "slipway.conf"
    site.write_text(
        render_site(
            http_port=1080,
            https_port=1443,
            upstream_port=18000,
            cert=cert,
            key=key,
            static_root=tmp_path / "static",
        )
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf(tmp_path, site))
    result = subprocess.run(
        [NGINX, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    # A site that says something nginx does not know is refused: the check can fail.
    site.write_text(site.read_text().replace("client_max_body_size", "client_max_body"))
    result = subprocess.run(
        [NGINX, "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode != 0 and 'unknown directive "client_max_body"' in result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_finds_nothing_wrong_with_the_unit(unit: str, tmp_path: Path) -> None:
    # As installed (/etc/systemd/system), with this checkout for /srv/slipway and its env file.
    env_file = tmp_path / "slipway.env"
    env_file.write_text("")
    text = (DEPLOY / unit).read_text()
    text = text.replace("/srv/slipway/.venv/bin/", f"{Path(sys.executable).parent}/")
    text = text.replace("/srv/slipway", str(ROOT)).replace("/etc/slipway/slipway.env", str(env_file))
    name = unit.replace("@.", "@1.")  # a template is verified as one of its instances
    (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / name)], capture_output=True, text=True
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    assert "User=slipway" in text and f"EnvironmentFile={env_file}" in text
    # The program it starts is one of the venv's.
    argv = unit_command(unit, **({"worker%i@%%h": "worker1@%h"} if "@" in unit else {}))
    assert Path(argv[0]).exists(), argv


def _queues(argv: list[str]) -> set[str]:
    """The queues a `celery worker` command line takes (without --queues: the default one)."""
    for flag in ("--queues", "-Q"):
        if flag in argv:
            return set(argv[argv.index(flag) + 1].split(","))
    return {jobs.DEFAULT_QUEUE}


def test_every_queue_work_is_sent_to_is_taken_and_builds_only_by_the_builder() -> None:
    sent = {jobs.DEFAULT_QUEUE} | {kind.queue for kind in jobs.kinds() if kind.queue}
    assert publish.PUBLISH.queue == publish.BUILDS_QUEUE in sent
    worker = _queues(unit_command("slipway-worker@.service", **{"worker%i@%%h": "worker1@%h"}))
    builder = _queues(unit_command("slipway-builder.service"))
    assert worker == {jobs.DEFAULT_QUEUE} and builder == {publish.BUILDS_QUEUE}
    assert worker | builder == sent
    # Where one worker does everything (`make up`, the tests' shared worker), it takes both.
    services = (ROOT / "scripts" / "services.sh").read_text()
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    for where, found in (
        ("scripts/services.sh", re.findall(r"--queues (\S+)", services)),
        ("tests/conftest.py", re.findall(r'"--queues",\s*"([^"]+)"', conftest)),
    ):
        assert [set(queues.split(",")) for queues in found] == [sent], where


def _service_settings(unit: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in (DEPLOY / unit).read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings[name] = value
    return settings


# systemd.exec(5): for a service with User= (no CAP_SYS_ADMIN), each of these turns
# NoNewPrivileges on, whatever it says, and newuidmap (setuid) then cannot map a namespace.
IMPLY_NO_NEW_PRIVILEGES = (
    "DynamicUser",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "PrivateDevices",
    "ProtectClock",
    "ProtectHostname",
    "ProtectKernelLogs",
    "ProtectKernelModules",
    "ProtectKernelTunables",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallLog",
)


def test_the_builders_sandbox_lets_newuidmap_work_and_the_workers_stays_tight() -> None:
    builder = _service_settings("slipway-builder.service")
    assert builder["User"] == "slipway" and builder["NoNewPrivileges"] == "no"
    assert [name for name in IMPLY_NO_NEW_PRIVILEGES if name in builder] == []
    assert set(builder["CapabilityBoundingSet"].split()) == {
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_DAC_OVERRIDE",
        "CAP_SYS_ADMIN",
    }
    for kept in ("ProtectSystem", "ProtectHome", "PrivateTmp", "ProtectControlGroups"):
        assert builder[kept] in ("yes", "strict"), kept
    worker = _service_settings("slipway-worker@.service")
    assert worker["NoNewPrivileges"] == "yes" and worker["CapabilityBoundingSet"] == ""
    assert worker["RestrictNamespaces"] == "yes" and worker["RestrictSUIDSGID"] == "yes"


BACKUP_SCRIPT = "/etc/cron.hourly/slipway-backup"


def _backup_script() -> str:
    """The hourly backup script as docs/backup.md has root write it (a here-document)."""
    lines = (ROOT / "docs" / "backup.md").read_text().splitlines()
    start = lines.index(f"cat > {BACKUP_SCRIPT} <<'EOF'") + 1
    return "\n".join(lines[start : lines.index("EOF", start)]) + "\n"


def _production_packages() -> set[str]:
    text = (ROOT / "docs" / "production.md").read_text()
    [command] = re.findall(r"apt-get install -y ((?:.*\\\n)*.*)", text)
    return set(command.replace("\\\n", " ").split())


def test_the_backup_script_runs_as_cron_runs_it_and_keeps_the_last_48_dumps(tmp_path: Path) -> None:
    script = _backup_script()
    doc = (ROOT / "docs" / "backup.md").read_text()
    # run-parts runs only executable files, each as a program: a #! line and the mode.
    assert script.startswith("#!/bin/sh\n") and f"chmod 0755 {BACKUP_SCRIPT}" in doc
    assert "." not in Path(BACKUP_SCRIPT).name  # run-parts skips names with a dot
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    # What it runs beyond coreutils comes from production.md's packages.
    assert {"postgresql", "rsync"} <= _production_packages()

    # Run for real, on paths of the test's own, with pg_dump and rsync standing in.
    dest, media, etc = tmp_path / "backup", tmp_path / "media", tmp_path / "etc"
    (media / "releases" / "shop").mkdir(parents=True)
    (media / "releases" / "shop" / "1-abc.tar").write_bytes(b"release one")
    etc.mkdir()
    (etc / "database_url").write_text("postgres://slipway:pw@127.0.0.1:5432/slipway\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {
        # pg_dump -Fc -f FILE URL: the URL it was given, as the dump.
        "pg_dump": '#!/bin/sh\n[ "$1" = -Fc ] && [ "$2" = -f ] && printf %s "$4" > "$3"\n',
        # rsync -a SRC/ DEST/
        "rsync": '#!/bin/sh\n[ "$1" = -a ] && mkdir -p "$3" && cp -a "$2". "$3"\n',
    }
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    dest.mkdir(mode=0o700)
    older = [dest / f"db-202001{1 + n // 24:02d}T{n % 24:02d}0000Z.dump" for n in range(50)]
    for n, old in enumerate(older):  # oldest first
        old.write_text("old")
        os.utime(old, (1_600_000_000 + n * 3600, 1_600_000_000 + n * 3600))
    runnable = tmp_path / "slipway-backup"
    text = script
    for old_path, new_path in {
        "dest=/backup/slipway": f"dest={dest}",
        "/etc/slipway/database_url": str(etc / "database_url"),
        "/var/lib/slipway/media/": f"{media}/",
    }.items():
        assert old_path in text, old_path
        text = text.replace(old_path, new_path)
    runnable.write_text(text)
    runnable.chmod(0o755)
    done = subprocess.run(
        [str(runnable)],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    dumps = sorted(dest.glob("db-*.dump"))
    assert len(dumps) == 48
    [new] = [d for d in dumps if d.read_text() != "old"]
    assert new.read_text() == "postgres://slipway:pw@127.0.0.1:5432/slipway"
    assert [old.exists() for old in older[:4]] == [False, False, False, True]  # the oldest three went
    assert (dest / "media" / "releases" / "shop" / "1-abc.tar").read_bytes() == b"release one"
