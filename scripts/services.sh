#!/usr/bin/env bash
# Start or stop the portal's own processes (web, Celery worker, beat, the event watcher), tracked by pidfiles
# under var/run. Only processes whose pidfile this script wrote are ever signalled.
set -euo pipefail
cd "$(dirname "$0")/.."
VAR=$PWD/var
RUN=$VAR/run
LOG=$VAR/log
mkdir -p "$RUN" "$LOG"
BIN=$PWD/.venv/bin
PORT=${PORT:-8000}
WORKER_NICE=${WORKER_NICE:-10}

alive() {  # alive NAME: the pidfile's process exists and is one of ours (runs from this venv)
  local pid
  pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "$PWD/.venv"
}

start() {
  if ! alive web; then
    # daphne serves the ASGI application: pages, streamed exec output and the terminal's
    # websockets. It does not daemonize: it runs in a session of its own in the background
    # (setsid execs in place here, so $! is daphne's pid). Terminals end by their own limits
    # (TERMINAL_MAX_SESSION), not daphne's 24 h websocket timeout.
    setsid "$BIN/daphne" -b 127.0.0.1 -p "$PORT" --websocket_timeout -1 --access-log "$LOG/web.log" \
      portal.asgi:application >>"$LOG/web.log" 2>&1 </dev/null &
    echo $! >"$RUN/web.pid"
  fi
  # Workers and beat run at a lower CPU priority than the web process: when a scale or a drain
  # keeps every worker busy, pages still get the CPU first (bench-scale: page_p95_under_load).
  # One worker takes both queues: Celery's default one and the image builds' (production runs a
  # builder of its own for those, deploy/slipway-builder.service).
  alive worker || nice -n "$WORKER_NICE" "$BIN/celery" -A portal worker --queues celery,builds --concurrency 4 \
    --loglevel INFO --pidfile "$RUN/worker.pid" --logfile "$LOG/worker.log" --detach
  alive beat || nice -n "$WORKER_NICE" "$BIN/celery" -A portal beat --loglevel INFO --schedule "$VAR/celerybeat-schedule" \
    --pidfile "$RUN/beat.pid" --logfile "$LOG/beat.log" --detach
  if ! alive events; then
    # Every host's container events as they happen (deaths, OOM kills, restarts): one process,
    # a thread per host (apps/events/watcher.py). A second one would only wait for its leases.
    setsid nice -n "$WORKER_NICE" "$BIN/python" manage.py watch_events >>"$LOG/events.log" 2>&1 </dev/null &
    echo $! >"$RUN/events.pid"
  fi
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "the web process did not answer on 127.0.0.1:$PORT; see $LOG/web.log" >&2
  return 1
}

stop() {
  for name in events beat worker web; do
    if alive "$name"; then
      pid=$(cat "$RUN/$name.pid")
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
      [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
  done
  # Redis, if set-up started it (its pidfile is ours); a system Redis is left alone.
  if [ -s "$RUN/redis.pid" ]; then
    pid=$(cat "$RUN/redis.pid")
    if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q redis-server; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/redis.pid"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
