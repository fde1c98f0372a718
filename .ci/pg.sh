#!/usr/bin/env bash
# A throw-away PostgreSQL 15 for the shared-ledger tests, used by .ci/run and by people alike:
#   .ci/pg.sh start [DIR]   start one on 127.0.0.1 and a free port; prints its URL (DIR/url)
#   .ci/pg.sh stop  [DIR]   stop it and remove DIR
# initdb and pg_ctl refuse root: as root they run as the `postgres` user, in DIR, which it owns.
# The server is for tests only: trust authentication on loopback, fsync off.
set -euo pipefail
cmd="${1:?usage: .ci/pg.sh start|stop [DIR]}"
dir="${2:-${DEVIN_FLEET_PG_DIR:-/tmp/devin-fleet-pg-$(id -u)}}"
BIN=/usr/lib/postgresql/15/bin

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
    if [ ! -x "$BIN/initdb" ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    if [ -f "$dir/url" ] && as_pg "$BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        cat "$dir/url"  # already running
        exit 0
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_pg "$BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
    as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start -o \
        "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" >/dev/null
    as_pg "$BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres fleet
    echo "postgresql://postgres@127.0.0.1:$port/fleet" | as_pg tee "$dir/url"
    ;;
stop)
    if [ -d "$dir/data" ]; then
        as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: .ci/pg.sh start|stop [DIR]" >&2
    exit 64
    ;;
esac
