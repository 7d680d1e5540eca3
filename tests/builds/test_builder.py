"""The image builder (deploy/slipway-builder.service), for real:

- publishing a version goes to the builds queue, which only the builder takes in production, and
  goes there again when the reconcile sends a lost one again;
- an unprivileged user with a subordinate uid and gid range (what docs/production.md gives the
  slipway user) gets a user namespace mapped onto that range within the builder unit's bounding
  set, while no_new_privs (the workers' NoNewPrivileges=yes) or the workers' empty bounding set
  refuse it: newuidmap is setuid, and needs both;
- as that user, within that bounding set, rootfs.debian_tar builds a tree from Debian's packages
  with mmdebstrap, which picks its unshare mode: the files in it belong to root, setuid bits kept.

The user (TEST_USER, a system account without a home or a shell) and its range are made once on
this machine, as `usermod --add-subuids` makes the slipway user's. Run as root, as CI does."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone

from apps.applications.models import BaseImage
from apps.images import packages, publish, rootfs
from apps.instances import reconcile
from portal import jobs
from portal.celery import app as celery_app
from tests.conftest import TEST_BROKER_URL

DEPLOY = Path(settings.BASE_DIR) / "deploy"
TEST_USER = "slipway-test-builder"
# Its subordinate range: 65536 ids, as the docs give the slipway user, far from the usual 100000.
FIRST_SUBID = 1_100_000
SUBIDS = f"{FIRST_SUBID}-{FIRST_SUBID + 65535}"
# Debian's own Python (world-readable, unlike a venv's interpreter under /root): mmdebstrap's
# customize hook runs it inside the user namespace, as it runs /srv/slipway/.venv/bin/python
# (made from Debian's python3) on a production machine.
DEBIAN_PYTHON = "/usr/bin/python3"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


# --- the queue ---------------------------------------------------------------------------------


def _queued(broker: redis.Redis, queue: str) -> list[str]:
    """The task names waiting in a queue (kombu's Redis transport: a list named after it)."""
    return [json.loads(raw)["headers"]["task"] for raw in broker.lrange(queue, 0, -1)]


@pytest.mark.django_db(transaction=True)
def test_a_publish_goes_to_the_builds_queue_and_goes_there_again_when_the_reconcile_resends_it(
    ops: User,
) -> None:
    broker = redis.Redis.from_url(TEST_BROKER_URL)
    celery_app.control.purge()
    assert _queued(broker, publish.BUILDS_QUEUE) == []
    image = BaseImage.objects.create(
        name="slipway/route-test", tag="1", runtime="test", recipe="FROM scratch\nADD busybox /\n"
    )
    try:
        publish.image_publish(user=ops, image=image)  # sent as its transaction commits
        assert _queued(broker, publish.BUILDS_QUEUE) == ["catalog.publish_image"]
        assert _queued(broker, jobs.DEFAULT_QUEUE) == []
        # Never claimed long after it was sent (its message lost): the reconcile sends it again,
        # to the same queue.
        BaseImage.objects.filter(pk=image.pk).update(queued_at=timezone.now() - timedelta(hours=1))
        report = reconcile.reconcile()
        assert report.jobs_resent == {"publish": [image.pk]}
        assert _queued(broker, publish.BUILDS_QUEUE) == ["catalog.publish_image"] * 2
        assert _queued(broker, jobs.DEFAULT_QUEUE) == []
    finally:
        celery_app.control.purge()
    assert _queued(broker, publish.BUILDS_QUEUE) == []  # the tests' purges reach it too


# --- the sandbox -------------------------------------------------------------------------------


def _unit_setting(unit: str, name: str) -> str:
    [value] = [
        line.split("=", 1)[1]
        for line in (DEPLOY / unit).read_text().splitlines()
        if line.startswith(f"{name}=")
    ]
    return value


def _bounding(unit: str) -> str:
    """The unit's CapabilityBoundingSet= in setpriv's words (`-all,+setuid,...`)."""
    caps = _unit_setting(unit, "CapabilityBoundingSet").split()
    return ",".join(["-all", *(f"+{cap.removeprefix('CAP_').lower()}" for cap in caps)])


@pytest.fixture(scope="module")
def builder_user() -> str:
    """A user like the production slipway user: no privilege, a subordinate uid and gid range."""
    if os.geteuid() != 0:
        pytest.fail("the builder tests make a system user and run as it: run them as root (CI does)")
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            [
                *("useradd", "--system", "--user-group", "--no-create-home"),
                *("--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", TEST_USER),
            ],
            check=True,
        )
    for path, option in (("/etc/subuid", "--add-subuids"), ("/etc/subgid", "--add-subgids")):
        lines = Path(path).read_text().splitlines() if Path(path).exists() else []
        if f"{TEST_USER}:{FIRST_SUBID}:65536" not in lines:
            subprocess.run(["usermod", option, SUBIDS, TEST_USER], check=True)
    return TEST_USER


@pytest.fixture
def owned_dir(builder_user: str) -> Iterator[Path]:
    """A directory of the test user's own (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="slipway-builder-"))
    shutil.chown(path, builder_user, builder_user)
    path.chmod(0o755)  # root inside a user namespace is another uid: it reads the code copied here
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _as(user: str, argv: list[str], *, bounding: str, no_new_privs: bool = False, **env: str) -> list[str]:
    """argv run as `user` within the bounding set, with no_new_privs if asked, as systemd runs a
    unit's ExecStart with User=, CapabilityBoundingSet= and NoNewPrivileges=."""
    return [
        *("setpriv", "--reuid", user, "--regid", user, "--clear-groups", f"--bounding-set={bounding}"),
        *(["--no-new-privs"] if no_new_privs else []),
        *("env", "-i", f"PATH={PATH}", "LC_ALL=C.UTF-8", *(f"{k}={v}" for k, v in env.items())),
        *argv,
    ]


# Root in a new user namespace, mapped onto the subordinate range, as mmdebstrap's unshare mode
# makes it: a file given to uid 5 and gid 7 there, and a mount.
IN_A_USER_NAMESPACE = [
    *("unshare", "--map-auto", "--map-root-user", "--mount", "--pid", "--fork"),
    *("sh", "-c", "touch f && chown 5:7 f && mkdir proc && mount -t proc proc proc && echo mapped"),
]


def test_a_user_with_a_subordinate_range_gets_a_user_namespace_in_the_builders_sandbox_only(
    builder_user: str, owned_dir: Path
) -> None:
    builder = _bounding("slipway-builder.service")
    done = subprocess.run(
        _as(builder_user, IN_A_USER_NAMESPACE, bounding=builder),
        cwd=owned_dir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stdout.strip() == "mapped", done.stderr
    made = (owned_dir / "f").stat()
    # uid 1 in the namespace is the range's first id, so 5 is the fifth.
    assert (made.st_uid, made.st_gid) == (FIRST_SUBID + 4, FIRST_SUBID + 6)

    # The workers' sandbox refuses it: NoNewPrivileges=yes, and an empty bounding set.
    assert _unit_setting("slipway-worker@.service", "NoNewPrivileges") == "yes"
    assert _unit_setting("slipway-worker@.service", "CapabilityBoundingSet") == ""
    for refused in (
        _as(builder_user, IN_A_USER_NAMESPACE, bounding=builder, no_new_privs=True),
        _as(builder_user, IN_A_USER_NAMESPACE, bounding=_bounding("slipway-worker@.service")),
    ):
        (owned_dir / "f").unlink(missing_ok=True)
        done = subprocess.run(refused, cwd=owned_dir, capture_output=True, text=True, timeout=30)
        assert done.returncode != 0 and "newuidmap" in done.stderr, (refused, done.stdout, done.stderr)
        assert "mapped" not in done.stdout


# Runs rootfs.debian_tar as the test user, with Debian's Python and a copy of the two modules it
# needs (the checkout may not be readable by others); prints what it made.
BUILD = """
import json, sys
from pathlib import Path
from apps.images import rootfs
release, deb_lines, packages, cache = json.loads(sys.argv[1])
log = []
try:
    out = rootfs.debian_tar(release, deb_lines, tuple(packages), Path(cache), log.append, reuse=False)
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "log": log[-60:]}))
else:
    print(json.dumps({"tar": str(out), "log": [line for line in log if line.startswith("I: ")]}))
"""


def test_a_debian_tree_builds_as_an_unprivileged_user_in_the_builders_sandbox(
    builder_user: str, owned_dir: Path
) -> None:
    code = owned_dir / "code" / "apps" / "images"
    code.mkdir(parents=True)
    for init in (code.parent / "__init__.py", code / "__init__.py"):
        init.touch()
    here = Path(rootfs.__file__).parent
    for module in ("rootfs.py", "reproducible.py"):
        shutil.copy(here / module, code / module)
    for path in [owned_dir / "code", *(owned_dir / "code").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    cache = owned_dir / "cache"
    cache.mkdir()
    shutil.chown(cache, builder_user, builder_user)
    inputs = ["bookworm", packages.release("bookworm").deb_lines, ["hello"], str(cache)]

    done = subprocess.run(
        _as(
            builder_user,
            [DEBIAN_PYTHON, "-c", BUILD, json.dumps(inputs)],
            bounding=_bounding("slipway-builder.service"),
            HOME=str(owned_dir),
            PYTHONPATH=str(owned_dir / "code"),
        ),
        cwd=owned_dir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert "error" not in result, "\n".join([result["error"], *result["log"]])
    assert "I: automatically chosen mode: unshare" in result["log"]
    tree = Path(result["tar"])
    assert tree.parent == cache and tree.stat().st_uid == pwd.getpwnam(builder_user).pw_uid
    with tarfile.open(tree) as archive:
        members = {member.name: member for member in archive.getmembers()}
    hello = members["./usr/bin/hello"]
    assert (hello.uid, hello.gid) == (0, 0)
    # dpkg unpacked su setuid root, inside the namespace: the tree holds it so.
    su = members["./usr/bin/su"]
    assert (su.uid, su.mode & 0o4000) == (0, 0o4000)
    assert not [name for name, m in members.items() if m.uid >= 65536], "ids outside the namespace's map"
