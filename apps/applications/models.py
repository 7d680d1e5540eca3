from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from apps.accounts.models import Team, slug_validator
from apps.applications.secret_env import validate_sealed
from apps.applications.validators import (
    validate_argv,
    validate_container_path,
    validate_env,
    validate_health_path,
    validate_state_paths,
)
from apps.hosts.models import Host
from portal import jobs


class BuildState(models.TextChoices):
    DRAFT = "draft", "Draft"
    BUILDING = "building", "Building"
    LOADING = "loading", "Loading onto hosts"
    PUBLISHED = "published", "Published"
    FAILED = "failed", "Failed"


class BaseImage(jobs.JobRecord):
    """An app-agnostic runtime image; the app's files come in through its volume."""

    name = models.CharField(
        max_length=100,
        validators=[
            RegexValidator(
                r"^[a-z0-9]+([._/-][a-z0-9]+)*$", "Use a Docker repository name, e.g. slipway/busybox."
            )
        ],
    )
    tag = models.CharField(
        max_length=64,
        validators=[
            RegexValidator(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$", "Use a Docker tag, e.g. 1 or 3.11.")
        ],
    )
    runtime = models.CharField(max_length=40, help_text="busybox, python, jvm, node, static, ...")
    description = models.TextField(blank=True)
    default_command = models.JSONField(default=list, blank=True, validators=[validate_argv])
    # Offered on the app page of every app on the image as "reload" (e.g. a HUP to the main
    # process); empty: none.
    reload_command = models.JSONField(
        default=list, blank=True, validators=[validate_argv], help_text='e.g. ["kill", "-HUP", "1"]'
    )
    default_port = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    deprecated = models.BooleanField(default=False, help_text="Deprecated images take no new apps.")
    # Of the versions (tags) of one image name: the one apps should move to, and those that take
    # no new instances at all (running ones keep running, and move to another version).
    recommended = models.BooleanField(
        default=False, help_text="The version apps on this image should move to."
    )
    withdrawn = models.BooleanField(
        default=False, help_text="Withdrawn versions take no new instances at all."
    )
    hosts = models.ManyToManyField(
        Host, blank=True, related_name="images", help_text="Hosts that have this image."
    )
    # Built by the portal from the recipe (no registry), then loaded onto the hosts. Versions
    # registered without a recipe (imported on the hosts by other means) count as published.
    recipe = models.TextField(
        blank=True,
        help_text=(
            "FROM debian:<release> with PACKAGES, or FROM scratch with ADD <rootfs> /; then ENV, CMD, "
            "ENTRYPOINT, WORKDIR, LABEL, EXPOSE, USER."
        ),
    )
    state = models.CharField(max_length=12, choices=BuildState.choices, default=BuildState.PUBLISHED)
    # Docker's image ID, the same on every host: the digest of the image's config.
    digest = models.CharField(max_length=80, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True, help_text="Bytes of the image archive.")
    # Per host: {"state": loading|loaded|failed, "done": bytes, "total": bytes, "error": ...}.
    load_progress = models.JSONField(default=dict, blank=True)
    build_error = models.TextField(blank=True)
    # While a version builds: the step it is at, in words, and the last lines of the build's
    # log (kept after a failure, so the page shows why).
    build_step = models.CharField(max_length=120, blank=True)
    build_log = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "tag"]
        constraints = [models.UniqueConstraint(fields=["name", "tag"], name="one_base_image_per_tag")]

    def __str__(self) -> str:
        return self.reference

    def clean(self) -> None:
        if self.recommended and not self.published:
            raise ValidationError(
                {
                    "recommended": f"Only a published version can be the recommended one (this one is {self.state})."
                }
            )
        if self.recommended and (self.deprecated or self.withdrawn):
            raise ValidationError(
                {"recommended": "A deprecated or withdrawn version cannot be the recommended one."}
            )
        if self.recommended:
            other = BaseImage.objects.filter(name=self.name, recommended=True).exclude(pk=self.pk).first()
            if other is not None:
                raise ValidationError(
                    {
                        "recommended": f"{other.reference} is the recommended version of {self.name}; un-mark it first."
                    }
                )

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def published(self) -> bool:
        return self.state == BuildState.PUBLISHED

    @property
    def status(self) -> str:
        if not self.published:
            return str(self.state)
        if self.withdrawn:
            return "withdrawn"
        if self.deprecated:
            return "deprecated"
        return "recommended" if self.recommended else "published"


class HealthCheck(models.TextChoices):
    TCP = "tcp", "TCP connect to the app's port"
    HTTP = "http", "HTTP GET answers 2xx or 3xx"
    NONE = "none", "None (running is enough)"


class App(models.Model):
    slug = models.CharField(max_length=40, unique=True, validators=[slug_validator])
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="apps")
    base_image = models.ForeignKey(BaseImage, on_delete=models.PROTECT, related_name="apps")
    command = models.JSONField(
        default=list, blank=True, validators=[validate_argv], help_text="argv; empty: the image's default"
    )
    port = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    env = models.JSONField(default=dict, blank=True, validators=[validate_env])
    # Secret variables: name -> Fernet token (apps/applications/secret_env.py). Opened only to
    # make a container; everywhere else only the names are shown.
    secrets = models.JSONField(default=dict, blank=True, validators=[validate_sealed])
    # Where the app's files appear in the container (empty: settings.APP_VOLUME_MOUNT). A moved
    # VM app keeps its old path, so its command and config need no rewriting.
    volume_mount = models.CharField(
        max_length=200,
        blank=True,
        validators=[validate_container_path],
        help_text="Empty: the default mount path",
    )
    # The host whose copy of the volume is the app's files (a moved VM's): another host that
    # starts an instance copies them from here first. Uploaded tarballs take precedence.
    volume_home = models.ForeignKey(
        Host,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Where the app's files come from",
    )
    workdir = models.CharField(
        max_length=200, blank=True, validators=[validate_container_path], help_text="Empty: the image's own"
    )
    # Paths inside the code (relative to the mount) that are really the app's state, e.g. the
    # logs/ of an app moved from a VM: each is bound from the app's persistent directory.
    state_paths = models.JSONField(default=list, blank=True, validators=[validate_state_paths])
    # The release the app runs, or is being deployed (its fields above are that release's
    # configuration, which the edit form changes to make the next one). Empty only for apps
    # made without the release services (fixtures).
    release = models.ForeignKey("Release", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    memory_mb = models.PositiveIntegerField(default=64)
    cpus = models.DecimalField(max_digits=5, decimal_places=2, default=Decimal("0.25"))
    instances = models.PositiveIntegerField(default=0, help_text="Desired number of running instances.")
    # Whether a new or recreated instance is serving: a rolling upgrade and a move wait for it
    # before they touch the next instance, and undo the change when it does not come.
    health_check = models.CharField(
        max_length=10,
        choices=HealthCheck.choices,
        default=HealthCheck.TCP,
        help_text="TCP: the app's port accepts a connection; HTTP: GET of the path answers 2xx or 3xx.",
    )
    health_path = models.CharField(
        max_length=200,
        default="/",
        validators=[validate_health_path],
        help_text="For HTTP checks: the path to GET, e.g. /healthz",
    )
    health_timeout = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(600)],
        help_text="Seconds a new instance has to pass the check.",
    )
    # Instances get static addresses from this pool; none: the host's default bridge.
    ip_pool = models.ForeignKey(
        "network.IPPool", null=True, blank=True, on_delete=models.PROTECT, related_name="apps"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def argv(self) -> list[str]:
        return list(self.command or self.base_image.default_command)

    @property
    def effective_port(self) -> int | None:
        return self.port or self.base_image.default_port

    def volume_path(self, host: Host) -> str:
        """The app's volume directory on a host: computed here, never taken from a user."""
        return f"{host.volume_root.rstrip('/')}/{self.slug}"

    def release_path(self, host: Host, code_number: int) -> str:
        """Where the files of a release (by the number of the release that brought them) are."""
        return f"{self.volume_path(host)}/releases/{code_number}"


def archive_path(instance: Release, filename: str) -> str:
    return f"releases/{instance.app.slug}/{instance.number}-{instance.sha256[:12]}.tar"


class Release(models.Model):
    """Everything that makes an instance of the app: its files and its configuration, numbered.

    On a host the files are an immutable directory, `<volume>/releases/<code_number>`, bound
    read-only into the container; what the app must keep across releases lives in
    `<volume>/state`, bound read-write. A release that changed only the configuration (an env
    edit, a base image roll) or restored an older one uses the files of an earlier release
    (`code_number`), so nothing is copied again."""

    class Source(models.TextChoices):
        ARCHIVE = "archive", "uploaded archive"
        EMPTY = "empty", "no files"
        HOST = "host", "moved from a VM onto a host"
        VOLUME = "volume", "the app's volume, written in place (before releases)"

    CONFIG_FIELDS = (
        "base_image",
        "command",
        "port",
        "env",
        "secrets",
        "workdir",
        "volume_mount",
        "state_paths",
        "health_check",
        "health_path",
        "health_timeout",
    )

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="releases")
    number = models.PositiveIntegerField()
    # The configuration, as the app had it when the release was made.
    base_image = models.ForeignKey(BaseImage, on_delete=models.PROTECT, related_name="releases")
    command = models.JSONField(default=list, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    env = models.JSONField(default=dict, blank=True)
    # Sealed, as the app's: a rollback brings back the values the release ran with.
    secrets = models.JSONField(default=dict, blank=True, validators=[validate_sealed])
    workdir = models.CharField(max_length=200, blank=True)
    volume_mount = models.CharField(max_length=200, blank=True)
    state_paths = models.JSONField(default=list, blank=True)
    health_check = models.CharField(max_length=10, choices=HealthCheck.choices, default=HealthCheck.TCP)
    health_path = models.CharField(max_length=200, default="/")
    health_timeout = models.PositiveIntegerField(default=30)
    # The files: of this release (code_number == number) or of an earlier one.
    code_number = models.PositiveIntegerField()
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.EMPTY)
    archive = models.FileField(upload_to=archive_path, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True, help_text="Bytes of the archive.")
    files = models.PositiveIntegerField(null=True, blank=True, help_text="Regular files in the archive.")
    # For files moved from a VM: the host they were first put on; others copy them from there.
    home = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    note = models.CharField(max_length=500, blank=True)
    # What changed from the release before, in words (never an env value: they may be secret).
    changes = models.JSONField(default=list, blank=True)
    restored_from = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # Its files were removed from the hosts and the portal's storage (retention): it can no
    # longer be deployed or rolled back to; the row stays as history.
    pruned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["app", "number"], name="one_release_per_number")]

    def __str__(self) -> str:
        return f"{self.app.slug} release {self.number}"

    @property
    def kept(self) -> bool:
        return self.pruned_at is None

    @property
    def in_volume(self) -> bool:
        return self.source == self.Source.VOLUME


def upload_path(instance: VolumeUpload, filename: str) -> str:
    return f"uploads/{instance.app.slug}/{instance.sha256}.tar"


class VolumeUpload(models.Model):
    """A tarball of files put into the app's volume on every host that runs it."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="uploads")
    file = models.FileField(upload_to=upload_path)
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    files = models.PositiveIntegerField(default=0, help_text="Regular files in the tarball.")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        get_latest_by = "created_at"

    def __str__(self) -> str:
        return f"{self.app.slug} {self.sha256[:12]}"


class RetainedVolume(models.Model):
    """An app volume left on a host, kept until ops purge it: its app was deleted, or no instance
    of the app runs on the host any more (a scale-down, or a move whose source could not be
    cleaned). Nothing left on a host's disk goes unlisted."""

    class Reason(models.TextChoices):
        DELETED = "deleted", "app deleted"
        LEFT = "left", "no instance here any more"

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="retained_volumes")
    app_slug = models.CharField(max_length=40)
    path = models.CharField(max_length=300)
    team = models.ForeignKey(Team, null=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.CharField(max_length=10, choices=Reason.choices, default=Reason.DELETED)
    deleted_at = models.DateTimeField(auto_now_add=True)
    purged_at = models.DateTimeField(null=True, blank=True)
    purge_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-deleted_at"]

    def __str__(self) -> str:
        return f"{self.app_slug} on {self.host}"
