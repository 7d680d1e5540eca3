#!/usr/bin/env bash
# All set-up for `make up` and `make test` on a fresh Debian machine, as root. Idempotent:
# installs only what is missing, starts only what is not running.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VAR=$ROOT/var
mkdir -p "$VAR/run" "$VAR/log"

say() { printf '\033[1m== %s\033[0m\n' "$*"; }

# --- Debian packages --------------------------------------------------------------------------
PACKAGES=(docker.io redis-server openssh-server postgresql busybox-static debootstrap chromium
          lxcfs iproute2 util-linux coreutils python3 python3-venv ca-certificates curl prometheus
          nginx slapd ldap-utils docker-registry
          # Base images from Debian's packages are built with mmdebstrap (apps/images/rootfs.py);
          # uidmap's newuidmap/newgidmap let it build as an unprivileged user, as production's
          # builder does (tests/builds/test_builder.py).
          mmdebstrap uidmap
          # python-ldap (under django-auth-ldap) is built from source: its headers and a compiler.
          libldap2-dev libsasl2-dev python3-dev gcc)
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing with apt: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Recipes' packages are checked against apt's lists (apps/images/packages.py): have some.
if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
  say "fetching apt's package lists"
  apt-get update -q
fi

# --- Python virtualenv with exact pins ----------------------------------------------------------
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt cli/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python packages"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
  # The slipway CLI, editable: .venv/bin/slipway runs the tree's code (docs/cli.md).
  .venv/bin/pip install -q -e ./cli
  echo "$want" > "$stamp"
fi

# --- Front-end packages from the npm registry ----------------------------------------------------
nstamp=node_modules/.lock.sha
nwant=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$nstamp" 2>/dev/null)" != "$nwant" ]; then
  say "installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$nwant" > "$nstamp"
fi

# --- Redis (the Celery broker) -------------------------------------------------------------------
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  say "starting redis on 127.0.0.1:6379"
  mkdir -p "$VAR/redis"
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save "" --appendonly no \
    --dir "$VAR/redis" --pidfile "$VAR/run/redis.pid" --logfile "$VAR/log/redis.log"
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

# --- PostgreSQL (CI runs the suite on it too) ----------------------------------------------------
if [ "${WITH_POSTGRES:-0}" = 1 ]; then
  ver=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
  if [ -z "$ver" ]; then echo "postgresql is installed but has no cluster" >&2; exit 1; fi
  if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
    say "starting PostgreSQL $ver"
    pg_ctlcluster "$ver" main start
  fi
  # A generated password, kept under var/ (never in git).
  [ -s "$VAR/pg-password" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$VAR/pg-password")
  pw=$(cat "$VAR/pg-password")
  if su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='slipway'\"" | grep -q 1; then
    su postgres -c "psql -qc \"ALTER ROLE slipway LOGIN CREATEDB PASSWORD '$pw'\""
  else
    su postgres -c "psql -qc \"CREATE ROLE slipway LOGIN CREATEDB PASSWORD '$pw'\""
  fi
  su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='slipway'\"" | grep -q 1 ||
    su postgres -c "createdb -O slipway slipway"
fi
