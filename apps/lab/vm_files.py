"""What the lab's legacy VM is made of, as text: its boot and init scripts, and its app "notes"
(a small Python web server with its config, stylesheet, cron entry and init script)."""

# Runs outside the VM's root, as PID 1 of its new namespaces: mounts what a kernel and an
# initramfs would, then becomes the VM's init. $1 is the root filesystem, $2 the hostname.
BOOT_SCRIPT = r"""#!/bin/sh
set -eu
R=$1
echo "$2" > /proc/sys/kernel/hostname
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
# The kernel's settings are not the VM's to change.
mount --bind "$R/proc/sys" "$R/proc/sys"
mount -o remount,bind,ro "$R/proc/sys"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t tmpfs -o mode=0755,nosuid,nodev,size=64m tmpfs "$R/run"
mount -t tmpfs -o mode=0755,nosuid,size=4m tmpfs "$R/dev"
for node in null zero full random urandom tty; do
    : > "$R/dev/$node"
    mount --bind "/dev/$node" "$R/dev/$node"
done
mkdir -m 0755 "$R/dev/pts"
mkdir -m 1777 "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5,nosuid,noexec devpts "$R/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
ln -s pts/ptmx "$R/dev/ptmx"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
exec chroot "$R" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 /sbin/lab-init
"""

LAB_INIT = r"""#!/bin/sh
# PID 1 of this VM (written by the Slipway lab): starts the services of runlevel 2 that this
# VM has, reaps orphans, and on SIGTERM stops the services and exits.
mkdir -p /run/sshd /run/lock /var/log
chmod 0755 /run/sshd

shutdown() {
    echo "lab-init: stopping"
    /etc/init.d/notes stop
    /etc/init.d/cron stop
    /etc/init.d/ssh stop
    exit 0
}
trap shutdown TERM INT

echo "lab-init: $(hostname) booting"
/etc/init.d/ssh start
/etc/init.d/cron start
/etc/init.d/notes start
echo "lab-init: up"
while :; do
    # `wait` returns on a signal, and reaps whatever was reparented to PID 1 meanwhile.
    sleep 3600 &
    wait $!
done
"""

NOTES_INIT = r"""#!/bin/sh
### BEGIN INIT INFO
# Provides:          notes
# Required-Start:    $network $remote_fs
# Required-Stop:     $network $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: Team notes web app
### END INIT INFO

PATH=/usr/sbin:/usr/bin:/sbin:/bin
NAME=notes
APP_DIR=/srv/notes
PORT=@PORT@
PIDFILE=/run/notes.pid
LOGFILE=/var/log/notes.log

running() {
    [ -s "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    [ -d "/proc/$pid" ] && grep -q server.py "/proc/$pid/cmdline" 2>/dev/null
}

start() {
    if running; then
        echo "$NAME is already running (pid $(cat "$PIDFILE"))"
        return 0
    fi
    echo "Starting $NAME on port $PORT"
    export NOTES_TITLE="Ops team notes"
    export NOTES_DATA=/srv/notes/data
    cd "$APP_DIR" || return 1
    setsid python3 "$APP_DIR/server.py" --port "$PORT" >>"$LOGFILE" 2>&1 </dev/null &
    echo $! > "$PIDFILE"
}

stop() {
    if ! running; then
        echo "$NAME is not running"
        rm -f "$PIDFILE"
        return 0
    fi
    pid=$(cat "$PIDFILE")
    echo "Stopping $NAME (pid $pid)"
    kill "$pid"
    i=0
    while [ -d "/proc/$pid" ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    [ -d "/proc/$pid" ] && kill -9 "$pid"
    rm -f "$PIDFILE"
}

case "$1" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    status)
        if running; then
            echo "$NAME is running (pid $(cat "$PIDFILE"))"
            exit 0
        fi
        echo "$NAME is not running"
        exit 3
        ;;
    *)
        echo "Usage: $0 {start|stop|status|restart}" >&2
        exit 2
        ;;
esac
"""

NOTES_CRON = """# Temporary upload files older than a day are not worth keeping.
SHELL=/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin
17 3 * * * root find /srv/notes/data -name '*.tmp' -mtime +1 -delete
"""

NOTES_INI = """[notes]
greeting = Shared notes and files of the ops team. Please keep attachments small.
contact = ops@example.invalid

[server]
# Files in the data directory whose names start with a dot are never listed.
list_hidden = no
"""

NOTES_CSS = """body { font-family: sans-serif; margin: 2rem auto; max-width: 48rem; color: #222; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #c60; }
table { border-collapse: collapse; width: 100%; }
td { padding: 0.2rem 0.5rem; border-bottom: 1px solid #ddd; }
td.size { text-align: right; font-variant-numeric: tabular-nums; }
footer { margin-top: 2rem; font-size: 0.8rem; color: #666; }
"""

# Gratuitous ARP from inside the VM. (hostagent's garp finds an interface by its primary
# address only; the service address is a secondary one.)
GARP = """
import ipaddress, socket, struct, sys
iface, ip = sys.argv[1], ipaddress.IPv4Address(sys.argv[2]).packed
mac = bytes.fromhex(open(f"/sys/class/net/{iface}/address").read().strip().replace(":", ""))
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, ip, bytes(6), ip)
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
    sock.bind((iface, 0))
    for _ in range(3):
        sock.send(b"\\xff" * 6 + mac + struct.pack("!H", 0x0806) + arp)
"""

# Exit 1 if anyone answers ARP for the address within half a second, 0 if nobody does.
ARP_PROBE = """
import ipaddress, select, socket, struct, sys, time
iface, mac, ip = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), ipaddress.IPv4Address(sys.argv[3]).packed
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, bytes(4), bytes(6), ip)
with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
    sock.bind((iface, 0))
    sock.send(b"\\xff" * 6 + mac + struct.pack("!H", 0x0806) + arp)
    deadline = time.monotonic() + 0.5
    while (left := deadline - time.monotonic()) > 0:
        if select.select([sock], [], [], left)[0]:
            frame = sock.recv(64)
            if frame[20:22] == b"\\x00\\x02" and frame[28:32] == ip:
                sys.exit(1)
"""

NOTES_SERVER = r'''#!/usr/bin/env python3
"""notes: the ops team's notes and files, served over HTTP (python3 standard library only)."""

import argparse
import configparser
import html
import mimetypes
import os
import shutil
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote

APP_DIR = Path(__file__).resolve().parent
CONFIG = configparser.ConfigParser()
CONFIG.read(APP_DIR / "notes.ini")
TITLE = os.environ.get("NOTES_TITLE", "Notes")
DATA = Path(os.environ.get("NOTES_DATA", APP_DIR / "data"))
STATIC = APP_DIR / "static"


def listed(directory):
    hidden = CONFIG.getboolean("server", "list_hidden", fallback=False)
    return sorted(p for p in directory.iterdir() if p.is_file() and (hidden or not p.name.startswith(".")))


class Handler(BaseHTTPRequestHandler):
    server_version = "notes/1.4"

    def do_GET(self):
        self.serve(body=True)

    def do_HEAD(self):
        self.serve(body=False)

    def serve(self, body):
        path = unquote(self.path.split("?", 1)[0])
        if path == "/healthz":
            return self.send(200, "text/plain; charset=utf-8", b"ok\n", body)
        if path == "/":
            return self.send(200, "text/html; charset=utf-8", self.index().encode(), body)
        for prefix, root in (("/data/", DATA), ("/static/", STATIC)):
            if path.startswith(prefix):
                return self.send_file(root, path[len(prefix):], body)
        return self.send(404, "text/plain; charset=utf-8", b"not found\n", body)

    def index(self):
        rows = "\n".join(
            f'<tr><td><a href="/data/{quote(p.name)}">{html.escape(p.name)}</a></td>'
            f'<td class="size">{p.stat().st_size}</td></tr>'
            for p in listed(DATA)
        )
        greeting = html.escape(CONFIG.get("notes", "greeting", fallback=""))
        contact = html.escape(CONFIG.get("notes", "contact", fallback=""))
        title = html.escape(TITLE)
        return (
            "<!doctype html>\n<html><head><meta charset='utf-8'>"
            f"<title>{title}</title><link rel='stylesheet' href='/static/style.css'></head>\n"
            f"<body><h1>{title}</h1>\n<p class='greeting'>{greeting}</p>\n"
            f"<table>\n{rows}\n</table>\n<footer>Questions: {contact}</footer></body></html>\n"
        )

    def send_file(self, root, name, body):
        target = root / name
        if not name or "/" in name or name.startswith(".") or not target.is_file():
            return self.send(404, "text/plain; charset=utf-8", b"not found\n", body)
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        with open(target, "rb") as handle:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(os.fstat(handle.fileno()).st_size))
            self.end_headers()
            if body:
                shutil.copyfileobj(handle, self.wfile)

    def send(self, status, kind, data, body):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


def main():
    parser = argparse.ArgumentParser(description="the notes web app")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--bind", default="0.0.0.0")
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True
    print(f"notes: serving {DATA} on {args.bind}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
'''
