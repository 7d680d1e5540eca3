"""Slipway settings. Everything comes from the environment; the defaults run out of the box
on SQLite with a local Redis."""

from __future__ import annotations

import ipaddress
import re
import secrets
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet

from portal import signin
from portal.env import envbool, envfloat, envint, envlist, envstr

BASE_DIR = Path(__file__).resolve().parent.parent
# Generated, machine-local state (SQLite file, the portal's SSH key, pidfiles, logs).
VAR_DIR = Path(envstr("SLIPWAY_VAR_DIR", str(BASE_DIR / "var")))


def _secret_key() -> str:
    configured = envstr("SECRET_KEY", "")
    if configured:
        return configured
    # Out of the box: a random key kept under var/, so sessions survive restarts.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()


def _secrets_keys() -> list[str]:
    """Fernet keys for apps' secret variables, newest first: the first seals, any opens
    (docs/operations.md, rotating). Out of the box one key is made under var/; in production it
    comes from the environment (SECRETS_KEYS or SECRETS_KEYS_FILE) and is backed up with the
    database, which cannot be read without it."""
    configured = envstr("SECRETS_KEYS", "")
    if configured:
        keys = [key.strip() for key in configured.split(",") if key.strip()]
    else:
        path = VAR_DIR / "secrets_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Fernet.generate_key().decode())
            path.chmod(0o600)
        keys = [path.read_text().strip()]
    for number, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise ValueError(
                f"SECRETS_KEYS: key {number} of {len(keys)} is not a Fernet key (44 characters of "
                "url-safe base64; `manage.py rotate_secrets --new-key` prints one)"
            ) from None
    return keys


SECRETS_KEYS = _secrets_keys()
DEBUG = envbool("DEBUG", False)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = envstr("SITE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    # First, so its runserver (ASGI, websockets included) replaces Django's.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # Only for migration accounts.0003, which turns its old single tokens into named ones
    # (apps.accounts.tokens) and must still read its table on a database made before them.
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our own static files
    "django_htmx",
    "template_partials",
    "channels",
    "apps.audit",
    "apps.accounts",
    "apps.hosts",
    "apps.applications",
    "apps.instances",
    "apps.network",
    "apps.metrics",
    "apps.resources",
    "apps.console",
    "apps.relocations",
    "apps.images",
    "apps.fleet",
    "apps.events",
    "apps.alerts",
    "apps.lab",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Where each change comes from (page, API, CLI, admin), for the audit trail.
    "apps.audit.context.AuditOriginMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.resources.context_processors.approvals",
                "apps.alerts.context_processors.alerts",
            ],
            "builtins": ["portal.display"],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL", f"sqlite:///{VAR_DIR / 'slipway.sqlite3'}"),
        conn_max_age=envint("DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout: web, worker and beat share one SQLite file.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- Company sign-in (docs/sign-in.md). The directory is asked first when LDAP_SERVER_URI is set;
# local accounts (ModelBackend: the demo users, a break-glass admin) always work. OIDC adds a
# "Sign in with ..." button when OIDC_RP_CLIENT_ID is set. Each maps groups to ops and team roles.
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
# The group mappings (portal.signin.GroupMap); they grant nothing while their sign-in is off.
SIGNIN_LDAP_GROUPS = SIGNIN_OIDC_GROUPS = signin.NOTHING
LDAP_SERVER_URI = envstr("LDAP_SERVER_URI", "")
# An open terminal of a directory user rereads their groups at each recheck; while the directory
# cannot be reached it keeps the access last read for this long, then closes.
LDAP_OUTAGE_GRACE = envfloat("LDAP_OUTAGE_GRACE", 300.0)
if LDAP_SERVER_URI:
    AUTHENTICATION_BACKENDS.insert(0, "apps.accounts.directory.DirectoryBackend")
    # AUTH_LDAP_* (django-auth-ldap's settings) and SIGNIN_LDAP_GROUPS (the group mapping).
    globals().update(
        signin.ldap_settings(
            server_uri=LDAP_SERVER_URI,
            bind_dn=envstr("LDAP_BIND_DN", ""),
            bind_password=envstr("LDAP_BIND_PASSWORD", ""),
            user_search_base=envstr("LDAP_USER_SEARCH_BASE", ""),
            user_filter=envstr("LDAP_USER_FILTER", "(uid=%(user)s)"),
            group_search_base=envstr("LDAP_GROUP_SEARCH_BASE", ""),
            group_type=envstr("LDAP_GROUP_TYPE", "groupOfNames"),
            start_tls=envbool("LDAP_START_TLS", False),
            ca_file=envstr("LDAP_TLS_CA_FILE", ""),
            timeout=envfloat("LDAP_TIMEOUT", 5.0),
            ops_groups=envstr("LDAP_OPS_GROUPS", ""),
            team_groups=envstr("LDAP_TEAM_GROUPS", ""),
        )
    )
    if LDAP_OUTAGE_GRACE < 0:
        raise ValueError(f"LDAP_OUTAGE_GRACE={LDAP_OUTAGE_GRACE}: 0 or more seconds")
OIDC_RP_CLIENT_ID = envstr("OIDC_RP_CLIENT_ID", "")
# The sign-in button says "Sign in with <this>".
OIDC_PROVIDER_NAME = envstr("OIDC_PROVIDER_NAME", "single sign-on")
# The claims that name the user and list their groups.
OIDC_USERNAME_CLAIM = envstr("OIDC_USERNAME_CLAIM", "preferred_username")
OIDC_GROUPS_CLAIM = envstr("OIDC_GROUPS_CLAIM", "groups")
if OIDC_RP_CLIENT_ID:
    AUTHENTICATION_BACKENDS.append("apps.accounts.oidc.OIDCBackend")
    # OIDC_* (mozilla-django-oidc's settings) and SIGNIN_OIDC_GROUPS (the group mapping).
    globals().update(
        signin.oidc_settings(
            client_id=OIDC_RP_CLIENT_ID,
            client_secret=envstr("OIDC_RP_CLIENT_SECRET", ""),
            authorization_endpoint=envstr("OIDC_OP_AUTHORIZATION_ENDPOINT", ""),
            token_endpoint=envstr("OIDC_OP_TOKEN_ENDPOINT", ""),
            user_endpoint=envstr("OIDC_OP_USER_ENDPOINT", ""),
            jwks_endpoint=envstr("OIDC_OP_JWKS_ENDPOINT", ""),
            sign_algo=envstr("OIDC_RP_SIGN_ALGO", "RS256"),
            scopes=envstr("OIDC_RP_SCOPES", "openid email profile"),
            username_claim=OIDC_USERNAME_CLAIM,
            groups_claim=OIDC_GROUPS_CLAIM,
            ops_groups=envstr("OIDC_OPS_GROUPS", ""),
            team_groups=envstr("OIDC_TEAM_GROUPS", ""),
        )
    )

LANGUAGE_CODE = "en-us"
FORMAT_MODULE_PATH = ["portal.formats"]  # one date format everywhere, with its zone
TIME_ZONE = envstr("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
# collectstatic fills it for production; WhiteNoise serves from the finders until then.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS: list[Path | tuple[str, Path]] = [BASE_DIR / "static"]
# Front-end packages come from the npm registry (package.json) and are served from node_modules.
NODE_MODULES_DIR = BASE_DIR / "node_modules"
if NODE_MODULES_DIR.exists():
    STATICFILES_DIRS.append(("vendor", NODE_MODULES_DIR))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- Transport security. Off by default: the lab serves plain http on 127.0.0.1. In production
# SLIPWAY_HTTPS=1 (the site is reached only over https) turns on the redirect, secure cookies and
# HSTS; each can still be set on its own. `manage.py check --deploy` is clean with it.
HTTPS = envbool("SLIPWAY_HTTPS", False)
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", HTTPS)
# Probes (scripts/services.sh, a load balancer) may ask over plain http.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", HTTPS)
# An hour until ops have seen it work; browsers then refuse plain http for that long (raise it).
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
# Asks browsers' preload lists for the domain: hard to undo, so only when ops say so.
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", False)
# Behind a TLS-terminating proxy: the header it sets to "https" (e.g. X-Forwarded-Proto). Only
# if the proxy always sets or strips it, or a client could claim https.
_proxy_ssl_header = envstr("SECURE_PROXY_SSL_HEADER", "")
if _proxy_ssl_header:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
# Behind our own proxy, which appends the client's address to X-Forwarded-For: the audit trail
# records that address instead of the proxy's (only then: a client can send the header itself).
USE_X_FORWARDED_FOR = envbool("USE_X_FORWARDED_FOR", False)
# Stated rather than left to Django's defaults: nothing here is framed, and no page needs to send
# its address elsewhere or keep a handle on a window it opened.
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
# An htmx request whose token went stale gets a short "reload" notice rather than a 403 it hides.
CSRF_FAILURE_VIEW = "portal.csrf.csrf_failure"
# A check ops have decided against (e.g. security.W021 when they do not preload HSTS).
SILENCED_SYSTEM_CHECKS = envlist("SILENCED_SYSTEM_CHECKS", [])

EMAIL_BACKEND = envstr("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
# With EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend: the mail server.
EMAIL_HOST = envstr("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "slipway@localhost")
# A mail server that hangs must not hang the request that decided something.
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", 10)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Named tokens with a scope and an expiry: `Authorization: Token <key>` or `Bearer <key>`.
        "apps.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # DRF's limit/offset, bounded, with a 400 for values out of range (portal.api).
    "DEFAULT_PAGINATION_CLASS": "portal.api.Pagination",
    "PAGE_SIZE": 100,
}
# API tokens (apps/accounts/tokens.py): the longest life a new one may have, and how long the
# single tokens from before named tokens keep working after the upgrade that converts them.
API_TOKEN_MAX_DAYS = envint("API_TOKEN_MAX_DAYS", 365)
LEGACY_TOKEN_DAYS = envint("LEGACY_TOKEN_DAYS", 90)
# Below a day no token could be made (or an old one would die at the upgrade); past ten years is
# no expiry at all, and far enough out a date cannot be written.
for _name, _days in (("API_TOKEN_MAX_DAYS", API_TOKEN_MAX_DAYS), ("LEGACY_TOKEN_DAYS", LEGACY_TOKEN_DAYS)):
    if not 1 <= _days <= 3650:
        raise ValueError(f"{_name}={_days}: a whole number of days from 1 to 3650 (ten years)")
SPECTACULAR_SETTINGS = {
    "TITLE": "Slipway API",
    "DESCRIPTION": "Self-service portal for a private Docker fleet.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the portal's static files, never a CDN: fleets often have no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "kind": each its own name in the schema.
    "ENUM_NAME_OVERRIDES": {
        "OperationKindEnum": "apps.instances.models.Operation.Kind",
        "ExecSessionKindEnum": "apps.console.models.ExecSession.Kind",
        "AlertKindEnum": "apps.alerts.models.Kind",
    },
}

# --- Celery (Redis broker). The database row is the job record; tasks take ids only. ---
REDIS_URL = envstr("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A submit must not hang when Redis is down: fail fast, the row is already saved.
CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 5}
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.5}
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
# Exactly one beat sends the periodic tasks: the one holding a lock in Redis, which expires this
# many seconds after its holder stops renewing it (portal/beat.py).
CELERY_BEAT_SCHEDULER = "portal.beat:SingleBeatScheduler"
BEAT_LOCK_TTL = envfloat("BEAT_LOCK_TTL", 60.0)
if not 1 <= BEAT_LOCK_TTL <= 3600:
    raise ValueError(f"BEAT_LOCK_TTL={BEAT_LOCK_TTL}: from 1 to 3600 seconds")
HOST_PROBE_INTERVAL = envfloat("HOST_PROBE_INTERVAL", 30.0)

# --- Hosts and transports ---
# The portal's own SSH identity: generated on first use, never the user's ~/.ssh.
SSH_KEY_PATH = Path(envstr("SLIPWAY_SSH_KEY", str(VAR_DIR / "ssh" / "id_ed25519")))
# Where the portal installs hostagent on every host (apps/hosts/agent.py).
HOSTAGENT_ROOT = envstr("HOSTAGENT_ROOT", "/opt/slipway/agent")
SSH_CONNECT_TIMEOUT = envfloat("SSH_CONNECT_TIMEOUT", 5.0)
SSH_BANNER_TIMEOUT = envfloat("SSH_BANNER_TIMEOUT", 5.0)
SSH_AUTH_TIMEOUT = envfloat("SSH_AUTH_TIMEOUT", 5.0)
SSH_COMMAND_TIMEOUT = envfloat("SSH_COMMAND_TIMEOUT", 30.0)
SSH_MAX_OUTPUT = envint("SSH_MAX_OUTPUT", 1024 * 1024)
DOCKER_API_VERSION = envstr("DOCKER_API_VERSION", "1.41")
DOCKER_TIMEOUT = envfloat("DOCKER_TIMEOUT", 60.0)
# Default directory under which each app's volume lives on a host.
HOST_VOLUME_ROOT = envstr("HOST_VOLUME_ROOT", "/srv/slipway/volumes")

# --- Apps and instances ---
# Where the app's volume is bound inside every instance.
APP_VOLUME_MOUNT = envstr("APP_VOLUME_MOUNT", "/srv/app")
# Where the app's persistent directory (what it writes that must survive deploys) is bound.
APP_STATE_MOUNT = envstr("APP_STATE_MOUNT", "/srv/data")
# Releases whose files stay on the hosts and in the portal's storage, per app: the newest N,
# and always the one running and the one before it. Older ones are pruned after a deploy.
RELEASES_KEEP = envint("RELEASES_KEEP", 5)
if RELEASES_KEEP < 2:
    raise ValueError(
        f"RELEASES_KEEP={RELEASES_KEEP}: keep at least 2 (the running release and the one before)"
    )
# A deploy recreates this many instances at a time unless it is given a batch size.
DEPLOY_BATCH = envint("DEPLOY_BATCH", 1)
MIN_MEMORY_MB = envint("MIN_MEMORY_MB", 6)  # Docker refuses less than 6 MiB
MAX_INSTANCES_PER_APP = envint("MAX_INSTANCES_PER_APP", 50)
# CPU reservations may exceed a host's cores by this factor (memory is never overcommitted).
CPU_OVERCOMMIT = envfloat("CPU_OVERCOMMIT", 1.0)
RECONCILE_INTERVAL = envfloat("RECONCILE_INTERVAL", 30.0)
# A queued operation whose task never reached a worker (broker down) is sent again after this.
OPERATION_REQUEUE_AFTER = envfloat("OPERATION_REQUEUE_AFTER", 30.0)
# An operation still "running" this long lost its worker (killed, machine rebooted): run it again.
OPERATION_STALE_AFTER = envfloat("OPERATION_STALE_AFTER", 900.0)
# A worker touches its operation this often while it runs it; one silent for
# OPERATION_HEARTBEAT_LOST lost its worker (SIGKILL, OOM, reboot) and runs again at once.
OPERATION_HEARTBEAT = envfloat("OPERATION_HEARTBEAT", 5.0)
OPERATION_HEARTBEAT_LOST = envfloat("OPERATION_HEARTBEAT_LOST", 45.0)
# Parallel Docker calls per operation (scale +10 across hosts).
OPERATION_PARALLELISM = envint("OPERATION_PARALLELISM", 10)
# Bounds every container gets, whatever its host's daemon.json says: its processes (a fork bomb
# inside an app must not take the host down) and its log files (Docker's json-file driver,
# rotated: an app printing without end cannot fill the host's disk).
CONTAINER_PIDS_LIMIT = envint("CONTAINER_PIDS_LIMIT", 1024)
CONTAINER_LOG_MAX_SIZE = envstr("CONTAINER_LOG_MAX_SIZE", "10m")
CONTAINER_LOG_MAX_FILE = envint("CONTAINER_LOG_MAX_FILE", 3)
# Instance logs: lines shown or sent when nobody says how many, the most one request may ask
# for (a download takes everything), and how much of one line a page shows.
LOG_TAIL_DEFAULT = envint("LOG_TAIL_DEFAULT", 200)
LOG_TAIL_MAX = envint("LOG_TAIL_MAX", 10000)
LOG_DISPLAY_LINE_MAX = envint("LOG_DISPLAY_LINE_MAX", 4096)
# A followed log: lines wait for the browser in a backlog of at most this many (past it, the
# oldest go and the browser is told how many), sent together every LOG_FOLLOW_INTERVAL seconds.
LOG_FOLLOW_BACKLOG = envint("LOG_FOLLOW_BACKLOG", 5000)
LOG_FOLLOW_INTERVAL = envfloat("LOG_FOLLOW_INTERVAL", 0.1)
# Container events (apps.events): each host's Docker event stream is read by `manage.py
# watch_events` in windows of EVENTS_WINDOW seconds. A death keeps the last EVENTS_KEEP_LINES
# lines the app printed, as does a container the portal replaces; CRASH_LOOP_DEATHS deaths of
# one instance within CRASH_LOOP_WINDOW seconds are a crash loop.
EVENTS_WINDOW = envfloat("EVENTS_WINDOW", 60.0)
EVENTS_KEEP_LINES = envint("EVENTS_KEEP_LINES", 500)
CRASH_LOOP_DEATHS = envint("CRASH_LOOP_DEATHS", 3)
CRASH_LOOP_WINDOW = envint("CRASH_LOOP_WINDOW", 300)
# Events (with their kept lines), resolved alerts, read notifications and webhook deliveries are
# kept this many days.
EVENTS_RETENTION_DAYS = envint("EVENTS_RETENTION_DAYS", 30)
if not 5 <= EVENTS_WINDOW <= 3600:
    raise ValueError(f"EVENTS_WINDOW={EVENTS_WINDOW}: from 5 to 3600 seconds")
if not 0 <= EVENTS_KEEP_LINES <= LOG_TAIL_MAX:
    raise ValueError(f"EVENTS_KEEP_LINES={EVENTS_KEEP_LINES}: from 0 to LOG_TAIL_MAX ({LOG_TAIL_MAX})")
if EVENTS_RETENTION_DAYS < 1:
    raise ValueError(f"EVENTS_RETENTION_DAYS={EVENTS_RETENTION_DAYS}: at least 1 day")
if CRASH_LOOP_DEATHS < 2 or CRASH_LOOP_WINDOW < 10:
    raise ValueError("CRASH_LOOP_DEATHS is at least 2 and CRASH_LOOP_WINDOW at least 10 seconds")
# Prometheus scrapes /metrics with this bearer token; empty: the endpoint is off (404).
METRICS_TOKEN = envstr("METRICS_TOKEN", "")
# Alerts (apps.alerts): conditions that last (an instance down, memory near its limit...) are
# judged every ALERT_INTERVAL seconds; webhooks are POSTed with a deadline of
# ALERT_WEBHOOK_TIMEOUT seconds, tried ALERT_WEBHOOK_ATTEMPTS times in all, waiting
# ALERT_WEBHOOK_BACKOFF seconds after the first failure and twice as long after each next one.
# A webhook may not point at loopback, link-local or metadata addresses unless its network is
# in ALERT_WEBHOOK_ALLOW (comma-separated, e.g. 127.0.0.0/8 for a receiver on the portal's host).
ALERT_INTERVAL = envfloat("ALERT_INTERVAL", 15.0)
ALERT_WEBHOOK_TIMEOUT = envfloat("ALERT_WEBHOOK_TIMEOUT", 5.0)
ALERT_WEBHOOK_ATTEMPTS = envint("ALERT_WEBHOOK_ATTEMPTS", 6)
ALERT_WEBHOOK_BACKOFF = envfloat("ALERT_WEBHOOK_BACKOFF", 10.0)
ALERT_WEBHOOK_ALLOW = envlist("ALERT_WEBHOOK_ALLOW", [])
for _network in ALERT_WEBHOOK_ALLOW:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ValueError(
            f"ALERT_WEBHOOK_ALLOW: {_network!r} is not a network (10.0.0.0/8, 127.0.0.1/32)"
        ) from None
if not 1 <= ALERT_WEBHOOK_ATTEMPTS <= 20:
    raise ValueError(f"ALERT_WEBHOOK_ATTEMPTS={ALERT_WEBHOOK_ATTEMPTS}: from 1 to 20")
if ALERT_INTERVAL < 1 or ALERT_WEBHOOK_TIMEOUT <= 0 or ALERT_WEBHOOK_BACKOFF < 0:
    raise ValueError(
        "ALERT_INTERVAL is at least 1 s, ALERT_WEBHOOK_TIMEOUT above 0, ALERT_WEBHOOK_BACKOFF 0 or more"
    )
if CONTAINER_PIDS_LIMIT < 16:
    raise ValueError(
        f"CONTAINER_PIDS_LIMIT={CONTAINER_PIDS_LIMIT}: at least 16 (an app, its init and a shell)"
    )
if not re.fullmatch(r"[1-9][0-9]*[kmg]", CONTAINER_LOG_MAX_SIZE):
    raise ValueError(
        f"CONTAINER_LOG_MAX_SIZE={CONTAINER_LOG_MAX_SIZE!r}: a size as Docker takes it, a number with k, m or g (10m)"
    )
if not 1 <= CONTAINER_LOG_MAX_FILE <= 100:
    raise ValueError(f"CONTAINER_LOG_MAX_FILE={CONTAINER_LOG_MAX_FILE}: from 1 to 100 files")
# Before an address is used the first time, the instance's host asks the segment (ARP) whether
# anything answers for it; this long for the answers (sent twice; on a LAN they take well
# under a millisecond). The wait overlaps the container's creation.
ADDRESS_PROBE_WAIT = envfloat("ADDRESS_PROBE_WAIT", 0.03)
MAX_UPLOAD_MB = envint("MAX_UPLOAD_MB", 200)
MEDIA_ROOT = Path(envstr("MEDIA_ROOT", str(VAR_DIR / "media")))
# Base image versions the portal built from their recipes (docker load archives), and the root
# filesystems recipes ADD (shared with the lab, which builds the same ones).
IMAGE_ARCHIVE_DIR = Path(envstr("SLIPWAY_IMAGE_DIR", str(VAR_DIR / "images")))
# With a registry configured (the Registry page), publishing pushes there and hosts pull: this
# many hosts at once; the portal's own requests to the registry (the check at save time, each
# request of a push) are answered within REGISTRY_TIMEOUT.
REGISTRY_PULL_PARALLEL = envint("REGISTRY_PULL_PARALLEL", 8)
# Without a registry: how many hosts a published version is streamed to over SSH at once.
SSH_LOAD_PARALLEL = envint("SSH_LOAD_PARALLEL", 4)
REGISTRY_TIMEOUT = envfloat("REGISTRY_TIMEOUT", 30.0)
MEDIA_URL = "media/"
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# --- Resource requests ---
# Shrinking memory below an instance's working set plus this is refused.
RESIZE_MEMORY_MARGIN_MB = envint("RESIZE_MEMORY_MARGIN_MB", 16)

# --- Exec in running instances ---
EXEC_DEFAULT_TIMEOUT = envint("EXEC_DEFAULT_TIMEOUT", 30)  # seconds
EXEC_MAX_TIMEOUT = envint("EXEC_MAX_TIMEOUT", 600)
EXEC_MAX_OUTPUT = envint("EXEC_MAX_OUTPUT", 1024 * 1024)  # bytes kept; the rest is cut with a marker
EXEC_MAX_ARGV_BYTES = envint("EXEC_MAX_ARGV_BYTES", 64 * 1024)
EXEC_MAX_ARGS = envint("EXEC_MAX_ARGS", 512)
EXEC_RATE_PER_MINUTE = envint("EXEC_RATE_PER_MINUTE", 30)  # per user, commands and terminals
TERMINAL_IDLE_TIMEOUT = envint("TERMINAL_IDLE_TIMEOUT", 15 * 60)
TERMINAL_MAX_SESSION = envint("TERMINAL_MAX_SESSION", 4 * 3600)
# How often an open terminal checks that its user is still signed in and allowed.
TERMINAL_RECHECK = envfloat("TERMINAL_RECHECK", 3.0)

# --- Moving apps from VMs (relocations) ---
# A copy that moves no data for this long has lost its connection.
RELOCATION_STALL_TIMEOUT = envfloat("RELOCATION_STALL_TIMEOUT", 20.0)
# Bytes of file names and checksums a listing may return (about 150,000 files).
RELOCATION_MAX_LISTING = envint("RELOCATION_MAX_LISTING", 32 * 1024 * 1024)
# How long a new instance may take to answer on its port before the run rolls back.
RELOCATION_HEALTH_TIMEOUT = envfloat("RELOCATION_HEALTH_TIMEOUT", 60.0)
# Memory and CPU suggested from what the VM's app uses, times this.
RELOCATION_HEADROOM = envfloat("RELOCATION_HEADROOM", 1.5)

# --- Metrics (cgroup counters from hostagent stats) ---
METRICS_INTERVAL = envfloat("METRICS_INTERVAL", 10.0)  # seconds between sweeps
METRICS_HOST_TIMEOUT = envfloat("METRICS_HOST_TIMEOUT", 5.0)  # one host's sweep, at most
METRICS_ROLLUP_INTERVAL = envfloat("METRICS_ROLLUP_INTERVAL", 60.0)
METRICS_RAW_RETENTION = envint("METRICS_RAW_RETENTION", 24 * 3600)  # seconds
METRICS_MINUTE_RETENTION = envint("METRICS_MINUTE_RETENTION", 14 * 24 * 3600)
METRICS_HOUR_RETENTION = envint("METRICS_HOUR_RETENTION", 365 * 24 * 3600)

# --- The lab fleet: network namespaces on this machine (manage.py lab up) ---
LAB_SUBNET = envstr("LAB_SUBNET", "10.213.0.0/16")
LAB_HOSTS = envint("LAB_HOSTS", 2)
LAB_PREFIX = envstr("LAB_PREFIX", "slw")
LAB_STATE_DIR = Path(envstr("LAB_STATE_DIR", "/var/lib/slipway-lab"))
LAB_RUN_DIR = Path(envstr("LAB_RUN_DIR", "/run/slipway-lab"))
LAB_IMAGE_CACHE = Path(envstr("LAB_IMAGE_CACHE", "/var/cache/slipway"))
ROOTFS_CACHE = LAB_IMAGE_CACHE
# The lab's registry (Debian's docker-registry, TLS) listens on the bridge's portal address.
LAB_REGISTRY_PORT = envint("LAB_REGISTRY_PORT", 5443)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {"paramiko": {"level": "WARNING"}},
}
